// ringlb-replica: the replica server of the assignment (Task 1) on ringlb's HTTP layer.
//
//   GET /home       200 {"message": "Hello from Server: <ID>", "status": "successful"}
//   GET /heartbeat  200, empty body
//   GET /ws         a WebSocket echo (RFC 6455; replica/ws_echo.h): 101 (with X-Server-Id: <ID>),
//                   then every text or binary message comes back, pings get pongs, a close is
//                   answered and closes
//   anything else   404 with a JSON error
//
// With --debug-routes it also serves the routes ringlb's own tests need to exercise a proxy:
//   GET /bytes?n=N   N bytes of body, streamed with backpressure
//   POST /sink       reads the whole body, answers {"bytes": N}
//   GET /sleep?ms=N  answers /home's body after N ms (at most an hour)
//   GET /ws?send=N   the WebSocket echo, which first sends N bytes of binary messages (64 KiB each)
//
// SIGTERM and SIGINT stop accepting, let in-flight exchanges finish and exit 0 (it runs as PID 1 in a
// container, where an unhandled SIGTERM would be ignored). With --die-with-parent it exits when the
// process that started it dies (the load balancer's process provisioner uses this).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/prctl.h>
#include <unistd.h>

#include <uv.h>

#include "lb/http/container_of.h"
#include "lb/http/http_response.h"
#include "lb/http/http_server.h"
#include "replica/ws_echo.h"

namespace {

struct ReplicaConfig {
  std::string id = "1";
  std::string address = "0.0.0.0";
  int port = 5000;
  int listen_fd = -1;
  bool debug_routes = false;
  bool die_with_parent = false;
};

struct Replica {
  uv_loop_t* loop;
  HttpServer server;
  ReplicaConfig config;
  uv_signal_t sigterm, sigint;
  uv_timer_t force_exit;
  std::string home_body;
};

// One accepted client connection. Streams of /bytes and the timer of /sleep live here.
struct ReplicaConn {
  HttpConn conn;  // the HTTP layer hands this back; rconn recovers the ReplicaConn around it
  Replica* replica;
  uv_timer_t sleep_timer;
  uint64_t sleep_until_ns = 0;  // /sleep answers at or after this uv_hrtime()
  bool timer_open = false;
  bool keep_alive = true;
  uint64_t sink_bytes = 0;
  uint64_t bytes_left = 0;  // /bytes still to send
  bool streaming = false;   // a /bytes body is being written (the connection is paused)
  bool draining = false;    // an answer is queued; the exchange ends when it is written
  std::string out;
  // /ws: after the 101 the connection is raw (http_conn_set_raw) and carries WebSocket frames.
  WsEcho* ws = nullptr;
  bool ws_closing = false;  // our close frame (or a refusal) is queued: close once it is written
  uint64_t ws_send_left = 0;  // /ws?send=N bytes still to send
};

// Bytes queued for a WebSocket client past which its frames are not read (backpressure: a client
// that sends without reading meets TCP's, not the replica's memory).
constexpr size_t kWsQueueMax = 1 << 20;

Replica g_replica;

// The connection that embeds c (every HttpConn of this server is a ReplicaConn's conn: on_accept).
ReplicaConn* rconn(HttpConn* c) { return container_of(c, &ReplicaConn::conn); }

bool keep_alive(ReplicaConn* rc) {
  return rc->conn.head.keep_alive && !http_server_stopping(&rc->replica->server);
}

void respond(ReplicaConn* rc, int status, std::string_view body, std::string_view type) {
  rc->keep_alive = keep_alive(rc);
  rc->out.clear();
  http_append_response(&rc->out, status, type, body, rc->keep_alive);
  if (rc->conn.head.method == HTTP_HEAD) rc->out.resize(rc->out.size() - body.size());
  if (http_conn_write(&rc->conn, rc->out.data(), rc->out.size()) != 0) http_conn_close(&rc->conn);
}

// Ends an exchange whose answer is written or queued. While part of it is queued the connection
// stays paused until on_drain: a client that pipelines requests without reading the answers meets
// TCP backpressure instead of making the replica queue every answer in memory. Then it closes when
// the client or the shutdown asked for it, or goes on to the next request.
HttpNext finish_exchange(ReplicaConn* rc) {
  if (rc->conn.write_queued > 0) {
    rc->draining = true;
    return HttpNext::pause;
  }
  rc->draining = false;
  if (!rc->keep_alive) {
    http_conn_close(&rc->conn);
    return HttpNext::pause;
  }
  return HttpNext::parse;
}

void not_found(ReplicaConn* rc, std::string_view path) {
  std::string body = "{\"message\": \"<Error> '";
  http_append_json_escaped(&body, path);
  body.append("' endpoint does not exist in server replica\", \"status\": \"failure\"}");
  respond(rc, 404, body, "application/json");
}

// Ends an exchange that finished outside on_message_end (a timer, a drained write queue).
void finish_later(ReplicaConn* rc) {
  if (finish_exchange(rc) == HttpNext::parse) http_conn_resume(&rc->conn);
}

// Writes the rest of a /bytes body, 64 KiB at a time while the socket takes each piece whole.
// Returns true once every byte is written; false while the rest waits for on_drain (streaming
// stays set) or when the connection is closing. The caller ends the exchange on true: the pump
// never resumes the connection itself, since it runs inside on_message_end too.
bool bytes_pump(ReplicaConn* rc) {
  static const std::string chunk(64 * 1024, 'x');
  rc->streaming = true;
  while (!rc->conn.closing && rc->conn.write_queued == 0) {
    if (rc->bytes_left == 0) {
      rc->streaming = false;
      return true;
    }
    size_t n = rc->bytes_left < chunk.size() ? rc->bytes_left : chunk.size();
    rc->bytes_left -= n;
    if (http_conn_write(&rc->conn, chunk.data(), n) != 0) {
      http_conn_close(&rc->conn);
      return false;
    }
  }
  return false;
}

// Sends the rest of /ws?send=N as 64 KiB binary messages while the socket takes them whole; the
// rest waits for on_drain.
void ws_send_pump(ReplicaConn* rc) {
  static const std::string chunk(64 * 1024, 'w');
  std::string frame;
  while (!rc->conn.closing && !rc->ws_closing && rc->ws_send_left > 0 && rc->conn.write_queued == 0) {
    size_t n = rc->ws_send_left < chunk.size() ? rc->ws_send_left : chunk.size();
    rc->ws_send_left -= n;
    frame.clear();
    ws_frame(&frame, 2, chunk.data(), n);
    if (http_conn_write(&rc->conn, frame.data(), frame.size()) != 0) http_conn_close(&rc->conn);
  }
}

// GET /ws: the handshake is answered 101 and the connection turns raw (what the client sent after
// the request goes to ws_on_bytes at once), or refused with 400 or 426 and closed.
void ws_open(ReplicaConn* rc) {
  HttpConn* c = &rc->conn;
  std::string extra;
  int status = ws_handshake(c->head, &extra);
  if (status != 101) {
    rc->keep_alive = false;
    rc->out.clear();
    http_append_response(&rc->out, status, "application/json",
                         "{\"message\": \"<Error> not a WebSocket handshake\", \"status\": \"failure\"}",
                         false, extra);
    if (http_conn_write(c, rc->out.data(), rc->out.size()) != 0) http_conn_close(c);
    return;
  }
  // Which replica answered, for tests that check where a key's tunnels go (as /home's body says).
  extra.insert(extra.size() - 2, "X-Server-Id: " + rc->replica->config.id + "\r\n");
  if (http_conn_write(c, extra.data(), extra.size()) != 0) {
    http_conn_close(c);
    return;
  }
  rc->ws = new WsEcho();
  http_conn_set_raw(c);
  std::string_view n;
  if (rc->replica->config.debug_routes && http_url_query(http_head_url(c->head), "send", &n))
    rc->ws_send_left = strtoull(std::string(n).c_str(), nullptr, 10);
  ws_send_pump(rc);
}

// Frames from a /ws client: the answers are written, reading stops while too much is queued, and
// the connection closes once a close (ours or an answer to the client's) is written.
void ws_on_bytes(ReplicaConn* rc, const char* data, size_t len) {
  if (rc->ws_closing) return;
  std::string out;
  bool open = ws_feed(rc->ws, data, len, &out);
  if (!out.empty() && http_conn_write(&rc->conn, out.data(), out.size()) != 0) {
    http_conn_close(&rc->conn);
    return;
  }
  if (!open) {
    rc->ws_closing = true;
    http_conn_stop(&rc->conn);
    if (rc->conn.write_queued == 0) http_conn_close(&rc->conn);
    return;
  }
  if (rc->conn.write_queued > kWsQueueMax) http_conn_stop(&rc->conn);
}

// The loop's clock is in whole milliseconds and may be stale, so a timer of N ms can fire short of
// N: until the exact deadline has passed, wait again for what is left, rounded up.
void on_sleep_done(uv_timer_t* t) {
  ReplicaConn* rc = static_cast<ReplicaConn*>(t->data);
  uint64_t now = uv_hrtime();
  if (now < rc->sleep_until_ns) {
    uv_timer_start(t, on_sleep_done, (rc->sleep_until_ns - now + 999999) / 1000000, 0);
    return;
  }
  respond(rc, 200, rc->replica->home_body, "application/json");
  finish_later(rc);
}

// A client that sent Expect: 100-continue waits for 100 Continue before it sends the body (curl
// waits a second), so it gets one at once; the final answer follows at the message end (RFC 9110
// §10.1.1). Not for HTTP/1.0, which has no interim responses, nor a request without a body.
void on_head(HttpConn* c) {
  const HttpHead& h = c->head;
  std::string_view expect;
  if (h.major == 1 && h.minor >= 1 && (h.chunked || h.content_length > 0) &&
      http_head_get(h, "expect", &expect) && http_iequals(expect, "100-continue")) {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (http_conn_write(c, kContinue, sizeof kContinue - 1) != 0) http_conn_close(c);
  }
}

void on_body(HttpConn* c, const char* data, size_t len) {
  ReplicaConn* rc = rconn(c);
  if (rc->ws != nullptr) {
    ws_on_bytes(rc, data, len);
    return;
  }
  rc->sink_bytes += len;
}

HttpNext on_message_end(HttpConn* c) {
  ReplicaConn* rc = rconn(c);
  const HttpHead& h = c->head;
  std::string_view url = http_head_url(h);
  std::string_view path = http_url_path(url);
  bool get = h.method == HTTP_GET || h.method == HTTP_HEAD;
  uint64_t sunk = rc->sink_bytes;
  rc->sink_bytes = 0;

  if (get && path == "/home") {
    respond(rc, 200, rc->replica->home_body, "application/json");
  } else if (get && path == "/heartbeat") {
    respond(rc, 200, "", "");
  } else if (h.method == HTTP_GET && path == "/ws") {
    ws_open(rc);
    if (rc->ws != nullptr) return HttpNext::parse;  // raw from now on (http_conn_set_raw)
  } else if (rc->replica->config.debug_routes && h.method == HTTP_POST && path == "/sink") {
    respond(rc, 200, "{\"bytes\": " + std::to_string(sunk) + "}", "application/json");
  } else if (rc->replica->config.debug_routes && get && path == "/bytes") {
    std::string_view n;
    uint64_t count = http_url_query(url, "n", &n) ? strtoull(std::string(n).c_str(), nullptr, 10) : 0;
    rc->keep_alive = keep_alive(rc);
    rc->out.clear();
    rc->out.append("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ");
    rc->out.append(std::to_string(count));
    rc->out.append(rc->keep_alive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
    if (http_conn_write(c, rc->out.data(), rc->out.size()) != 0) {
      http_conn_close(c);
      return HttpNext::pause;
    }
    rc->bytes_left = h.method == HTTP_HEAD ? 0 : count;
    return bytes_pump(rc) ? finish_exchange(rc) : HttpNext::pause;
  } else if (rc->replica->config.debug_routes && get && path == "/sleep") {
    std::string_view ms;
    uint64_t wait = http_url_query(url, "ms", &ms) ? strtoull(std::string(ms).c_str(), nullptr, 10) : 0;
    if (!rc->timer_open) {
      uv_timer_init(c->tcp.loop, &rc->sleep_timer);
      rc->sleep_timer.data = rc;
      rc->timer_open = true;
    }
    wait = std::min<uint64_t>(wait, 3600000);  // an hour at most: the deadline cannot overflow
    rc->sleep_until_ns = uv_hrtime() + wait * 1000000;
    uv_timer_start(&rc->sleep_timer, on_sleep_done, wait, 0);
    return HttpNext::pause;
  } else {
    not_found(rc, path);
  }
  return finish_exchange(rc);
}

void on_drain(HttpConn* c) {
  ReplicaConn* rc = rconn(c);
  if (rc->ws != nullptr) {
    if (rc->ws_closing) {
      http_conn_close(c);
      return;
    }
    ws_send_pump(rc);
    if (c->write_queued == 0 && !c->reading) http_conn_start(c);
    return;
  }
  if (rc->streaming) {
    if (bytes_pump(rc)) finish_later(rc);
  } else if (rc->draining) {
    finish_later(rc);
  }
}

void on_error(HttpConn* c, int err) {
  ReplicaConn* rc = rconn(c);
  if (rc->ws != nullptr) {  // the WebSocket client went away (or a write failed)
    http_conn_close(c);
    return;
  }
  if (err == HTTP_E_TOO_LARGE || err == HTTP_E_PARSE) {
    int status = err == HTTP_E_TOO_LARGE ? 431 : 400;
    std::string body = "{\"message\": \"<Error> ";
    body.append(err == HTTP_E_TOO_LARGE ? "request header fields too large" : "malformed request");
    body.append("\", \"status\": \"failure\"}");
    rc->out.clear();
    http_append_response(&rc->out, status, "application/json", body, false);
    rc->keep_alive = false;
    if (http_conn_write(c, rc->out.data(), rc->out.size()) == 0) {
      finish_exchange(rc);  // closes now, or once the answer is written
      return;
    }
  }
  http_conn_close(c);
}

void free_conn(uv_handle_t* h) { delete static_cast<ReplicaConn*>(h->data); }

void on_close(HttpConn* c) {
  ReplicaConn* rc = rconn(c);
  delete rc->ws;
  rc->ws = nullptr;
  if (rc->timer_open) {
    rc->sleep_timer.data = rc;
    uv_close(reinterpret_cast<uv_handle_t*>(&rc->sleep_timer), free_conn);
  } else {
    delete rc;
  }
}

const HttpConnHandlers kHandlers = {on_head, on_body, on_message_end, on_error, on_drain, on_close};

HttpConn* on_accept(HttpServer* s) {
  Replica* r = static_cast<Replica*>(s->owner);
  ReplicaConn* rc = new ReplicaConn();
  rc->replica = r;
  if (http_conn_init(r->loop, &rc->conn, HTTP_REQUEST, &kHandlers, s->config.read_buffer) != 0) {
    delete rc;
    return nullptr;
  }
  return &rc->conn;
}

void close_walk(uv_handle_t* h, void*) {
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

void on_stopped(HttpServer* s) {
  Replica* r = static_cast<Replica*>(s->owner);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->sigterm), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->sigint), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->force_exit), nullptr);
}

void on_force_exit(uv_timer_t* t) {
  // In-flight exchanges did not finish within the grace period: close whatever is left.
  uv_walk(t->loop, close_walk, nullptr);
}

void on_signal(uv_signal_t* sig, int signum) {
  Replica* r = static_cast<Replica*>(sig->data);
  fprintf(stderr, "replica %s: signal %d, stopping\n", r->config.id.c_str(), signum);
  uv_signal_stop(&r->sigterm);
  uv_signal_stop(&r->sigint);
  uv_timer_start(&r->force_exit, on_force_exit, 900, 0);
  http_server_stop(&r->server);
}

void usage(FILE* out) {
  fprintf(out,
          "usage: ringlb-replica [--id ID] [--port PORT] [--address ADDR] [--listen-fd FD]\n"
          "                      [--debug-routes] [--die-with-parent]\n"
          "  --id ID          server id in /home answers (env SERVER_ID; default 1)\n"
          "  --port PORT      TCP port (env PORT; default 5000)\n"
          "  --address ADDR   address to bind (env ADDRESS; default 0.0.0.0)\n"
          "  --listen-fd FD   serve an already listening socket (or env LISTEN_FDS=1: fd 3)\n"
          "  --debug-routes   also serve /bytes, /sink, /sleep and /ws?send=N (tests)\n"
          "  --die-with-parent  exit when the parent process dies\n");
}

bool parse_port(const char* text, int* port) {
  char* end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno || *end || end == text || v < 0 || v > 65535) return false;
  *port = static_cast<int>(v);
  return true;
}

int parse_args(int argc, char** argv, ReplicaConfig* cfg) {
  if (const char* v = getenv("SERVER_ID"); v && *v) cfg->id = v;
  if (const char* v = getenv("ADDRESS"); v && *v) cfg->address = v;
  if (const char* v = getenv("PORT"); v && *v && !parse_port(v, &cfg->port)) {
    fprintf(stderr, "ringlb-replica: PORT must be a port number (0-65535), got '%s'\n", v);
    return 2;
  }
  if (const char* v = getenv("LISTEN_FDS"); v && strcmp(v, "1") == 0) cfg->listen_fd = 3;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        fprintf(stderr, "ringlb-replica: %s needs a value\n", name);
        return nullptr;
      }
      return argv[++i];
    };
    const char* v = nullptr;
    if (a == "--help" || a == "-h") {
      usage(stdout);
      exit(0);
    } else if (a == "--id") {
      if (!(v = value("--id"))) return 2;
      cfg->id = v;
    } else if (a == "--port") {
      if (!(v = value("--port"))) return 2;
      if (!parse_port(v, &cfg->port)) {
        fprintf(stderr, "ringlb-replica: --port must be a port number (0-65535), got '%s'\n", v);
        return 2;
      }
    } else if (a == "--address") {
      if (!(v = value("--address"))) return 2;
      cfg->address = v;
    } else if (a == "--listen-fd") {
      if (!(v = value("--listen-fd"))) return 2;
      if (!parse_port(v, &cfg->listen_fd)) {  // the same digits-only check, and fds are small
        fprintf(stderr, "ringlb-replica: --listen-fd must be a file descriptor number, got '%s'\n", v);
        return 2;
      }
    } else if (a == "--debug-routes") {
      cfg->debug_routes = true;
    } else if (a == "--die-with-parent") {
      cfg->die_with_parent = true;
    } else {
      fprintf(stderr, "ringlb-replica: unknown option '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (cfg->id.empty() || cfg->id.find_first_of("\"\\\r\n") != std::string::npos) {
    fprintf(stderr, "ringlb-replica: the server id must be non-empty text without quotes\n");
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Replica* r = &g_replica;
  if (int rc = parse_args(argc, argv, &r->config); rc != 0) return rc;
  if (r->config.die_with_parent) {
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent || parent == 1) return 0;  // the parent is already gone
  }
  r->home_body = "{\"message\": \"Hello from Server: " + r->config.id +
                 "\", \"status\": \"successful\"}";
  r->loop = uv_default_loop();
  r->server.owner = r;
  r->server.on_accept = on_accept;
  r->server.on_stopped = on_stopped;

  std::string bound;
  int rc;
  if (r->config.listen_fd >= 0) {
    rc = http_server_listen_fd(&r->server, r->loop, r->config.listen_fd, &bound);
  } else {
    std::string addr = r->config.address;
    if (addr.find(':') != std::string::npos) addr = "[" + addr + "]";
    rc = http_server_listen(&r->server, r->loop, addr + ":" + std::to_string(r->config.port), &bound);
  }
  if (rc != 0 && r->config.listen_fd >= 0) {
    fprintf(stderr, "ringlb-replica: cannot listen on fd %d: %s\n", r->config.listen_fd,
            uv_strerror(rc));
    return 1;
  }
  if (rc != 0) {
    fprintf(stderr, "ringlb-replica: cannot listen on %s:%d: %s\n", r->config.address.c_str(),
            r->config.port, uv_strerror(rc));
    return 1;
  }
  uv_signal_init(r->loop, &r->sigterm);
  uv_signal_init(r->loop, &r->sigint);
  r->sigterm.data = r->sigint.data = r;
  uv_signal_start(&r->sigterm, on_signal, SIGTERM);
  uv_signal_start(&r->sigint, on_signal, SIGINT);
  uv_timer_init(r->loop, &r->force_exit);
  signal(SIGPIPE, SIG_IGN);
  fprintf(stderr, "replica %s: listening on %s\n", r->config.id.c_str(), bound.c_str());

  uv_run(r->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(r->loop) != 0) {
    fprintf(stderr, "replica %s: handles left open at exit\n", r->config.id.c_str());
    return 1;
  }
  fprintf(stderr, "replica %s: stopped\n", r->config.id.c_str());
  return 0;
}
