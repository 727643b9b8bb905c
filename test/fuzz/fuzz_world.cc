#include "test/fuzz/fuzz_world.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "lb/log.h"
#include "lb/provision/static.h"

namespace {

// --- the recording upstream ------------------------------------------------------------------------

struct UpConn {
  uv_tcp_t tcp;  // first: the handle's address is the connection's
  World* w = nullptr;
  llhttp_t parser;
  int id = -1;          // recorded connections: index into w->up_raw; heartbeats: -1
  int cur = -1;         // index into w->up_reqs of the request being parsed
  bool closing = false;
  bool tunnel = false;     // switched after a 101 (World::up_switch): bytes are raw
  bool eof = false;        // tunnel: the LB ended its side
  bool shut_done = false;  // tunnel: our half-close went out
};

struct WriteReq {
  uv_write_t req;
  std::string data;
};

void up_on_closed(uv_handle_t* h) {
  UpConn* u = static_cast<UpConn*>(h->data);
  if (u->w->up_tunnel == u) u->w->up_tunnel = nullptr;
  u->w->up_open--;
  u->w->progress++;
  delete u;
}

void up_close(UpConn* u) {
  if (u->closing) return;
  u->closing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&u->tcp), up_on_closed);
}

void on_written(uv_write_t* req, int) { delete reinterpret_cast<WriteReq*>(req); }

void on_shutdown(uv_shutdown_t* req, int) { delete req; }

void stream_write(uv_stream_t* s, const std::string& data) {
  if (data.empty()) return;
  WriteReq* wr = new WriteReq();
  wr->data = data;
  uv_buf_t b = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  if (uv_write(&wr->req, s, &b, 1, on_written) != 0) delete wr;
}

void stream_shutdown(uv_stream_t* s) {
  uv_shutdown_t* req = new uv_shutdown_t;
  if (uv_shutdown(req, s, on_shutdown) != 0) delete req;
}

UpConn* up_of(llhttp_t* p) { return static_cast<UpConn*>(p->data); }

int up_on_message_begin(llhttp_t* p) {
  UpConn* u = up_of(p);
  if (u->id < 0) return 0;
  u->w->up_reqs.emplace_back();
  u->cur = static_cast<int>(u->w->up_reqs.size()) - 1;
  u->w->up_reqs[u->cur].conn = u->id;
  return 0;
}

int up_on_url(llhttp_t* p, const char* at, size_t len) {
  UpConn* u = up_of(p);
  if (u->cur >= 0) u->w->up_reqs[u->cur].url.append(at, len);
  return 0;
}

int up_on_headers_complete(llhttp_t* p) {
  UpConn* u = up_of(p);
  if (u->cur >= 0) u->w->up_reqs[u->cur].method = static_cast<llhttp_method_t>(p->method);
  return 0;
}

int up_on_body(llhttp_t* p, const char* at, size_t len) {
  UpConn* u = up_of(p);
  if (u->cur >= 0) u->w->up_reqs[u->cur].body.append(at, len);
  return 0;
}

int up_on_message_complete(llhttp_t* p) {
  UpConn* u = up_of(p);
  World* w = u->w;
  std::string out;
  bool shutdown_after = false;
  if (u->id < 0) {  // a heartbeat probe: the probe closes first (the connection ends on its side)
    out = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  } else {
    UpRequest& r = w->up_reqs[u->cur];
    r.method = static_cast<llhttp_method_t>(p->method);
    r.complete = true;
    int seq = 0;
    for (const UpRequest& o : w->up_reqs) seq += o.complete ? 1 : 0;
    r.seq = seq - 1;
    w->answer(w, r, &out, &shutdown_after);
    u->cur = -1;
    if (w->up_switch) {  // a 101: the connection is a tunnel after this message
      w->up_switch = false;
      u->tunnel = true;
      w->up_tunnel = u;
    }
  }
  stream_write(reinterpret_cast<uv_stream_t*>(&u->tcp), out);
  if (shutdown_after) stream_shutdown(reinterpret_cast<uv_stream_t*>(&u->tcp));
  if (u->tunnel && w->on_up_tunnel_data) w->on_up_tunnel_data(w);  // switched: the target may write
  return u->tunnel ? HPE_PAUSED : 0;  // the bytes after it are the tunnel's
}

const llhttp_settings_t* up_settings() {
  static llhttp_settings_t s;
  static bool init = false;
  if (!init) {
    llhttp_settings_init(&s);
    s.on_message_begin = up_on_message_begin;
    s.on_url = up_on_url;
    s.on_headers_complete = up_on_headers_complete;
    s.on_body = up_on_body;
    s.on_message_complete = up_on_message_complete;
    init = true;
  }
  return &s;
}

void up_on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof slab);
}

// The tunnel's bytes from the LB (after the 101), recorded as they are.
void up_tunnel_input(UpConn* u, const char* at, size_t len) {
  World* w = u->w;
  if (len == 0) return;
  w->up_tunnel_in.append(at, len);
  if (w->on_up_tunnel_data) w->on_up_tunnel_data(w);
}

// Parses everything the LB sent. An upgrade request the upstream does not switch for (no up_switch)
// is an ordinary one: the parser goes on after it, as an HTTP/1.1 server that ignores Upgrade does.
// After a switch the rest is the tunnel's.
void up_on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  UpConn* u = reinterpret_cast<UpConn*>(s);
  World* w = u->w;
  w->progress++;
  if (u->tunnel) {
    if (u->id >= 0 && nread > 0) w->up_raw[u->id].append(buf->base, static_cast<size_t>(nread));
    if (nread > 0) {
      up_tunnel_input(u, buf->base, static_cast<size_t>(nread));
      return;
    }
    // The LB ended its side: closed once our own half-close (if asked for) went out.
    u->eof = true;
    w->up_tunnel_eof = true;
    if (w->on_up_tunnel_data) w->on_up_tunnel_data(w);
    if (nread != UV_EOF || !w->up_tunnel_shut || u->shut_done) up_close(u);
    else uv_read_stop(s);
    return;
  }
  if (nread < 0) {
    // The LB closed the connection. A request cut short stays incomplete in up_reqs: the oracle
    // decides whether the LB was allowed to cut it.
    up_close(u);
    return;
  }
  if (u->id >= 0) w->up_raw[u->id].append(buf->base, static_cast<size_t>(nread));
  const char* at = buf->base;
  size_t left = static_cast<size_t>(nread);
  while (left > 0) {
    llhttp_errno_t e = llhttp_execute(&u->parser, at, left);
    if (e == HPE_OK) break;
    if ((e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) && u->tunnel) {
      const char* pos = llhttp_get_error_pos(&u->parser);
      up_tunnel_input(u, pos, left - static_cast<size_t>(pos - at));
      break;
    }
    if (e == HPE_PAUSED_UPGRADE) {
      const char* pos = llhttp_get_error_pos(&u->parser);
      left -= static_cast<size_t>(pos - at);
      at = pos;
      llhttp_resume_after_upgrade(&u->parser);
      continue;
    }
    if (u->id < 0) {
      up_close(u);
      return;
    }
    size_t offset = w->up_raw[u->id].size() - left + static_cast<size_t>(llhttp_get_error_pos(&u->parser) - at);
    fuzz_breach(w, nullptr, 0,
                "the upstream received bytes that are not an HTTP request on connection %d at byte %zu "
                "(%s): the LB sent something it did not accept as a request (smuggling)",
                u->id, offset, llhttp_get_error_reason(&u->parser));
  }
}

void up_on_connection(uv_stream_t* server, int status) {
  World* w = static_cast<World*>(server->data);
  if (status != 0) return;
  UpConn* u = new UpConn();
  u->w = w;
  uv_tcp_init(&w->loop, &u->tcp);
  u->tcp.data = u;
  w->up_open++;
  w->progress++;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&u->tcp)) != 0) {
    up_close(u);
    return;
  }
  if (w->recording) {
    u->id = w->up_conns++;
    w->up_raw.emplace_back();
  }
  llhttp_init(&u->parser, HTTP_REQUEST, up_settings());
  u->parser.data = u;
  uv_read_start(reinterpret_cast<uv_stream_t*>(&u->tcp), up_on_alloc, up_on_read);
}

// --- the client --------------------------------------------------------------------------------------

void client_on_closed(uv_handle_t* h) {
  World* w = static_cast<World*>(h->data);
  w->client_open = false;
  w->progress++;
}

void client_on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  static char slab[64 * 1024];
  *buf = uv_buf_init(slab, sizeof slab);
}

void client_on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  World* w = static_cast<World*>(s->data);
  w->progress++;
  if (nread < 0) {
    w->client_eof = true;
    world_client_close(w);
    return;
  }
  w->client_in.append(buf->base, static_cast<size_t>(nread));
  if (w->on_client_data) w->on_client_data(w);
}

void client_on_connect(uv_connect_t* req, int status) {
  World* w = static_cast<World*>(req->data);
  w->progress++;
  if (status != 0) {
    // Local ports ran out (EADDRNOTAVAIL on a machine busy with other connections): the input is
    // skipped, not reported, since the LB was never exercised.
    fprintf(stderr, "fuzz: cannot connect to the LB (%s): input skipped\n", uv_strerror(status));
    w->client_failed = true;
    world_client_close(w);
    return;
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&w->client), client_on_alloc, client_on_read);
  if (w->on_client_connected) w->on_client_connected(w);
}

uint16_t port_of(const uv_tcp_t* tcp) {
  struct sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getsockname(tcp, reinterpret_cast<struct sockaddr*>(&addr), &len) != 0) abort();
  return ntohs(reinterpret_cast<struct sockaddr_in*>(&addr)->sin_port);
}

void on_walk(uv_handle_t* h, void*) {
  fprintf(stderr, "fuzz:   open handle: %s%s\n", uv_handle_type_name(h->type),
          uv_is_closing(h) ? " (closing)" : "");
}

void on_noop_closed(uv_handle_t*) {}

}  // namespace

std::string fuzz_escape(const std::string& s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; i++) {
    unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch == '\r') out += "\\r";
    else if (ch == '\n') out += "\\n";
    else if (ch == '\\') out += "\\\\";
    else if (ch < 0x20 || ch >= 0x7f) {
      char hex[8];
      snprintf(hex, sizeof hex, "\\x%02x", ch);
      out += hex;
    } else {
      out.push_back(static_cast<char>(ch));
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

static std::shared_ptr<TlsContext> g_tls;

void world_set_tls(std::shared_ptr<TlsContext> ctx) { g_tls = std::move(ctx); }

void world_up_write(World* w, const char* data, size_t len) {
  UpConn* u = static_cast<UpConn*>(w->up_tunnel);
  if (u == nullptr || u->closing || w->up_tunnel_shut) return;
  stream_write(reinterpret_cast<uv_stream_t*>(&u->tcp), std::string(data, len));
}

void world_up_shutdown(World* w) {
  UpConn* u = static_cast<UpConn*>(w->up_tunnel);
  if (u == nullptr || u->closing || w->up_tunnel_shut) return;
  w->up_tunnel_shut = true;
  struct Shut {
    static void on_done(uv_shutdown_t* req, int) {
      UpConn* c = static_cast<UpConn*>(req->data);
      delete req;
      c->shut_done = true;
      c->w->progress++;
      if (c->eof) up_close(c);
    }
  };
  uv_shutdown_t* req = new uv_shutdown_t;
  req->data = u;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&u->tcp), Shut::on_done) != 0) {
    delete req;
    u->shut_done = true;
    if (u->eof) up_close(u);
  }
}

static const uint8_t* g_input = nullptr;
static size_t g_input_len = 0;

void fuzz_breach(const World* w, const uint8_t* input, size_t len, const char* fmt, ...) {
  if (input == nullptr) {
    input = g_input;
    len = g_input_len;
  }
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nfuzz: ORACLE BREACH: %s\n", msg);
  if (input) fprintf(stderr, "fuzz: input (%zu bytes): \"%s\"\n", len,
                     fuzz_escape(std::string(reinterpret_cast<const char*>(input), len)).c_str());
  if (w) {
    for (size_t i = 0; i < w->up_raw.size(); i++)
      fprintf(stderr, "fuzz: upstream connection %zu received: \"%s\"\n", i, fuzz_escape(w->up_raw[i]).c_str());
    fprintf(stderr, "fuzz: client received: \"%s\"\n", fuzz_escape(w->client_in).c_str());
  }
  abort();
}

// The input a target is running, for fuzz_breach called from inside the world (the upstream).
void fuzz_set_input(const uint8_t* data, size_t len) {
  g_input = data;
  g_input_len = len;
}

World* world_start(AnswerFn answer, void* ctx) {
  static bool once = false;
  if (!once) {
    once = true;
    // FUZZ_DEBUG=1 shows the LB's debug lines (to read what it did with one input).
    log_set_level(getenv("FUZZ_DEBUG") != nullptr ? LogLevel::debug : LogLevel::error);
    signal(SIGPIPE, SIG_IGN);
  }
  World* w = new World();
  w->answer = answer;
  w->ctx = ctx;
  if (uv_loop_init(&w->loop) != 0) abort();

  // Thousands of inputs a minute leave sockets in TIME_WAIT, and a port with one on its listening
  // side cannot be chosen by bind(port 0) or connect() for a minute: with a new upstream port per
  // input the ephemeral range ran out after a few minutes (connect failed). So the world avoids
  // TIME_WAIT on listening ports (the client closes with a reset, the heartbeat probe closes first),
  // and the upstream, which half-closes in the response target, listens on the same port for every
  // input (SO_REUSEADDR, libuv's default, allows it), falling back to a fresh one if it was taken.
  static uint16_t up_port = 0;
  struct sockaddr_in addr;
  int rc = -1;
  for (int attempt = 0; attempt < 2 && rc != 0; attempt++) {
    if (attempt > 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&w->up_listener), nullptr);
      uv_run(&w->loop, UV_RUN_NOWAIT);
      up_port = 0;
    }
    uv_tcp_init(&w->loop, &w->up_listener);
    w->up_listener.data = w;
    uv_ip4_addr("127.0.0.1", up_port, &addr);
    rc = uv_tcp_bind(&w->up_listener, reinterpret_cast<struct sockaddr*>(&addr), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&w->up_listener), 128, up_on_connection);
  }
  if (rc != 0) {
    fprintf(stderr, "fuzz: the upstream cannot listen on 127.0.0.1: %s\n", uv_strerror(rc));
    abort();
  }
  w->up_port = up_port = port_of(&w->up_listener);

  // Timeouts short enough that nothing legitimate outlives a run, long enough for a loaded machine.
  Config& c = w->cfg;
  c.listen = "127.0.0.1:0";
  c.admin_listen = "127.0.0.1:0";  // every request on the main listener is proxied
  c.provisioner = ProvKind::static_list;
  c.backends = {"127.0.0.1:" + std::to_string(w->up_port)};
  c.hb_interval_ms = 3600 * 1000;  // one heartbeat at start, none while the input runs
  c.hb_timeout_ms = 2000;
  c.connect_timeout_ms = 2000;
  c.upstream_timeout_ms = 3000;
  c.header_timeout_ms = 3000;
  c.idle_timeout_ms = 5000;
  c.workers = 1;
  c.tls = g_tls;
  w->prov = prov_static_create(&w->loop, c.backends);
  std::string err;
  if (registry_init(&w->reg, &w->loop, &w->cfg, w->prov, &err) != 0 ||
      control_start(&w->control, &w->loop, &w->cfg, &w->reg, &err) != 0) {
    fprintf(stderr, "fuzz: the LB did not start: %s\n", err.c_str());
    abort();
  }
  const std::string& bound = w->control.listen_bound;
  w->lb_port = static_cast<uint16_t>(atoi(bound.c_str() + bound.rfind(':') + 1));

  uint64_t until = uv_now(&w->loop) + 5000;
  for (;;) {
    if (!w->reg.replicas.empty() && w->reg.replicas[0]->state == ReplicaState::healthy) break;
    if (uv_now(&w->loop) > until) {
      fprintf(stderr, "fuzz: the upstream did not become healthy within 5 s\n");
      abort();
    }
    uv_run(&w->loop, UV_RUN_ONCE);
  }
  world_sync(w);  // the worker routes by the snapshot with the upstream healthy, not only the registry
  w->recording = true;
  return w;
}

void world_client_connect(World* w) {
  uv_tcp_init(&w->loop, &w->client);
  w->client.data = w;
  w->client_open = true;
  w->client_connect.data = w;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", w->lb_port, &addr);
  int rc = uv_tcp_connect(&w->client_connect, &w->client, reinterpret_cast<struct sockaddr*>(&addr),
                          client_on_connect);
  if (rc != 0) {
    fprintf(stderr, "fuzz: cannot connect to the LB (%s): input skipped\n", uv_strerror(rc));
    w->client_failed = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&w->client), client_on_closed);
  }
}

void world_client_write(World* w, const char* data, size_t len) {
  if (!w->client_open || uv_is_closing(reinterpret_cast<uv_handle_t*>(&w->client))) return;
  stream_write(reinterpret_cast<uv_stream_t*>(&w->client), std::string(data, len));
}

void world_client_shutdown(World* w) {
  if (!w->client_open || uv_is_closing(reinterpret_cast<uv_handle_t*>(&w->client))) return;
  stream_shutdown(reinterpret_cast<uv_stream_t*>(&w->client));
}

// With a reset: the client has read what it wanted (or the LB's end), and a reset leaves no TIME_WAIT
// socket on the LB's listening port (see world_start).
void world_client_close(World* w) {
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&w->client);
  if (!w->client_open || uv_is_closing(h)) return;
  if (uv_tcp_close_reset(&w->client, client_on_closed) != 0) uv_close(h, client_on_closed);
}

bool world_run_client(World* w, uint64_t stall_ms) {
  uint64_t seen = w->progress;
  uint64_t since = uv_now(&w->loop);
  while (w->client_open) {
    uv_run(&w->loop, UV_RUN_ONCE);
    if (w->progress != seen) {
      seen = w->progress;
      since = uv_now(&w->loop);
      continue;
    }
    if (uv_now(&w->loop) - since < stall_ms) continue;
    // Nothing moved for stall_ms. Poll a few times without waiting before calling it a stall, in
    // case the process itself was not scheduled (the timers ran before the I/O that was ready).
    for (int i = 0; i < 4 && w->progress == seen; i++) uv_run(&w->loop, UV_RUN_NOWAIT);
    if (w->progress != seen) continue;
    return false;
  }
  return true;
}

void world_run_quiet(World* w, uint64_t quiet_ms, uint64_t max_ms) {
  struct Tick {
    uv_timer_t timer;
    bool closed = false;
    static void on_tick(uv_timer_t*) {}  // wakes the loop up to look at the clock
    static void on_closed(uv_handle_t* h) { reinterpret_cast<Tick*>(h)->closed = true; }
  } tick;
  uv_timer_init(&w->loop, &tick.timer);
  uv_timer_start(&tick.timer, Tick::on_tick, quiet_ms, quiet_ms);
  uint64_t start = uv_now(&w->loop);
  uint64_t seen = w->progress;
  uint64_t since = start;
  while (w->client_open && uv_now(&w->loop) - start < max_ms) {
    uv_run(&w->loop, UV_RUN_ONCE);
    if (w->progress != seen) {
      seen = w->progress;
      since = uv_now(&w->loop);
    } else if (uv_now(&w->loop) - since >= quiet_ms) {
      break;
    }
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick.timer), Tick::on_closed);
  while (!tick.closed) uv_run(&w->loop, UV_RUN_NOWAIT);
}

void world_sync(World* w) {
  bool synced = false;
  control_after_sync(&w->control, [&synced](const Snapshot&) { synced = true; });
  uint64_t until = uv_now(&w->loop) + 5000;
  while (!synced) {
    if (uv_now(&w->loop) > until) {
      fprintf(stderr, "fuzz: the worker did not answer a sync within 5 s\n");
      abort();
    }
    uv_run(&w->loop, UV_RUN_ONCE);
  }
}

uint64_t world_replica_requests(World* w) {
  world_sync(w);
  uint64_t n = 0;
  for (const Replica* r : w->reg.replicas) n += r->requests;
  return n;
}

void world_stop(World* w) {
  world_client_close(w);
  control_stop(&w->control, [w]() {
    registry_close(&w->reg, false, [w]() {
      w->lb_stopped = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&w->up_listener), nullptr);
    });
  });
  // Everything the LB opened closes in a few iterations; the upstream closes each connection when
  // it sees the LB's end of it. A handle still open after 5 s is a leak.
  uv_timer_t guard;
  uv_timer_init(&w->loop, &guard);
  uv_unref(reinterpret_cast<uv_handle_t*>(&guard));
  struct Guard {
    static void on_timer(uv_timer_t* t) {
      fprintf(stderr, "fuzz: handles still open 5 s after the LB was stopped:\n");
      uv_walk(t->loop, on_walk, nullptr);
      abort();
    }
  };
  uv_timer_start(&guard, Guard::on_timer, 5000, 0);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), on_noop_closed);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (!w->lb_stopped) {
    fprintf(stderr, "fuzz: the LB never reported it had stopped\n");
    abort();
  }
  delete w->prov;
  w->prov = nullptr;
  if (!w->control.loops_clean) {
    fprintf(stderr, "fuzz: the worker's loop had handles left open at its close\n");
    abort();
  }
  if (uv_loop_close(&w->loop) != 0) {
    fprintf(stderr, "fuzz: uv_loop_close failed: handles left open:\n");
    uv_walk(&w->loop, on_walk, nullptr);
    abort();
  }
  delete w;
}
