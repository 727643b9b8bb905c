#include "bench/loadgen/run.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/loadgen/zipf.h"
#include "lb/http/container_of.h"
#include "lb/http/http_conn.h"

namespace {

constexpr size_t kReadBuffer = 8 * 1024;
constexpr size_t kBodyKeep = 256;         // body bytes kept for the replica ID
constexpr uint64_t kConnectPauseMs = 10;  // after a failed connect
constexpr uint64_t kProgressMs = 1000;

struct LgRun;

// Where a connection's socket is. A request may be in flight in connecting and open only.
enum class Link : uint8_t { closed, connecting, open, closing };

// One client connection. Its HttpConn is re-initialised for every new socket (http_conn_init allows
// it after on_close); the memory lives as long as the run.
struct LgConn {
  HttpConn http;  // the owner is recovered from it with container_of (conn_of)
  LgRun* run = nullptr;
  uv_timer_t timer;  // the request's timeout, or the pause after a failed connect
  uv_connect_t connect_req;
  Link link = Link::closed;
  bool in_request = false;  // started and not yet ended
  bool waiting = false;     // in the run's waiter list, for a rate token
  bool pausing = false;     // timer runs the pause after a failed connect
  bool pause_after_close = false;
  bool retiring = false;  // no more requests: done once the socket is closed
  bool done = false;
  int status = 0;
  uint64_t start_ns = 0;  // of the request in flight: when it was sent
  uint64_t clock_ns = 0;  // where its latency counts from (run_grant's `due`)
  std::string request;    // the request bytes; the X-Request-Id digits are patched in place
  size_t rid_offset = 0;  // of the 6 digits, when --rid
  size_t body_len = 0;
  char body[kBodyKeep];
  LgConn* next_waiter = nullptr;
};

struct LgRun {
  uv_loop_t* loop;
  const LoadgenOptions* o;
  LgStats* stats;
  RunResult* result;
  std::vector<LgConn> conns;  // sized once: handles are embedded
  uv_timer_t pace, duration, limit, progress;
  uv_signal_t sigint, sigterm;
  uint64_t issued = 0;           // requests granted
  uint64_t period_ns = 0;        // 1/rate
  uint64_t duration_end_ns = 0;  // 0: no duration
  uint64_t last_free_ns = 0;     // --rate: the last time a connection was free for a token
  uint64_t rid_state = 0;
  Zipf zipf;              // --zipf: the key sampler
  FILE* log = nullptr;    // --log: one line per finished request
  bool no_more = false;  // no request may start any more
  uint32_t active = 0;   // connections not done
  LgConn* waiters_head = nullptr;
  LgConn* waiters_tail = nullptr;
  uint64_t progress_last_responses = 0;
  uint64_t progress_last_ns = 0;
};

// The connection that embeds h: every HttpConn this file hands to the HTTP layer is an LgConn's.
LgConn* conn_of(HttpConn* h) {
  return container_of(h, &LgConn::http);
}

// splitmix64: a fast, seedable source for request ids.
uint64_t next_random(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Builds the request bytes once per connection; only the request id changes between requests.
void build_request(const LoadgenOptions& o, LgConn* c) {
  std::string& r = c->request;
  r = o.method + " " + o.path + (o.keepalive ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
  r += "Host: " + o.host_header + "\r\nUser-Agent: ringlb-loadgen\r\n";
  if (o.rid || o.zipf >= 0) {
    r += "X-Request-Id: ";
    c->rid_offset = r.size();
    r += "000000\r\n";
  }
  if (o.method == "POST") {
    r +=
        "Content-Type: application/octet-stream\r\nContent-Length: " + std::to_string(o.body_size) +
        "\r\n";
  }
  r += "\r\n";
  r.append(o.body_size, 'x');
}

void conn_next(LgConn* c, bool waited = false);
void conn_after_close(LgConn* c);
void run_finish(LgRun* r);

// ---- the run's grants: count, duration and rate ----

enum class Grant : uint8_t { now, later, none };

uint64_t run_due_ns(const LgRun* r) {
  return r->stats->start_ns + r->issued * r->period_ns;
}

// Whether a request may start now; counts it when it may. With --rate, *due is where its latency
// counts from. A token handed to a connection that waited for it, or taken while others wait, is
// late by the pace timer's millisecond at most: the load generator's own delay, so now. A token
// taken by a connection that was busy until now is late because the target held every connection
// back: its latency counts from the time the schedule gave it (a client of a real service would
// have waited that long: no coordinated omission), but not from before the last moment a
// connection sat free, since from then on the delay was the load generator's (a stalled process
// whose timer fired late), not the target's. waited says the connection was waiting for this token.
Grant run_grant(LgRun* r, uint64_t now, bool waited, uint64_t* due) {
  *due = now;
  if (r->no_more) return Grant::none;
  if (r->o->requests && r->issued >= r->o->requests) {
    r->no_more = true;
    r->result->end = RunEnd::count;
    return Grant::none;
  }
  if (r->duration_end_ns && now >= r->duration_end_ns) {
    r->no_more = true;
    r->result->end = RunEnd::duration;
    return Grant::none;
  }
  if (r->period_ns) {
    uint64_t scheduled = run_due_ns(r);
    if (now < scheduled) return Grant::later;
    if (waited || r->waiters_head != nullptr)
      r->last_free_ns = now;
    else
      *due = std::max(scheduled, r->last_free_ns);
  }
  r->issued++;
  return Grant::now;
}

void on_pace(uv_timer_t* t);

// Arms the pace timer for the next rate token (ms granularity; run_grant checks the exact time).
void run_arm_pace(LgRun* r) {
  uint64_t now = uv_hrtime(), due = run_due_ns(r);
  uint64_t ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_timer_start(&r->pace, on_pace, ms, 0);
}

void run_wait(LgRun* r, LgConn* c) {
  c->waiting = true;
  c->next_waiter = nullptr;
  if (r->waiters_tail)
    r->waiters_tail->next_waiter = c;
  else
    r->waiters_head = c;
  r->waiters_tail = c;
  if (r->waiters_head == c) run_arm_pace(r);
}

LgConn* run_pop_waiter(LgRun* r) {
  LgConn* c = r->waiters_head;
  if (c == nullptr) return nullptr;
  r->waiters_head = c->next_waiter;
  if (r->waiters_head == nullptr) r->waiters_tail = nullptr;
  c->next_waiter = nullptr;
  c->waiting = false;
  return c;
}

// Hands due tokens to waiting connections, in the order they began to wait. When no more requests
// may start, every waiter is let go (it retires).
void run_release_waiters(LgRun* r) {
  while (r->waiters_head && (r->no_more || run_due_ns(r) <= uv_hrtime()))
    conn_next(run_pop_waiter(r), true);
  if (r->waiters_head)
    run_arm_pace(r);
  else
    uv_timer_stop(&r->pace);
}

void on_pace(uv_timer_t* t) {
  run_release_waiters(static_cast<LgRun*>(t->data));
}

// No request may start any more (count, duration): free connections retire, busy ones finish.
void run_stop_granting(LgRun* r, RunEnd why) {
  if (!r->no_more) r->result->end = why;
  r->no_more = true;
  run_release_waiters(r);
}

// ---- one connection ----

void conn_done(LgConn* c) {
  LgRun* r = c->run;
  c->done = true;
  uv_timer_stop(&c->timer);
  if (--r->active == 0) run_finish(r);
}

// No more requests for this connection: close its socket, then it is done.
void conn_retire(LgConn* c) {
  c->retiring = true;
  if (c->link == Link::open || c->link == Link::connecting) {
    c->link = Link::closing;
    http_conn_close(&c->http);
  } else if (c->link == Link::closed) {
    conn_done(c);
  }  // closing: on_close finishes it
}

// --log: the request that just ended, as "start_us end_us key status replica" (status 0 for an
// error; key and replica '-' when there is none).
void conn_log(LgConn* c, int status, std::string_view body) {
  LgRun* r = c->run;
  if (r->log == nullptr) return;
  uint64_t now = uv_hrtime(), t0 = r->stats->start_ns;
  std::string_view key = "-", id = "-";
  if (c->rid_offset != 0) key = std::string_view(c->request).substr(c->rid_offset, 6);
  if (status != 0 && !stats_replica_id(body, &id)) id = "-";
  fprintf(r->log, "%" PRIu64 " %" PRIu64 " %.*s %d %.*s\n", (c->start_ns - t0) / 1000,
          (now - t0) / 1000, static_cast<int>(key.size()), key.data(), status,
          static_cast<int>(id.size()), id.data());
}

void conn_end_request(LgConn* c) {
  c->in_request = false;
  uv_timer_stop(&c->timer);
}

// The request in flight failed: count it, close the socket (reset on timeout, so no TIME_WAIT is
// left behind), and go on once it is closed.
void conn_fail(LgConn* c, LgError kind) {
  stats_error(c->run->stats, c->start_ns, uv_hrtime(), kind);
  conn_log(c, 0, {});
  conn_end_request(c);
  c->pause_after_close = kind == LgError::connect_refused || kind == LgError::connect;
  if (c->link == Link::open || c->link == Link::connecting) {
    c->link = Link::closing;
    http_conn_close(&c->http, kind == LgError::timeout);
  } else if (c->link == Link::closed) {
    conn_after_close(c);
  }
}

void on_timer(uv_timer_t* t);

void conn_send(LgConn* c) {
  LgRun* r = c->run;
  if (r->o->rid) {
    uint32_t rid = 100000 + static_cast<uint32_t>(next_random(&r->rid_state) % 900000);
    char* d = &c->request[c->rid_offset];
    for (int i = 5; i >= 0; i--, rid /= 10) d[i] = static_cast<char>('0' + rid % 10);
  } else if (r->o->zipf >= 0) {
    zipf_key(zipf_next(&r->zipf), &c->request[c->rid_offset]);
  }
  c->status = 0;
  c->body_len = 0;
  int rc = http_conn_write(&c->http, c->request.data(), c->request.size());
  if (rc != 0) {
    conn_fail(c, stats_error_kind(rc));
    return;
  }
  r->stats->written++;
}

void on_connect(uv_connect_t* req, int status) {
  LgConn* c = static_cast<LgConn*>(req->data);
  if (status == UV_ECANCELED || c->link != Link::connecting) return;  // closed meanwhile
  if (status < 0) {
    conn_fail(c, status == UV_ECONNREFUSED ? LgError::connect_refused : LgError::connect);
    return;
  }
  c->link = Link::open;
  c->run->stats->connects++;
  int rc = http_conn_start(&c->http);
  if (rc != 0) {
    conn_fail(c, LgError::other);
    return;
  }
  conn_send(c);
}

void conn_connect(LgConn* c);

// Starts the granted request, its latency counted from clock: connects first when the connection
// has no socket.
void conn_begin(LgConn* c, uint64_t now, uint64_t clock) {
  LgRun* r = c->run;
  c->in_request = true;
  c->start_ns = now;
  c->clock_ns = clock;
  stats_started(r->stats, now);
  uv_timer_start(&c->timer, on_timer, r->o->timeout_ms, 0);
  if (c->link == Link::open)
    conn_send(c);
  else
    conn_connect(c);
}

void on_http_head(HttpConn* h);
void on_http_body(HttpConn* h, const char* data, size_t len);
HttpNext on_http_message_end(HttpConn* h);
void on_http_error(HttpConn* h, int err);
void on_http_close(HttpConn* h);

const HttpConnHandlers kHandlers = {on_http_head,  on_http_body, on_http_message_end,
                                    on_http_error, nullptr,      on_http_close};

void conn_connect(LgConn* c) {
  LgRun* r = c->run;
  int rc = http_conn_init(r->loop, &c->http, HTTP_RESPONSE, &kHandlers, kReadBuffer);
  if (rc != 0) {
    conn_fail(c, LgError::connect);  // link stays closed
    return;
  }
  c->link = Link::connecting;
  uv_tcp_nodelay(&c->http.tcp, 1);
  c->connect_req.data = c;
  rc = uv_tcp_connect(&c->connect_req, &c->http.tcp,
                      reinterpret_cast<const struct sockaddr*>(&r->o->addr), on_connect);
  if (rc != 0) conn_fail(c, rc == UV_ECONNREFUSED ? LgError::connect_refused : LgError::connect);
}

// The connection is free: start the next request, wait for the rate, or retire (waited: it was
// waiting for a rate token). A connection whose socket is still closing goes on from its on_close
// instead, so a handle is never re-initialised before libuv is done with it.
void conn_next(LgConn* c, bool waited) {
  LgRun* r = c->run;
  if (c->link == Link::closing) return;
  uint64_t now = uv_hrtime(), due;
  switch (run_grant(r, now, waited, &due)) {
    case Grant::now:
      conn_begin(c, now, due);
      return;
    case Grant::later:
      run_wait(r, c);
      return;
    case Grant::none:
      conn_retire(c);
      return;
  }
}

// The socket is closed (or was never opened): retire, pause after a failed connect, or go on.
void conn_after_close(LgConn* c) {
  if (c->retiring) {
    conn_done(c);
  } else if (c->waiting) {
    // A rate token will come; the connection connects then.
  } else if (c->pause_after_close && !c->run->no_more) {
    c->pause_after_close = false;
    c->pausing = true;
    uv_timer_start(&c->timer, on_timer, kConnectPauseMs, 0);
  } else {
    conn_next(c);
  }
}

void on_timer(uv_timer_t* t) {
  LgConn* c = static_cast<LgConn*>(t->data);
  if (c->in_request) {
    conn_fail(c, LgError::timeout);
  } else if (c->pausing) {
    c->pausing = false;
    conn_next(c);
  }
}

void on_http_head(HttpConn* h) {
  LgConn* c = conn_of(h);
  c->status = h->head.status;
  c->body_len = 0;
}

void on_http_body(HttpConn* h, const char* data, size_t len) {
  LgConn* c = conn_of(h);
  size_t room = kBodyKeep - c->body_len;
  if (len > room) len = room;
  memcpy(c->body + c->body_len, data, len);
  c->body_len += len;
  c->run->stats->body_bytes += len;
}

HttpNext on_http_message_end(HttpConn* h) {
  LgConn* c = conn_of(h);
  LgRun* r = c->run;
  if (!c->in_request) {  // a response nobody asked for
    c->link = Link::closing;
    http_conn_close(h);
    return HttpNext::pause;
  }
  stats_response(r->stats, c->start_ns, c->clock_ns, uv_hrtime(), c->status,
                 std::string_view(c->body, c->body_len));
  conn_log(c, c->status, std::string_view(c->body, c->body_len));
  conn_end_request(c);
  if (!r->o->keepalive || !h->head.keep_alive) {
    c->link = Link::closing;
    http_conn_close(h);
    return HttpNext::pause;
  }
  // Keep parsing: a peer's close while the connection waits for its next request is seen at once.
  conn_next(c);
  return HttpNext::parse;
}

void on_http_error(HttpConn* h, int err) {
  LgConn* c = conn_of(h);
  if (c->in_request) {
    conn_fail(c, stats_error_kind(err));
    return;
  }
  // An idle keep-alive connection closed by the peer: not a failed request; reconnect when needed.
  c->link = Link::closing;
  http_conn_close(h);
}

void on_http_close(HttpConn* h) {
  LgConn* c = conn_of(h);
  c->link = Link::closed;
  conn_after_close(c);
}

// ---- the run ----

// Ends the run at once (hard time limit, signal): requests in flight become unfinished.
void run_abort(LgRun* r, RunEnd why) {
  if (r->active == 0) return;
  r->result->end = why;
  r->no_more = true;
  r->result->end_ns = uv_hrtime();
  while (LgConn* c = run_pop_waiter(r)) conn_retire(c);
  for (LgConn& c : r->conns) {
    if (c.done || c.retiring) continue;
    if (c.in_request) {
      stats_unfinished(r->stats);
      conn_end_request(&c);
    }
    c.pausing = false;
    conn_retire(&c);
  }
}

void on_duration(uv_timer_t* t) {
  LgRun* r = static_cast<LgRun*>(t->data);
  run_stop_granting(r, RunEnd::duration);
}

void on_limit(uv_timer_t* t) {
  run_abort(static_cast<LgRun*>(t->data), RunEnd::time_limit);
}

void on_signal(uv_signal_t* s, int) {
  run_abort(static_cast<LgRun*>(s->data), RunEnd::signal);
}

void on_progress(uv_timer_t* t) {
  LgRun* r = static_cast<LgRun*>(t->data);
  const LgStats* s = r->stats;
  uint64_t now = uv_hrtime();
  double since = static_cast<double>(now - r->progress_last_ns) / 1e9;
  double rps =
      since > 0 ? static_cast<double>(s->responses - r->progress_last_responses) / since : 0;
  r->progress_last_ns = now;
  r->progress_last_responses = s->responses;
  uint64_t in_flight = s->started - s->responses - s->errors - s->unfinished;
  fprintf(stderr,
          "loadgen: %5.1fs  %" PRIu64 " started  %" PRIu64 " ok  %" PRIu64
          " failed  %.0f req/s  "
          "%" PRIu64 " in flight\n",
          static_cast<double>(now - s->start_ns) / 1e9, s->started, s->ok, s->failed, rps,
          in_flight);
}

void close_handle(void* handle) {
  uv_handle_t* h = static_cast<uv_handle_t*>(handle);
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

// Every connection is done: close the run's own handles so the loop returns.
void run_finish(LgRun* r) {
  if (r->result->end_ns == 0) {
    r->result->end_ns = r->stats->last_end_ns ? r->stats->last_end_ns : uv_hrtime();
  }
  close_handle(&r->pace);
  close_handle(&r->duration);
  close_handle(&r->limit);
  close_handle(&r->progress);
  close_handle(&r->sigint);
  close_handle(&r->sigterm);
  for (LgConn& c : r->conns) close_handle(&c.timer);
}

}  // namespace

const char* run_end_name(RunEnd e) {
  switch (e) {
    case RunEnd::count:
      return "count";
    case RunEnd::duration:
      return "duration";
    case RunEnd::time_limit:
      return "time_limit";
    case RunEnd::signal:
      return "signal";
  }
  return "?";
}

int run_load(uv_loop_t* loop, const LoadgenOptions& o, LgStats* stats, RunResult* result) {
  LgRun r{};
  r.loop = loop;
  r.o = &o;
  r.stats = stats;
  r.result = result;
  r.conns = std::vector<LgConn>(o.connections);
  r.rid_state = o.seed;
  if (o.zipf >= 0) zipf_init(&r.zipf, o.keys, o.zipf, o.seed);
  if (!o.log_path.empty()) {
    r.log = fopen(o.log_path.c_str(), "w");
    if (r.log == nullptr) return -errno;
  }
  if (o.rate > 0) r.period_ns = static_cast<uint64_t>(std::llround(1e9 / o.rate));
  if (r.period_ns == 0 && o.rate > 0) r.period_ns = 1;

  uv_timer_init(loop, &r.pace);
  uv_timer_init(loop, &r.duration);
  uv_timer_init(loop, &r.limit);
  uv_timer_init(loop, &r.progress);
  uv_signal_init(loop, &r.sigint);
  uv_signal_init(loop, &r.sigterm);
  r.pace.data = r.duration.data = r.limit.data = r.progress.data = &r;
  r.sigint.data = r.sigterm.data = &r;
  for (LgConn& c : r.conns) {
    c.run = &r;
    uv_timer_init(loop, &c.timer);
    c.timer.data = &c;
    c.http.owner = &c;
    build_request(o, &c);
  }

  uv_update_time(loop);
  uint64_t start = uv_hrtime();
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  result->start_unix_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
  result->start_ns = start;
  result->end = o.requests ? RunEnd::count : RunEnd::duration;
  stats_init(stats, start, o.interval_ms, o.time_limit_s);
  r.progress_last_ns = start;
  r.last_free_ns = start;
  if (o.duration_s > 0) {
    uint64_t ms = static_cast<uint64_t>(std::ceil(o.duration_s * 1000));
    r.duration_end_ns = start + static_cast<uint64_t>(std::llround(o.duration_s * 1e9));
    uv_timer_start(&r.duration, on_duration, ms, 0);
  }
  uv_timer_start(&r.limit, on_limit, static_cast<uint64_t>(std::ceil(o.time_limit_s * 1000)), 0);
  if (!o.quiet) uv_timer_start(&r.progress, on_progress, kProgressMs, kProgressMs);
  uv_signal_start(&r.sigint, on_signal, SIGINT);
  uv_signal_start(&r.sigterm, on_signal, SIGTERM);

  r.active = o.connections;
  for (LgConn& c : r.conns) {
    if (c.done || c.retiring) continue;  // the count was reached by earlier connections
    conn_next(&c);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  if (r.log != nullptr && fclose(r.log) != 0) return -errno;
  return 0;
}
