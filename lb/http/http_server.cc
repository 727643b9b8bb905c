#include "lb/http/http_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>

namespace {

constexpr uint64_t kSweepMs = 1000;     // deadlines, and a paused listener's retry
constexpr uint64_t kWaitSweepMs = 50;   // while at a --max-conns cap shared with other servers

HttpServer* server_of(uv_handle_t* h) { return static_cast<HttpServer*>(h->data); }

void server_link(HttpServer* s, HttpConn* c) {
  c->server = s;
  c->prev = nullptr;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->conn_count++;
}

void maybe_stopped(HttpServer* s) {
  if (s->stopping && s->conn_count == 0 && s->open_handles == 0 && s->on_stopped) {
    auto cb = s->on_stopped;
    s->on_stopped = nullptr;
    cb(s);
  }
}

void on_handle_closed(uv_handle_t* h) {
  HttpServer* s = server_of(h);
  s->open_handles--;
  maybe_stopped(s);
}

void close_idle(HttpServer* s) {
  for (HttpConn* c = s->conns; c != nullptr; c = c->next)
    if (http_conn_idle(c)) http_conn_close(c);
}

void on_connection(uv_stream_t* listener, int status);
bool server_reserve(HttpServer* s);
void server_release(HttpServer* s);
void server_take(HttpServer* s);

// The listener handle closed for an accept pause (server_pause_accept). When the server stopped
// meanwhile, the listener was to close anyway: it counts as closed now.
void on_listener_paused(uv_handle_t* h) {
  HttpServer* s = server_of(h);
  s->accept_pause = 2;
  if (!s->stopping) return;
  if (s->spare_fd >= 0) close(s->spare_fd);
  s->spare_fd = -1;
  s->open_handles--;
  maybe_stopped(s);
}

// accept() failed with EMFILE or ENFILE: the process is out of descriptors and libuv's spare-
// descriptor trick did not help (it is not reliable with several threads opening descriptors, as
// the data-plane workers and the control loop do): libuv would call accept() again at once, for
// as long as clients wait in the backlog, and spin the loop's thread. Closing the listener handle
// ends that (libuv stops once the handle has no descriptor); clients wait in the kernel's backlog
// until the next sweep opens it again on the spare descriptor (as nginx disables accept events for
// a while after EMFILE). Without a spare descriptor there is nothing to pause with.
void server_pause_accept(HttpServer* s) {
  if (s->accept_pause != 0 || s->spare_fd < 0 || s->stopping) return;
  s->accept_pause = 1;
  s->accept_waiting = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&s->listener), on_listener_paused);
}

// Listens again after an accept pause: a new listener handle on the spare descriptor, once a
// further duplicate (the next pause's spare) could be made; otherwise the pause goes on until the
// next sweep.
void server_resume_accept(HttpServer* s) {
  int next = fcntl(s->spare_fd, F_DUPFD_CLOEXEC, 0);
  if (next < 0) return;
  if (uv_tcp_init(s->loop, &s->listener) != 0) {
    close(next);
    return;
  }
  s->listener.data = s;
  int fd = s->spare_fd;
  s->spare_fd = next;
  s->accept_pause = 0;
  if (uv_tcp_open(&s->listener, fd) != 0) close(fd);
  // A failure leaves a listener that never reports a client; the next EMFILE cannot come from it.
  uv_listen(reinterpret_cast<uv_stream_t*>(&s->listener), s->config.backlog, on_connection);
}

void on_sweep(uv_timer_t* t) {
  HttpServer* s = server_of(reinterpret_cast<uv_handle_t*>(t));
  uint64_t now = uv_now(s->loop);
  if (s->accept_pause == 2 && !s->stopping) server_resume_accept(s);
  if (s->config.shared_count != nullptr && !s->stopping && uv_timer_get_repeat(t) == kWaitSweepMs) {
    if (s->accept_waiting && server_reserve(s)) {
      s->accept_waiting = false;  // a place freed on another server
      server_take(s);
    }
    if (!s->accept_waiting) uv_timer_start(t, on_sweep, kSweepMs, kSweepMs);  // back to the pace
  }
  for (HttpConn* c = s->conns; c != nullptr; c = c->next)
    if (c->deadline != 0 && now >= c->deadline) http_conn_close(c, /*reset=*/true);
  if (s->stopping) close_idle(s);
}

// Accepts the socket libuv holds (the listener's accepted_fd) into a handle of its own and closes it:
// a client the owner refused. libuv has no way to take an accepted descriptor without a handle. The
// handle lives on the heap until its close callback: uv_close completes on a later turn.
void server_accept_apart(HttpServer* s) {
  auto* tmp = static_cast<uv_tcp_t*>(malloc(sizeof(uv_tcp_t)));
  if (tmp == nullptr || uv_tcp_init(s->loop, tmp) != 0) {
    free(tmp);
    return;
  }
  uv_accept(reinterpret_cast<uv_stream_t*>(&s->listener), reinterpret_cast<uv_stream_t*>(tmp));
  uv_close(reinterpret_cast<uv_handle_t*>(tmp), [](uv_handle_t* h) { free(h); });
}

// A new connection c, linked and configured, reads from here on (through TLS when the server has
// a context: a client handed to another server gets its TLS state there).
void server_serve(HttpServer* s, HttpConn* c) {
  uv_tcp_nodelay(&c->tcp, 1);
  if (s->config.tls != nullptr && s->config.tls_attach(c, s->config.tls) != 0) {
    http_conn_close(c);
    return;
  }
  c->deadline = c->header_timeout_ms ? uv_now(s->loop) + c->header_timeout_ms : 0;
  if (http_conn_start(c) != 0) http_conn_close(c);
}

HttpConn* server_new_conn(HttpServer* s) {
  HttpConn* c = s->on_accept(s);
  if (c == nullptr) return nullptr;
  server_link(s, c);
  c->limits = s->config.limits;
  c->header_timeout_ms = s->config.header_timeout_ms;
  c->idle_timeout_ms = s->config.idle_timeout_ms;
  return c;
}

// Another server takes c if should_hand_off says so: a duplicate of its descriptor goes there,
// and c closes (a plain close of one descriptor: the socket lives on in the other). Its place under
// max_conns stays taken (held again here: closing c releases one). Without a descriptor for the
// duplicate (out of them), or when the other server is gone, the client stays. True: c is closing.
bool server_hand_off(HttpServer* s, HttpConn* c, bool idle) {
  if (s->should_hand_off == nullptr || s->stopping || !s->should_hand_off(s)) return false;
  uv_os_fd_t fd;
  int dup = uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) == 0
                ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (!s->on_handed_off(s, c, dup, idle)) return false;
  if (s->config.max_conns != 0 && s->config.shared_count != nullptr)
    s->config.shared_count->fetch_add(1, std::memory_order_relaxed);
  http_conn_close(c);
  return true;
}

void server_take(HttpServer* s) {
  HttpConn* c = server_new_conn(s);
  if (c == nullptr) {
    server_release(s);  // the place reserved for it
    // Refused: accept and drop, so the backlog does not fill with a client we will never serve.
    server_accept_apart(s);
    return;
  }
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&s->listener), reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    http_conn_close(c);
    return;
  }
  // A TLS client moves now or never: its TLS state will live here. Others move at their first
  // idle moment (http_server_hand_off), so a client that sends one request is never moved.
  if (s->config.tls != nullptr && server_hand_off(s, c, false)) return;
  server_serve(s, c);
}

// Reserves a place for one more connection under config.max_conns: true when there is one (counted
// in config.shared_count when set, released by http_server_forget), false at the cap.
bool server_reserve(HttpServer* s) {
  uint32_t max = s->config.max_conns;
  if (max == 0) return true;
  std::atomic<uint32_t>* shared = s->config.shared_count;
  if (shared == nullptr) return s->conn_count < max;
  if (shared->fetch_add(1, std::memory_order_relaxed) < max) return true;
  shared->fetch_sub(1, std::memory_order_relaxed);
  return false;
}

void server_release(HttpServer* s) {
  if (s->config.max_conns != 0 && s->config.shared_count != nullptr)
    s->config.shared_count->fetch_sub(1, std::memory_order_relaxed);
}

// At the cap the socket libuv accepted is left with it: libuv then stops polling the listener
// until uv_accept takes the socket (libuv 1.44 src/unix/stream.c, uv__server_io and uv_accept), so
// every further client waits in the kernel's backlog. http_server_forget takes it when a
// connection closes.
void on_connection(uv_stream_t* listener, int status) {
  HttpServer* s = server_of(reinterpret_cast<uv_handle_t*>(listener));
  if (status == UV_EMFILE || status == UV_ENFILE) server_pause_accept(s);
  if (status != 0 || s->stopping) return;
  if (!server_reserve(s)) {
    s->accept_waiting = true;
    // A place freed by another server's close is seen by this one's sweep only: look often.
    if (s->config.shared_count != nullptr) uv_timer_start(&s->sweep, on_sweep, kWaitSweepMs, kWaitSweepMs);
    if (s->on_full) s->on_full(s);
    return;
  }
  server_take(s);
}

int server_init(HttpServer* s, uv_loop_t* loop) {
  s->loop = loop;
  int rc = uv_tcp_init(loop, &s->listener);
  if (rc != 0) return rc;
  s->listener.data = s;
  s->open_handles++;
  uv_timer_init(loop, &s->sweep);
  s->sweep.data = s;
  s->open_handles++;
  uv_timer_start(&s->sweep, on_sweep, kSweepMs, kSweepMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(&s->sweep));
  return 0;
}

int server_finish(HttpServer* s, std::string* bound) {
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(&s->listener), s->config.backlog, on_connection);
  if (rc != 0) return rc;
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&s->listener), &fd) == 0)
    s->spare_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);  // for accept pauses; -1: none
  if (bound) {
    struct sockaddr_storage addr;
    int len = sizeof addr;
    uv_tcp_getsockname(&s->listener, reinterpret_cast<struct sockaddr*>(&addr), &len);
    *bound = http_format_address(reinterpret_cast<struct sockaddr*>(&addr));
  }
  return 0;
}

}  // namespace

int http_parse_address(const std::string& text, struct sockaddr_storage* addr) {
  std::string host = "0.0.0.0", port = text;
  if (!text.empty() && text[0] == '[') {
    size_t end = text.find("]:");
    if (end == std::string::npos) return UV_EINVAL;
    host = text.substr(1, end - 1);
    port = text.substr(end + 2);
  } else if (size_t colon = text.rfind(':'); colon != std::string::npos) {
    if (colon > 0) host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return UV_EINVAL;
  int p = std::stoi(port);
  if (p > 65535) return UV_EINVAL;
  if (host == "localhost") host = "127.0.0.1";
  memset(addr, 0, sizeof *addr);
  if (uv_ip4_addr(host.c_str(), p, reinterpret_cast<struct sockaddr_in*>(addr)) == 0) return 0;
  if (uv_ip6_addr(host.c_str(), p, reinterpret_cast<struct sockaddr_in6*>(addr)) == 0) return 0;
  return UV_EINVAL;
}

std::string http_format_ip(const struct sockaddr* addr) {
  if (addr->sa_family == AF_INET) {
    const auto* a = reinterpret_cast<const struct sockaddr_in*>(addr);
    const auto* b = reinterpret_cast<const unsigned char*>(&a->sin_addr.s_addr);
    char ip[INET_ADDRSTRLEN];
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
      if (i > 0) ip[n++] = '.';
      unsigned v = b[i];
      if (v >= 100) ip[n++] = static_cast<char>('0' + v / 100);
      if (v >= 10) ip[n++] = static_cast<char>('0' + v / 10 % 10);
      ip[n++] = static_cast<char>('0' + v % 10);
    }
    return std::string(ip, n);
  }
  char ip[INET6_ADDRSTRLEN] = "?";
  uv_ip6_name(reinterpret_cast<const struct sockaddr_in6*>(addr), ip, sizeof ip);
  return ip;
}

std::string http_format_address(const struct sockaddr* addr) {
  if (addr->sa_family == AF_INET) {
    int port = ntohs(reinterpret_cast<const struct sockaddr_in*>(addr)->sin_port);
    return http_format_ip(addr) + ":" + std::to_string(port);
  }
  int port = ntohs(reinterpret_cast<const struct sockaddr_in6*>(addr)->sin6_port);
  return "[" + http_format_ip(addr) + "]:" + std::to_string(port);
}

int http_server_listen(HttpServer* s, uv_loop_t* loop, const std::string& address,
                       std::string* bound) {
  struct sockaddr_storage addr;
  int rc = http_parse_address(address, &addr);
  if (rc != 0) return rc;
  rc = server_init(s, loop);
  if (rc != 0) return rc;
  rc = uv_tcp_bind(&s->listener, reinterpret_cast<struct sockaddr*>(&addr), 0);
  if (rc != 0) return rc;
  return server_finish(s, bound);
}

int http_bind_sockets(const std::string& address, int count, int backlog, std::vector<int>* fds,
                      std::string* bound) {
  struct sockaddr_storage addr;
  int rc = http_parse_address(address, &addr);
  if (rc != 0) return rc;
  socklen_t len = addr.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  fds->clear();
  for (int i = 0; i < count; i++) {
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              (count == 1 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0) &&
              bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) == 0 && listen(fd, backlog) == 0;
    if (!ok) {
      rc = -errno;
      if (fd >= 0) close(fd);
      for (int f : *fds) close(f);
      fds->clear();
      return rc;
    }
    fds->push_back(fd);
    if (i == 0) {  // port 0: every other socket takes the port the first one got
      socklen_t got = sizeof addr;
      getsockname(fd, reinterpret_cast<struct sockaddr*>(&addr), &got);
      *bound = http_format_address(reinterpret_cast<struct sockaddr*>(&addr));
    }
  }
  return 0;
}

int http_server_listen_fd(HttpServer* s, uv_loop_t* loop, int fd, std::string* bound) {
  int rc = server_init(s, loop);
  if (rc != 0) return rc;
  rc = uv_tcp_open(&s->listener, fd);
  if (rc != 0) return rc;
  return server_finish(s, bound);
}

bool http_server_hand_off(HttpServer* s, HttpConn* c) {
  if (c->closing || c->transport != nullptr || c->in_start != c->in_end || c->write_queued != 0)
    return false;
  return server_hand_off(s, c, true);
}

int http_server_adopt(HttpServer* s, int fd, bool idle) {
  HttpConn* c = s->stopping ? nullptr : server_new_conn(s);
  if (c == nullptr) {
    close(fd);
    server_release(s);
    return UV_ECANCELED;
  }
  int rc = uv_tcp_open(&c->tcp, fd);
  if (rc != 0) {
    close(fd);
    http_conn_close(c);
    return rc;
  }
  server_serve(s, c);
  // Between requests: it waits for its next one under the idle timeout, as it did there.
  if (idle && !c->closing) c->deadline = c->idle_timeout_ms ? uv_now(s->loop) + c->idle_timeout_ms : 0;
  return 0;
}

bool http_server_stopping(const HttpServer* s) { return s->stopping; }

void http_server_stop(HttpServer* s) {
  if (s->stopping) return;
  s->stopping = true;
  if (s->open_handles == 0) {  // never listened
    maybe_stopped(s);
    return;
  }
  if (s->accept_pause == 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&s->listener), on_handle_closed);
    if (s->spare_fd >= 0) close(s->spare_fd);
    s->spare_fd = -1;
  } else if (s->accept_pause == 2) {  // paused: the listener is closed already
    if (s->spare_fd >= 0) close(s->spare_fd);
    s->spare_fd = -1;
    s->open_handles--;
  }  // closing: on_listener_paused counts it closed
  // The sweep keeps running (referenced now) to close connections as they become idle.
  uv_ref(reinterpret_cast<uv_handle_t*>(&s->sweep));
  uv_timer_start(&s->sweep, on_sweep, 50, 50);
  close_idle(s);
  if (s->conn_count == 0) uv_close(reinterpret_cast<uv_handle_t*>(&s->sweep), on_handle_closed);
}

void http_server_forget(HttpServer* s, HttpConn* c) {
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  c->server = nullptr;
  s->conn_count--;
  server_release(s);
  if (s->accept_waiting && !s->stopping && server_reserve(s)) {
    s->accept_waiting = false;  // uv_accept below makes libuv poll the listener again
    server_take(s);
  }
  if (s->stopping && s->conn_count == 0 && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&s->sweep)))
    uv_close(reinterpret_cast<uv_handle_t*>(&s->sweep), on_handle_closed);
  maybe_stopped(s);
}

bool http_conn_idle(const HttpConn* c) {
  return !c->in_message && !c->paused && c->write_queued == 0 && c->in_start == c->in_end;
}
