#include "lb/provision/docker_api.h"

#include <curl/curl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "lb/log.h"

// The highest API version this client speaks, and the lowest engine it accepts (20.10 = 1.41).
static const int kApiMajor = 1;
static const int kApiMinor = 41;
static const long kPingTimeoutMs = 3000;
static const long kConnectTimeoutMs = 3000;

// One call: the baton handed to a threadpool thread. The loop thread fills it and lends it a CURL
// handle; between uv_queue_work and on_work_done only the worker touches it.
struct DockerCall {
  uv_work_t work;
  DockerApi* api = nullptr;
  CURL* curl = nullptr;
  std::string method;
  std::string url;
  std::string body;
  bool has_body = false;
  long timeout_ms = 0;
  DockerCallCb cb;
  DockerReply reply;
  char errbuf[CURL_ERROR_SIZE];
};

struct DockerApi {
  uv_loop_t* loop = nullptr;
  std::string socket_path;
  std::string version;             // "1.41"
  std::string base;                // "http://localhost/v1.41"
  curl_slist* headers = nullptr;   // read-only once built; shared by all workers
  std::vector<CURL*> idle;         // handles not lent to any call (loop thread only)
  std::deque<DockerCall*> queued;  // calls waiting for a free slot
  int inflight = 0;
  int max_inflight = 3;  // see kDockerMaxInflight
  uv_timer_t
      defer_timer;  // runs deferred functions; closing it is the last step of docker_api_close
  std::vector<std::function<void()>> deferred;
  std::vector<DockerStream*> streams;
  bool closing = false;
  bool finishing = false;
  std::function<void()> on_closed;
};

// A streaming transfer on its own thread. Fields under mu are shared with the thread; the rest
// belong to the loop thread (async, on_line, on_end, user_closed) or to the thread (curl, partial).
struct DockerStream {
  DockerApi* api = nullptr;
  uv_thread_t thread;
  uv_async_t async;  // the thread's wake-up of the loop; data = this
  uv_mutex_t mu;
  std::string url;
  DockerLineCb on_line;
  DockerStreamEndCb on_end;
  bool user_closed = false;
  bool joined = false;
  // thread only
  CURL* curl = nullptr;
  std::string partial;
  char errbuf[CURL_ERROR_SIZE];
  // under mu
  std::vector<std::string> lines;
  bool stop = false;
  bool ended = false;
  curl_socket_t fd = CURL_SOCKET_BAD;
  DockerReply end_reply;
};

static uv_once_t g_curl_once = UV_ONCE_INIT;
static CURLcode g_curl_init_rc = CURLE_OK;

static void curl_init_once(void) {
  g_curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

static size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// Options every transfer on this client gets. curl_easy_reset keeps the handle's live connections.
static void set_common(CURL* h, const DockerApi* api, char* errbuf) {
  curl_easy_reset(h);
  curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, api->socket_path.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  errbuf[0] = '\0';
}

static int errno_of(CURLcode rc) {
  if (rc == CURLE_OPERATION_TIMEDOUT) return -ETIMEDOUT;
  if (rc == CURLE_OUT_OF_MEMORY) return -ENOMEM;
  return -EIO;
}

// One sentence for a failed transfer. curl's own text for a unix socket speaks of "localhost port
// 80", so a failed connect is described by its errno instead.
static std::string transport_error(const DockerApi* api, CURL* h, CURLcode rc, const char* errbuf) {
  std::string s = "Docker engine at unix://" + api->socket_path + ": ";
  long os_errno = 0;
  curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
  if (rc == CURLE_COULDNT_CONNECT && os_errno != 0) {
    s += std::string("cannot connect: ") + strerror(static_cast<int>(os_errno));
  } else if (rc == CURLE_OPERATION_TIMEDOUT) {
    s += "no answer in time";
  } else {
    s += errbuf[0] ? errbuf : curl_easy_strerror(rc);
  }
  return s;
}

// ---- version negotiation ----

static bool parse_version(const std::string& v, int* major, int* minor) {
  return sscanf(v.c_str(), "%d.%d", major, minor) == 2;
}

static size_t on_ping_header(char* data, size_t size, size_t n, void* user) {
  size_t len = size * n;
  static const char kName[] = "api-version:";
  if (len > sizeof kName - 1 && strncasecmp(data, kName, sizeof kName - 1) == 0) {
    std::string v(data + sizeof kName - 1, len - (sizeof kName - 1));
    size_t b = v.find_first_not_of(" \t");
    size_t e = v.find_last_not_of(" \t\r\n");
    *static_cast<std::string*>(user) = b == std::string::npos ? "" : v.substr(b, e - b + 1);
  }
  return len;
}

int docker_socket_path(const char* arg, std::string* path, std::string* err) {
  if (arg && *arg) {
    *path = arg;
    return 0;
  }
  const char* host = getenv("DOCKER_HOST");
  if (host && *host) {
    if (strncmp(host, "unix://", 7) != 0) {
      *err = std::string("DOCKER_HOST=") + host +
             " is not supported: ringlb talks to the Docker engine only over a unix socket "
             "(unix://PATH)";
      return -EINVAL;
    }
    *path = host + 7;
    return 0;
  }
  *path = kDockerDefaultSocket;
  return 0;
}

// Checks the socket file before curl does, because curl's message for a missing or forbidden unix
// socket ("Couldn't connect to server") does not say which of the two it was.
static int check_socket_file(const std::string& path, std::string* err) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    *err = "no Docker engine socket at " + path +
           " (is dockerd running? in a container, mount it with -v "
           "/var/run/docker.sock:/var/run/docker.sock)";
    return -ENOENT;
  }
  if (!S_ISSOCK(st.st_mode)) {
    *err = path + " is not a unix socket, so it cannot be the Docker engine's";
    return -ENOTSOCK;
  }
  if (access(path.c_str(), R_OK | W_OK) != 0) {
    *err = "no permission to use the Docker engine socket " + path +
           " (run as root or as a member of its group, usually docker)";
    return -EACCES;
  }
  if (path.size() > 107) {
    *err = "the Docker socket path " + path +
           " is longer than the 107 bytes a unix socket path may have";
    return -ENAMETOOLONG;
  }
  return 0;
}

// libuv's threadpool size as libuv itself reads it (UV_THREADPOOL_SIZE, default 4, at most 1024).
static int threadpool_size() {
  const char* v = getenv("UV_THREADPOOL_SIZE");
  int n = v && *v ? atoi(v) : 4;
  if (n < 1) n = 1;
  return n > 1024 ? 1024 : n;
}

int docker_api_open(uv_loop_t* loop, const char* socket_path, DockerApi** out, std::string* err) {
  *out = nullptr;
  uv_once(&g_curl_once, curl_init_once);
  if (g_curl_init_rc != CURLE_OK) {
    *err = std::string("curl_global_init failed: ") + curl_easy_strerror(g_curl_init_rc);
    return -EIO;
  }
  std::string path;
  int rc = docker_socket_path(socket_path, &path, err);
  if (rc != 0) return rc;
  rc = check_socket_file(path, err);
  if (rc != 0) return rc;

  DockerApi* api = new DockerApi;
  api->loop = loop;
  api->socket_path = path;
  CURL* h = curl_easy_init();
  if (!h) {
    delete api;
    *err = "curl_easy_init failed";
    return -ENOMEM;
  }
  char errbuf[CURL_ERROR_SIZE];
  std::string body, server_version;
  set_common(h, api, errbuf);
  curl_easy_setopt(h, CURLOPT_URL, "http://localhost/_ping");
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, kPingTimeoutMs);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_ping_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &server_version);
  CURLcode crc = curl_easy_perform(h);
  long http = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
  int fail = 0;
  if (crc != CURLE_OK) {
    *err = "cannot reach the " + transport_error(api, h, crc, errbuf) + " (is dockerd running?)";
    fail = -EIO;
  } else if (http != 200) {
    *err = "the Docker engine at unix://" + path + " answered /_ping with HTTP " +
           std::to_string(http) + (body.empty() ? "" : ": " + body);
    fail = -EIO;
  } else {
    int major = kApiMajor, minor = kApiMinor;
    // An empty Api-Version header means "use the client's version" (as the Go client does).
    if (!server_version.empty() && !parse_version(server_version, &major, &minor)) {
      *err = "the Docker engine at unix://" + path + " sent an unreadable Api-Version \"" +
             server_version + "\"";
      fail = -EIO;
    } else if (major < kApiMajor || (major == kApiMajor && minor < kApiMinor)) {
      *err = "the Docker engine at unix://" + path + " speaks API " + server_version +
             ", but ringlb needs 1.41 or newer (Docker 20.10+)";
      fail = -ENOTSUP;
    } else if (major > kApiMajor || minor > kApiMinor) {
      major = kApiMajor;  // pin our own version; newer engines serve it
      minor = kApiMinor;
    }
    api->version = std::to_string(major) + "." + std::to_string(minor);
  }
  if (fail != 0) {
    curl_easy_cleanup(h);
    delete api;
    return fail;
  }
  api->base = "http://localhost/v" + api->version;
  api->headers = curl_slist_append(nullptr, "Content-Type: application/json");
  api->headers = curl_slist_append(api->headers, "Expect:");  // no 100-continue round trip
  api->idle.push_back(h);  // keeps the ping's connection for the first call
  int threads = threadpool_size();
  api->max_inflight = threads > 1 ? threads - 1 : 1;
  if (api->max_inflight > kDockerMaxInflight) api->max_inflight = kDockerMaxInflight;
  uv_timer_init(loop, &api->defer_timer);
  api->defer_timer.data = api;
  *out = api;
  LOG_INFO("docker: engine at unix://%s, API %s (engine speaks %s), up to %d calls at once",
           path.c_str(), api->version.c_str(),
           server_version.empty() ? "?" : server_version.c_str(), api->max_inflight);
  return 0;
}

int docker_api_max_inflight(const DockerApi* api) {
  return api->max_inflight;
}

const char* docker_api_version(const DockerApi* api) {
  return api->version.c_str();
}
const char* docker_api_socket(const DockerApi* api) {
  return api->socket_path.c_str();
}

// ---- calls ----

// Threadpool thread: performs the call with the handle lent to it. Touches only the baton.
static void on_work(uv_work_t* req) {
  DockerCall* call = static_cast<DockerCall*>(req->data);
  CURL* h = call->curl;
  set_common(h, call->api, call->errbuf);
  curl_easy_setopt(h, CURLOPT_URL, call->url.c_str());
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, call->timeout_ms);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &call->reply.body);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, call->api->headers);
  const std::string& m = call->method;
  if (m == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else if (m == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else {
    // POST, PUT, DELETE: a body when there is one, else Content-Length: 0 (DELETE sends none).
    if (call->has_body || m != "DELETE") {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body.c_str());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(call->body.size()));
    }
    if (m != "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m.c_str());
  }
  uint64_t t0 = uv_hrtime();
  CURLcode rc = curl_easy_perform(h);
  call->reply.elapsed_ms = (uv_hrtime() - t0) / 1e6;
  if (rc == CURLE_OK) {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &call->reply.http_status);
  } else {
    call->reply.status = errno_of(rc);
    call->reply.error = transport_error(call->api, h, rc, call->errbuf);
    call->reply.body.clear();
  }
}

static void dispatch(DockerApi* api);
static void maybe_finish_close(DockerApi* api);

// Loop thread: takes the handle back into the pool, delivers the result, then starts queued calls.
static void on_work_done(uv_work_t* req, int status) {
  DockerCall* call = static_cast<DockerCall*>(req->data);
  DockerApi* api = call->api;
  api->inflight--;
  api->idle.push_back(call->curl);
  call->curl = nullptr;
  if (status != 0) {  // UV_ECANCELED: never cancelled today, but keep the contract if that changes
    call->reply.status = -ECANCELED;
    call->reply.error = "the Docker call was cancelled";
  }
  call->cb(call->reply);
  delete call;
  dispatch(api);
  maybe_finish_close(api);
}

static void dispatch(DockerApi* api) {
  while (!api->closing && api->inflight < api->max_inflight && !api->queued.empty()) {
    CURL* h;
    if (!api->idle.empty()) {
      h = api->idle.back();
      api->idle.pop_back();
    } else {
      h = curl_easy_init();
    }
    DockerCall* call = api->queued.front();
    api->queued.pop_front();
    if (!h) {
      call->reply.status = -ENOMEM;
      call->reply.error = "curl_easy_init failed";
      docker_api_defer(api, [call] {
        call->cb(call->reply);
        delete call;
      });
      continue;
    }
    call->curl = h;
    call->work.data = call;
    api->inflight++;
    uv_queue_work(api->loop, &call->work, on_work, on_work_done);
  }
}

void docker_api_call(DockerApi* api, const char* method, const std::string& path,
                     const json_t* body, long timeout_ms, DockerCallCb cb) {
  DockerCall* call = new DockerCall;
  call->api = api;
  call->method = method;
  call->url = api->base + path;
  call->timeout_ms = timeout_ms;
  call->cb = std::move(cb);
  if (body) {
    char* s = json_dumps(body, JSON_COMPACT);
    if (s) {
      call->body = s;
      free(s);
    }
    call->has_body = true;
  }
  api->queued.push_back(call);
  dispatch(api);
}

static void on_defer_timer(uv_timer_t* t) {
  DockerApi* api = static_cast<DockerApi*>(t->data);
  std::vector<std::function<void()>> run;
  run.swap(api->deferred);
  for (auto& fn : run) fn();
}

void docker_api_defer(DockerApi* api, std::function<void()> fn) {
  api->deferred.push_back(std::move(fn));
  if (!api->finishing) uv_timer_start(&api->defer_timer, on_defer_timer, 0, 0);
}

// ---- close ----

static void on_api_closed(uv_handle_t* h) {
  DockerApi* api = static_cast<DockerApi*>(h->data);
  // Callbacks may queue more work; everything that arrives now is cancelled or run, until quiet.
  while (!api->queued.empty() || !api->deferred.empty()) {
    if (!api->queued.empty()) {
      DockerCall* call = api->queued.front();
      api->queued.pop_front();
      call->reply.status = -ECANCELED;
      call->reply.error = "the Docker client was closed before the call ran";
      call->cb(call->reply);
      delete call;
    } else {
      std::vector<std::function<void()>> run;
      run.swap(api->deferred);
      for (auto& fn : run) fn();
    }
  }
  for (CURL* c : api->idle) curl_easy_cleanup(c);
  curl_slist_free_all(api->headers);
  std::function<void()> done = std::move(api->on_closed);
  delete api;
  if (done) done();
}

static void maybe_finish_close(DockerApi* api) {
  if (!api->closing || api->finishing || api->inflight > 0 || !api->streams.empty()) return;
  api->finishing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&api->defer_timer), on_api_closed);
}

void docker_api_close(DockerApi* api, std::function<void()> on_closed) {
  api->closing = true;
  api->on_closed = std::move(on_closed);
  std::vector<DockerStream*> streams = api->streams;
  for (DockerStream* s : streams) docker_stream_close(s);
  maybe_finish_close(api);
}

// ---- helpers ----

json_t* docker_reply_json(const DockerReply& reply) {
  if (reply.status != 0 || reply.body.empty()) return nullptr;
  return json_loadb(reply.body.data(), reply.body.size(), 0, nullptr);
}

std::string docker_error_message(const DockerReply& reply) {
  if (reply.status != 0) return reply.error;
  std::string msg;
  json_t* j = docker_reply_json(reply);
  if (j) {
    const char* m = json_string_value(json_object_get(j, "message"));
    if (m) msg = m;
    json_decref(j);
  }
  if (msg.empty() && !reply.body.empty() && reply.body.size() < 1000 && reply.body[0] != '{') {
    msg = reply.body;
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
  }
  if (msg.empty()) msg = "HTTP " + std::to_string(reply.http_status);
  return msg;
}

std::string docker_url_escape(const std::string& s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// ---- streams ----

// Stream thread: the socket curl opens, recorded so docker_stream_close can shut it down.
static curl_socket_t on_stream_open_socket(void* user, curlsocktype, struct curl_sockaddr* addr) {
  DockerStream* s = static_cast<DockerStream*>(user);
  curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  uv_mutex_lock(&s->mu);
  if (s->stop && fd != CURL_SOCKET_BAD) {
    close(fd);
    fd = CURL_SOCKET_BAD;
  }
  s->fd = fd;
  uv_mutex_unlock(&s->mu);
  return fd;
}

static int on_stream_close_socket(void* user, curl_socket_t fd) {
  DockerStream* s = static_cast<DockerStream*>(user);
  uv_mutex_lock(&s->mu);
  if (s->fd == fd) s->fd = CURL_SOCKET_BAD;
  uv_mutex_unlock(&s->mu);
  return close(fd);
}

static size_t on_stream_data(char* data, size_t size, size_t n, void* user) {
  DockerStream* s = static_cast<DockerStream*>(user);
  s->partial.append(data, size * n);
  std::vector<std::string> complete;
  size_t start = 0, nl;
  while ((nl = s->partial.find('\n', start)) != std::string::npos) {
    if (nl > start) complete.emplace_back(s->partial, start, nl - start);
    start = nl + 1;
  }
  s->partial.erase(0, start);
  uv_mutex_lock(&s->mu);
  bool stop = s->stop;
  if (!stop && !complete.empty()) {
    for (auto& l : complete) s->lines.push_back(std::move(l));
  }
  uv_mutex_unlock(&s->mu);
  if (stop) return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  if (!complete.empty()) uv_async_send(&s->async);
  return size * n;
}

// Called by curl about once a second even on an idle stream: a second way out when stop is set.
static int on_stream_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  DockerStream* s = static_cast<DockerStream*>(user);
  uv_mutex_lock(&s->mu);
  bool stop = s->stop;
  uv_mutex_unlock(&s->mu);
  return stop ? 1 : 0;
}

static void stream_thread(void* arg) {
  DockerStream* s = static_cast<DockerStream*>(arg);
  DockerReply r;
  s->curl = curl_easy_init();
  if (!s->curl) {
    r.status = -ENOMEM;
    r.error = "curl_easy_init failed";
  } else {
    CURL* h = s->curl;
    set_common(h, s->api, s->errbuf);
    curl_easy_setopt(h, CURLOPT_URL, s->url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_stream_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_stream_open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, s);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_stream_close_socket);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, s);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_stream_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
    uint64_t t0 = uv_hrtime();
    CURLcode rc = curl_easy_perform(h);
    r.elapsed_ms = (uv_hrtime() - t0) / 1e6;
    if (rc == CURLE_OK) {
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.http_status);
      r.body = s->partial;  // an error answer has no trailing newline
    } else {
      r.status = errno_of(rc);
      r.error = transport_error(s->api, h, rc, s->errbuf);
    }
    curl_easy_cleanup(h);
    s->curl = nullptr;
  }
  uv_mutex_lock(&s->mu);
  s->ended = true;
  s->end_reply = std::move(r);
  uv_mutex_unlock(&s->mu);
  uv_async_send(&s->async);
}

static void on_stream_closed(uv_handle_t* h) {
  DockerStream* s = static_cast<DockerStream*>(h->data);
  DockerApi* api = s->api;
  DockerReply r = std::move(s->end_reply);
  if (s->user_closed) {
    r = DockerReply();
    r.status = -ECANCELED;
    r.error = "the Docker stream was closed";
  }
  DockerStreamEndCb on_end = std::move(s->on_end);
  for (size_t i = 0; i < api->streams.size(); i++) {
    if (api->streams[i] == s) {
      api->streams.erase(api->streams.begin() + i);
      break;
    }
  }
  uv_mutex_destroy(&s->mu);
  delete s;
  if (on_end) on_end(r);
  maybe_finish_close(api);
}

// Loop thread: delivers the lines the thread queued; once the thread has ended, joins it and
// closes.
static void on_stream_wakeup(uv_async_t* a) {
  DockerStream* s = static_cast<DockerStream*>(a->data);
  std::vector<std::string> lines;
  uv_mutex_lock(&s->mu);
  lines.swap(s->lines);
  bool ended = s->ended;
  uv_mutex_unlock(&s->mu);
  for (const std::string& l : lines) {
    if (s->user_closed) break;
    s->on_line(l);
  }
  if (ended && !s->joined) {
    s->joined = true;
    uv_thread_join(&s->thread);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->async), on_stream_closed);
  }
}

int docker_stream_open(DockerApi* api, const std::string& path, DockerLineCb on_line,
                       DockerStreamEndCb on_end, DockerStream** out) {
  *out = nullptr;
  if (api->closing) return -ECANCELED;
  DockerStream* s = new DockerStream;
  s->api = api;
  s->url = api->base + path;
  s->on_line = std::move(on_line);
  s->on_end = std::move(on_end);
  uv_mutex_init(&s->mu);
  uv_async_init(api->loop, &s->async, on_stream_wakeup);
  s->async.data = s;
  // A watch alone must not keep the loop alive; the owner closes it when done.
  uv_unref(reinterpret_cast<uv_handle_t*>(&s->async));
  int rc = uv_thread_create(&s->thread, stream_thread, s);
  if (rc != 0) {
    s->joined = true;
    s->on_end = nullptr;
    s->ended = true;
    api->streams.push_back(s);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->async), on_stream_closed);
    return rc;
  }
  api->streams.push_back(s);
  *out = s;
  return 0;
}

void docker_stream_close(DockerStream* s) {
  if (s->user_closed) return;
  s->user_closed = true;
  // Keep the loop running until the thread has ended and the stream is closed.
  uv_ref(reinterpret_cast<uv_handle_t*>(&s->async));
  uv_mutex_lock(&s->mu);
  s->stop = true;
  if (s->fd != CURL_SOCKET_BAD) shutdown(s->fd, SHUT_RDWR);
  uv_mutex_unlock(&s->mu);
}

// ---- synchronous calls (at start) ----

void docker_api_call_sync(DockerApi* api, const char* method, const std::string& path,
                          long timeout_ms, DockerReply* reply) {
  DockerCall call;
  call.api = api;
  call.method = method;
  call.url = api->base + path;
  call.timeout_ms = timeout_ms;
  if (!api->idle.empty()) {
    call.curl = api->idle.back();
    api->idle.pop_back();
  } else {
    call.curl = curl_easy_init();
  }
  if (!call.curl) {
    reply->status = -ENOMEM;
    reply->error = "curl_easy_init failed";
    return;
  }
  call.work.data = &call;
  on_work(&call.work);
  api->idle.push_back(call.curl);
  *reply = std::move(call.reply);
}

const char* docker_json_str(json_t* obj, const char* key) {
  const char* s = json_string_value(json_object_get(obj, key));
  return s ? s : "";
}

bool docker_parse_u32(const char* s, uint32_t max, uint32_t* out) {
  if (!s || !*s) return false;
  char* end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v > max) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}
