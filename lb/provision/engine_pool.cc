// engine_pool: what the docker and the swarm provisioner share (lb/provision/engine_pool.h has the
// contracts).
#include "lb/provision/engine_pool.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "lb/http/container_of.h"
#include "lb/log.h"

static const size_t kQuietMax = 512;  // ids whose end we caused, remembered
static const int kEventsRetryMinMs = 1000;
static const int kEventsRetryMaxMs = 30000;

// ---- names, ids, time ----

bool engine_valid_name(const std::string& n) {
  if (n.size() < 2 || n.size() > 63) return false;
  for (size_t i = 0; i < n.size(); i++) {
    char c = n[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) return false;
  }
  return true;
}

std::string engine_short_id(const std::string& id) {
  return id.substr(0, 12);
}

double engine_ms_since(uint64_t t) {
  return (uv_hrtime() - t) / 1e6;
}

// ---- configuration ----

bool engine_config_check(const char* kind, const std::string& image, const std::string& pool,
                         const std::string& network, const char* network_hint, uint16_t port_min,
                         uint16_t port_max, std::string* err) {
  if (image.empty()) {
    *err = std::string("the ") + kind + " provisioner needs an image";
    return false;
  }
  bool pool_ok = !pool.empty() && pool.size() <= 63;
  for (char c : pool)
    pool_ok = pool_ok && (isalnum(static_cast<unsigned char>(c)) || strchr("_.-", c));
  if (!pool_ok) {
    *err = "invalid pool name \"" + pool + "\": use 1 to 63 of A-Z a-z 0-9 _ . -";
    return false;
  }
  if (network.empty()) {
    *err = std::string("the ") + kind + " provisioner needs a network: " + network_hint;
    return false;
  }
  if (network == "host" && (port_min == 0 || port_min > port_max)) {
    *err =
        "invalid replica port range " + std::to_string(port_min) + "-" + std::to_string(port_max);
    return false;
  }
  return true;
}

// ---- engine replies ----

int engine_reply_failure(const DockerReply& r, const std::string& what, std::string* err) {
  if (r.status != 0) {
    *err = what + ": " + r.error;
    return r.status == -ECANCELED ? -ECANCELED : -EIO;
  }
  std::string msg = docker_error_message(r);
  *err = what + ": Docker says \"" + msg + "\"";
  if (r.http_status == 503 && msg.find("not a swarm manager") != std::string::npos)
    *err += " (run `docker swarm init` on this node, or point ringlb at a manager)";
  if (r.http_status == 404) {
    if (msg.rfind("No such image", 0) == 0)
      *err += " (build the image with `make images`, or pass another image)";
    return -ENOENT;
  }
  if (r.http_status == 400) return -EINVAL;
  if (r.http_status == 409) return -EEXIST;
  return -EIO;
}

bool engine_removed_ok(const DockerReply& r) {
  return r.status == 0 && (r.http_status == 200 || r.http_status == 204 || r.http_status == 404);
}

json_t* engine_reply_array(const DockerReply& r, const std::string& what, int* st,
                           std::string* err) {
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (json_is_array(arr)) return arr;
  if (arr) json_decref(arr);
  int s = engine_reply_failure(r, what, err);
  *st = s == 0 || s == -ENOENT ? -EIO : s;
  return nullptr;
}

std::string engine_reply_id(const DockerReply& r, const char* key) {
  json_t* j = docker_reply_json(r);
  std::string id = j ? docker_json_str(j, key) : "";
  if (j) json_decref(j);
  return id;
}

std::string engine_filter_query(json_t* f) {
  char* s = json_dumps(f, JSON_COMPACT);
  std::string out = docker_url_escape(s ? s : "{}");
  free(s);
  json_decref(f);
  return out;
}

std::string engine_label_filter(const std::string& label, const std::string& label2) {
  json_t* labels = json_array();
  json_array_append_new(labels, json_string(label.c_str()));
  if (!label2.empty()) json_array_append_new(labels, json_string(label2.c_str()));
  json_t* f = json_object();
  json_object_set_new(f, "label", labels);
  return engine_filter_query(f);
}

// ---- ports ----

bool engine_port_bindable(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}

// ---- readiness probe ----

static void on_probe_closed(uv_handle_t* h) {
  EngineProbe* pr = container_of(reinterpret_cast<uv_tcp_t*>(h), &EngineProbe::tcp);
  pr->connecting = false;
  pr->on_done(pr);
}

static void on_probe_connect(uv_connect_t* req, int status) {
  EngineProbe* pr = container_of(req, &EngineProbe::req);
  pr->connected = status == 0;
  uv_close(reinterpret_cast<uv_handle_t*>(&pr->tcp), on_probe_closed);
}

void engine_probe_attempt(EngineProbe* pr, uv_loop_t* loop, uint16_t port,
                          void (*on_done)(EngineProbe* pr)) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &pr->tcp);
  pr->on_done = on_done;
  pr->connecting = true;
  pr->connected = false;
  if (uv_tcp_connect(&pr->req, &pr->tcp, reinterpret_cast<const sockaddr*>(&addr),
                     on_probe_connect) != 0)
    uv_close(reinterpret_cast<uv_handle_t*>(&pr->tcp), on_probe_closed);
}

// ---- life ----

void engine_pool_init(EnginePool* e, uv_loop_t* loop, DockerApi* api, const char* kind) {
  e->loop = loop;
  e->api = api;
  e->kind = kind;
  uv_timer_init(loop, &e->events_retry);
  uv_timer_init(loop, &e->resync);
}

void engine_quiet_add(EnginePool* e, const std::string& id) {
  if (id.empty() || !e->quiet.insert(id).second) return;
  e->quiet_order.push_back(id);
  if (e->quiet_order.size() > kQuietMax) {
    e->quiet.erase(e->quiet_order.front());
    e->quiet_order.pop_front();
  }
}

bool engine_quiet_has(const EnginePool* e, const std::string& id) {
  return e->quiet.count(id) > 0;
}

void engine_events_ok(EnginePool* e) {
  e->events_retry_ms = kEventsRetryMinMs;
}

void engine_events_retry(EnginePool* e, const char* what, const DockerReply& r,
                         uv_timer_cb on_retry) {
  if (e->closing) return;
  std::string why = r.status != 0          ? r.error
                    : r.http_status != 200 ? docker_error_message(r)
                                           : "the engine ended the stream";
  LOG_WARN("%s: %s ended (%s); reconnecting in %d ms", e->kind, what, why.c_str(),
           e->events_retry_ms);
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&e->events_retry))) return;
  uv_timer_start(&e->events_retry, on_retry, e->events_retry_ms, 0);
  e->events_retry_ms =
      e->events_retry_ms * 2 > kEventsRetryMaxMs ? kEventsRetryMaxMs : e->events_retry_ms * 2;
}

static void close_step_done(EnginePool* e) {
  if (--e->close_pending > 0) return;
  std::function<void()> cb = std::move(e->close_cb);
  if (cb) cb();
}

static void on_events_retry_closed(uv_handle_t* h) {
  close_step_done(container_of(reinterpret_cast<uv_timer_t*>(h), &EnginePool::events_retry));
}

static void on_resync_closed(uv_handle_t* h) {
  close_step_done(container_of(reinterpret_cast<uv_timer_t*>(h), &EnginePool::resync));
}

bool engine_pool_close(EnginePool* e, std::function<void()> cb) {
  if (e->closing) return false;
  e->closing = true;
  e->close_cb = std::move(cb);
  e->close_pending = 3;  // the retry timer, the resync timer and the client
  uv_close(reinterpret_cast<uv_handle_t*>(&e->events_retry), on_events_retry_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->resync), on_resync_closed);
  return true;
}

// The client is closed last, once nothing can still call through it (a start cancelled by close
// removes what it created through the client).
void engine_maybe_close_api(EnginePool* e) {
  if (!e->closing || e->api_closing || e->ops > 0 || e->busy > 0) return;
  e->api_closing = true;
  docker_api_close(e->api, [e] {
    e->api = nullptr;
    close_step_done(e);
  });
}
