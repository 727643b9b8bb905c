#include "lb/data/exchange.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "lb/data/forward.h"
#include "lb/data/h2_client.h"
#include "lb/http/tls.h"
#include "lb/data/routing.h"
#include "lb/data/upstream.h"
#include "lb/data/worker_state.h"
#include "lb/http/container_of.h"
#include "lb/http/http_response.h"
#include "lb/http/http_validate.h"
#include "lb/log.h"

namespace {

constexpr size_t kReadBuffer = 16 * 1024;
constexpr size_t kReqHeadReserve = 1024;
constexpr size_t kOutReserve = 512;
// Closed clients kept per worker for the next accepts: a new connection per request (HTTP/1.0, ab,
// Connection: close) then costs no allocation for the connection, its read buffer, its head and its
// strings (about 3,000 user-space instructions of malloc and free per connection, measured with
// callgrind). Bounded: 64 x ~20 KiB per worker (with 32, 64 clients reconnecting at once on one
// worker allocated half of them anew); spares not taken for kSpareTrimMs are freed, so memory
// kept for a burst of clients is given back once the burst is over.
constexpr size_t kSpareClients = 64;
constexpr uint64_t kSpareTrimMs = 1000;
// A spare keeps a string's buffer up to this size; a larger one (a big head, an admin answer) is
// freed, so the spares' memory stays bounded by the reserves above whatever the last clients sent.
constexpr size_t kSpareKeepMax = 4096;
constexpr size_t kHighWater = 256 * 1024;  // bytes queued on one side before the other stops reading
// Bytes queued for a client past which its next pipelined request waits: none. A client that reads
// its answers has nothing queued (writes go straight to the socket), so pipelining costs it nothing;
// one that does not read holds at most one response in the LB, as with HAProxy and NGINX.
constexpr size_t kPipelineQueueMax = 0;

ClientConn* client_of(HttpConn* hc) { return container_of(hc, &ClientConn::conn); }
UpstreamConn* up_of(HttpConn* hc) { return container_of(hc, &UpstreamConn::conn); }

// The client side's I/O: the exchange's own HTTP/1 connection, or its side (an HTTP/2 stream,
// ClientConn::side) for an exchange that has none. A side has no "close": it is reset.
void client_close(ClientConn* c, bool reset = false) {
  if (c->side != nullptr) c->side->reset(c);
  else http_conn_close(&c->conn, reset);
}
void client_stop(ClientConn* c) {
  if (c->side != nullptr) c->side->stop_reading(c);
  else http_conn_stop(&c->conn);
}
void client_start(ClientConn* c) {
  if (c->side != nullptr) c->side->start_reading(c);
  else http_conn_start(&c->conn);
}
size_t client_queued(const ClientConn* c) {
  return c->side != nullptr ? c->side->queued(c) : c->conn.write_queued;
}

void dispatch(ClientConn* c);
void exchange_done(ClientConn* c);
void exchange_log(ClientConn* c, bool complete);
void respond_local(ClientConn* c, int status, const std::string& body,
                   std::string_view type = "application/json", std::string_view extra = {});

// A response of the status went (or is going) to the client: counted for the next report.
void count_response(Worker* w, int status) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) w->counters.responses[cls]++;
  worker_report_soon(w);
}

// The proxied request's response is complete (its last byte handed to the client's socket): its
// duration goes into the worker's histogram and, when replica p answered it, into p's. The clock is
// uv_hrtime (CLOCK_MONOTONIC through the vDSO, ns), read once at the head and once here: uv_now is
// the loop time cached once per loop turn at ms resolution, too coarse for the 0.5 ms bucket, and a
// fast replica's answer often arrives in the same turn as its request or the next. Admin and
// refused requests are not observed (observe_ns stays 0).
void observe_done(ClientConn* c, Pool* p) {
  if (c->observe_ns == 0) return;
  uint64_t us = (uv_hrtime() - c->observe_ns) / 1000;
  c->observe_ns = 0;
  duration_observe(&c->w->counters.duration, us);
  if (p != nullptr) duration_observe(&p->duration, us);
}

// A response byte went to the client (the replica's head, or the LB's own answer).
bool response_started(const ClientConn* c) {
  return c->state == ExState::streaming || c->state == ExState::answered ||
         c->state == ExState::tunnel;
}

// Why an upstream attempt failed: decides the retry (--retry-on), the blame (a passive strike) and
// the status the client gets (exchange_fail).
enum class Fail : uint8_t {
  connect,  // refused, reset or timed out while connecting: strike; retried on connect-failure
  empty,    // closed or reset before any response byte: strike once the client's request was
            // complete (a replica may give up on a slow client); retried on empty-response
  junk,     // a malformed response: strike; retried on junk-response
  timeout,  // no response head in time after the whole request was written: strike; 504;
            // retried on response-timeout
  local,    // this process ran out of descriptors, buffers or memory: no strike, no retry, 503
  dead,     // the replica was marked dead meanwhile: no strike; always retried when replayable
  cut,      // the response was cut short mid-body (blame, if any, is the caller's): the client's
            // connection is reset
};

// The failure class of libuv error err met in an attempt whose ordinary class is usual.
Fail fail_of(int err, Fail usual) { return http_local_error(err) ? Fail::local : usual; }

// --- deadlines (the sweep's list) --------------------------------------------------------------

void active_add(ClientConn* c, uint64_t timeout_ms) {
  Worker* w = c->w;
  c->deadline = uv_now(w->loop) + timeout_ms;
  if (c->on_active) return;
  c->on_active = true;
  c->act_prev = nullptr;
  c->act_next = w->active;
  if (c->act_next) c->act_next->act_prev = c;
  w->active = c;
}

// Off the active list: the exchange waits for nothing (wait becomes none).
void active_remove(ClientConn* c) {
  c->wait = Wait::none;
  if (!c->on_active) return;
  if (c->act_prev) c->act_prev->act_next = c->act_next;
  else c->w->active = c->act_next;
  if (c->act_next) c->act_next->act_prev = c->act_prev;
  c->on_active = false;
  c->act_prev = c->act_next = nullptr;
}

// Starts waiting for wt, ms from now (a wait already running for wt is pushed back: idle timeouts).
void exchange_wait(ClientConn* c, Wait wt, uint64_t ms) {
  c->wait = wt;
  active_add(c, ms);
}

void exchange_unwait(ClientConn* c) { active_remove(c); }

// The whole request is written: the response head is due within --upstream-timeout.
void await_response(ClientConn* c) {
  c->state = ExState::awaiting_response;
  exchange_wait(c, Wait::response, c->w->cfg->upstream_timeout_ms);
}

// Once the client's request is complete and its last byte was written to the replica's socket,
// the response timeout starts: only now is a silent replica at fault.
void request_sent_check(ClientConn* c) {
  if (c->req_done && c->state == ExState::sending && c->up != nullptr && c->up->connected &&
      c->up->conn.write_queued == 0)
    await_response(c);
}

// --- deferred completions ----------------------------------------------------------------------

void on_idle(uv_idle_t*) {}  // only keeps the loop from blocking while resumes wait

// Runs the resumes queued while other callbacks were on the stack. Each client is looked at anew:
// it may have closed, or filled its queue, since it was queued.
void on_check(uv_check_t* h) {
  Worker* w = container_of(h, &Worker::check);
  std::vector<ClientConn*>& batch = w->deferred_run;
  batch.swap(w->deferred);
  for (ClientConn* c : batch) {
    if (c == nullptr) continue;  // closed meanwhile (client_on_close)
    c->deferred = false;
    if (c->state == ExState::tunnel) {  // the bytes after the upgrade request, then the tunnel
      if (!c->conn.closing && !c->client_eof) http_conn_start(&c->conn);
      continue;
    }
    if (c->state == ExState::h2) {  // the bytes after the HTTP/2 preface, then the session's
      if (!c->conn.closing) http_conn_start(&c->conn);
      continue;
    }
    if (!c->conn.closing && c->state == ExState::answered && c->req_done && c->keep_alive &&
        c->conn.paused && c->conn.write_queued <= kPipelineQueueMax) {
      // Its first idle moment: where it may move to a less loaded worker (lb/data/spread.h).
      if (!c->spread_asked && !c->admin_listener) {
        c->spread_asked = true;
        if (http_server_hand_off(&w->server, &c->conn)) continue;
      }
      http_conn_resume(&c->conn);
    }
  }
  if (w->deferred.empty()) {
    uv_check_stop(&w->check);
    uv_idle_stop(&w->idle);
  }
  batch.clear();
}

// Queues the parsing of c's next pipelined request for the worker's check handle: its response
// may have ended inside an upstream's or a timer's callback, and parsing there would run another
// exchange (routing, upstream_acquire of the very connection on whose stack we are) re-entrantly.
void exchange_defer_resume(ClientConn* c) {
  if (c->deferred) return;
  Worker* w = c->w;
  c->deferred = true;
  if (w->deferred.empty()) {
    uv_check_start(&w->check, on_check);
    uv_idle_start(&w->idle, on_idle);
  }
  w->deferred.push_back(c);
}

// --- upstream side -----------------------------------------------------------------------------

// Detaches the upstream from the exchange. keep: the exchange ended cleanly and the connection may be
// pooled; otherwise it is closed.
void detach_upstream(ClientConn* c, bool keep) {
  UpstreamConn* u = c->up;
  if (u == nullptr) return;
  c->up = nullptr;
  u->pool->inflight--;
  worker_report_soon(c->w);
  if (keep) {
    upstream_release(u);
  } else {
    u->client = nullptr;
    upstream_close(u);
  }
}

bool idempotent(llhttp_method_t m) {
  return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE || m == HTTP_PUT ||
         m == HTTP_DELETE;
}

// The request may go to another attempt: nothing of it went upstream yet, or it is idempotent and
// none of its body went (what did is not kept).
bool replayable(const ClientConn* c) {
  return c->state == ExState::connecting || c->state == ExState::routing ||
         (idempotent(c->conn.head.method) && !c->body_sent);
}

// The one error funnel of the upstream side: the attempt on the current upstream failed (kind says
// how, cause says it in words). The answer is picked from the state:
//   connecting, sending, awaiting_response: no response byte went to the client. The replica is
//     blamed per kind; then the same replica once more when a kept-alive connection turned out
//     closed, else the next replica clockwise while --retries and --retry-on allow, another one is
//     there and the request can be replayed; otherwise the LB's own answer: 503 for a local
//     resource error, 504 after a response timeout, 502 otherwise.
//   streaming: the response was cut short and cannot be completed: the client's connection is
//     reset (with RST, so it cannot mistake the cut for a complete close-delimited body).
//   any other state: no upstream attempt is in progress; nothing to do, except for a cut (the
//     client's connection is reset whatever the state).
void exchange_fail(ClientConn* c, const char* cause, Fail kind) {
  Worker* w = c->w;
  const Config* cfg = w->cfg;
  switch (c->state) {
    case ExState::streaming:
      if (kind != Fail::cut) {
        w->counters.upstream_failures++;
        if (kind == Fail::timeout) w->counters.upstream_timeouts++;
      }
      detach_upstream(c, false);
      client_close(c, true);
      return;
    case ExState::connecting:
    case ExState::sending:
    case ExState::awaiting_response:
      break;
    default:
      if (kind == Fail::cut) {
        detach_upstream(c, false);
        client_close(c, true);
      }
      return;
  }
  if (c->up == nullptr) return;
  UpstreamConn* u = c->up;
  Pool* p = u->pool;  // lives while u does: u's close (and the unref) comes from the loop later
  bool reused = u->served > 0;
  bool client_done = c->req_done;
  bool can_replay = replayable(c);
  detach_upstream(c, false);
  w->counters.upstream_failures++;
  if (kind == Fail::timeout) w->counters.upstream_timeouts++;
  worker_report_soon(w);
  if (kind == Fail::local) {
    LOG_DEBUG("request to %s not sent: %s (a local resource error; the replica is not blamed)",
              p->name.c_str(), cause);
    c->state = ExState::routing;
    respond_local(c, 503, http_error_json(std::string("the load balancer is out of resources (") +
                                          cause + "); no replica is at fault"));
    return;
  }
  c->state = ExState::routing;
  if (reused && kind == Fail::empty && can_replay && !c->same_retry_used) {
    c->same_retry_used = true;  // a kept-alive connection the replica had closed: not its fault
    dispatch(c);
    return;
  }
  bool blame = kind == Fail::connect || kind == Fail::junk || kind == Fail::timeout ||
               (kind == Fail::empty && client_done);
  if (blame) {
    p->failures++;
    pool_strike(p, cause);
  }
  c->tried.push_back(p->ring_id);
  uint8_t cls = kind == Fail::connect   ? RETRY_CONNECT_FAILURE
                : kind == Fail::empty   ? RETRY_EMPTY_RESPONSE
                : kind == Fail::junk    ? RETRY_JUNK_RESPONSE
                : kind == Fail::timeout ? RETRY_RESPONSE_TIMEOUT
                                        : 0xff;  // dead: the attempt never had a chance
  // Retried only when another replica is there to take it: with every one tried, the client gets
  // this failure's own status (504 after a timeout) rather than a generic 503.
  if (can_replay && (cfg->retry_on & cls) != 0 && c->attempts < cfg->retries &&
      routing_pick(&w->routing, *w->snap, w->pools, cfg, c->pos, c->tried) !=
          nullptr) {
    c->attempts++;
    w->counters.retries++;
    p->retries++;
    LOG_DEBUG("retry: %s failed (%s), trying the next replica", p->name.c_str(), cause);
    dispatch(c);
    return;
  }
  if (kind == Fail::timeout)
    respond_local(c, 504, http_error_json("replica '" + p->name + "' did not answer in time"));
  else
    respond_local(c, 502, http_error_json("replica '" + p->name + "' failed: " + cause));
}

void send_request(ClientConn* c) {
  UpstreamConn* u = c->up;
  uv_buf_t bufs[2] = {uv_buf_init(c->req_head.data(), static_cast<unsigned>(c->req_head.size())),
                      uv_buf_init(c->body_buf.data(), static_cast<unsigned>(c->body_buf.size()))};
  u->conn.expect_no_body = c->conn.head.method == HTTP_HEAD;
  int rc = http_conn_write(&u->conn, bufs, c->body_buf.empty() ? 1 : 2);
  c->state = ExState::sending;
  if (!c->body_buf.empty()) c->body_sent = true;
  c->body_buf.clear();
  if (rc != 0) {
    exchange_fail(c, http_err_name(rc), fail_of(rc, Fail::empty));
    return;
  }
  if (c->req_done && u->conn.write_queued == 0)
    await_response(c);
  else
    exchange_wait(c, Wait::request_body, c->w->cfg->body_timeout_ms);
  http_conn_start(&u->conn);
  if (c->stopped_for_upstream && u->conn.write_queued < kHighWater) {
    c->stopped_for_upstream = false;
    client_start(c);
  }
}

void on_up_connected(UpstreamConn* u, int status) {
  ClientConn* c = u->client;
  if (c == nullptr) {  // the exchange went away while connecting
    upstream_close(u);
    return;
  }
  if (status != 0) {
    exchange_fail(c, http_err_name(status), fail_of(status, Fail::connect));
    return;
  }
  send_request(c);
}

// Writes len bytes of response body to the client, preceded by the response head when it is still
// held back, in one write: a response that arrived in one read leaves in one writev, not two
// writes. len may be 0 (the head alone). Returns 0 or a libuv code.
int write_response(ClientConn* c, const char* data, size_t len) {
  c->bytes_out += len;
  if (c->side != nullptr) return len > 0 ? c->side->response_body(c, data, len) : 0;
  if (!c->head_pending) return http_conn_write(&c->conn, data, len);
  c->head_pending = false;
  c->bytes_out += c->out.size();
  uv_buf_t bufs[2] = {uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size())),
                      uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len))};
  return http_conn_write(&c->conn, bufs, len > 0 ? 2 : 1);
}

// Passes an interim response (1xx other than 101) on to the client at once, as RFC 9110 §15.2 asks
// of a proxy: a client that sent Expect: 100-continue waits for it before sending its body (curl
// waits a second). Not to an HTTP/1.0 client, which does not know interim responses. The head is
// written as it is complete; the final response's head is held back as usual.
//
// A replica sending interim responses faster than the client reads them is not read further while
// what is queued for the client is over the high-water mark (client_on_drain starts it again), as
// for a body: a flood of 1xx grew the LB by 200 MB a second.
void pass_interim(ClientConn* c, const HttpHead& h) {
  // (Not to an HTTP/2 stream: nghttp2 would take a 1xx, but no h2 client waits for a 100.)
  if (c->side != nullptr || !forward_interim_wanted(c->conn.head) || response_started(c)) return;
  forward_interim(&c->out, h);
  c->bytes_out += c->out.size();
  if (http_conn_write(&c->conn, c->out.data(), c->out.size()) != 0) {
    http_conn_close(&c->conn);
    return;
  }
  if (c->conn.write_queued > kHighWater && c->up != nullptr) http_conn_stop(&c->up->conn);
}

// The response bytes on their way to the client: queued in this process and in the kernel's send
// queue (SIOCOUTQ: not yet acknowledged by the client's side). It shrinks whenever the client reads,
// even while the kernel is too full to take more of our queue (it says writable again only once a
// third of its buffer is free, which a slow reader takes seconds to make).
uint64_t client_pending(ClientConn* c) {
  if (c->side != nullptr) return c->side->queued(c);
  uint64_t n = c->conn.write_queued;
  uv_os_fd_t fd;
  int outq = 0;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->conn.tcp), &fd) == 0 &&
      ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
    n += static_cast<uint64_t>(outq);
  return n;
}

// --- tunnels (Upgrade, after a 101) ------------------------------------------------------------

// The tunnel ended (or its client connection closes in it): counted, and its access log line
// written (status 101, the bytes both ways, the duration from the request head to the end).
void tunnel_account_end(ClientConn* c) {
  c->w->counters.tunnels_closed++;
  worker_report_soon(c->w);
  if (c->started_ns != 0) exchange_log(c, true);
}

// Ends the tunnel: both connections close (the upstream one is never pooled: it speaks another
// protocol now). Bytes still queued either way are dropped: it runs once both sides closed and
// everything was written (tunnel_check_done), or when one side broke, timed out or its replica
// is gone. Once: the state leaves tunnel.
void tunnel_end(ClientConn* c, const char* why) {
  if (c->state != ExState::tunnel) return;
  LOG_DEBUG("tunnel to %s ends: %s", c->up ? c->up->pool->name.c_str() : "?", why);
  tunnel_account_end(c);
  exchange_unwait(c);
  c->state = ExState::answered;
  c->keep_alive = false;
  detach_upstream(c, false);
  http_conn_close(&c->conn);
}

// Both sides half-closed and every byte is written both ways: the tunnel is over.
void tunnel_check_done(ClientConn* c) {
  if (c->state == ExState::tunnel && c->client_eof && c->up_eof && c->conn.write_queued == 0 &&
      (c->up == nullptr || c->up->conn.write_queued == 0))
    tunnel_end(c, "both sides closed");
}

// The replica switched protocols (response h to upgrade request of c, on u): the 101 goes to the
// client, both connections turn raw, and the client's bytes already read after its request head
// go upstream first (from the check handle: we are on u's callback stack). Counted as a response
// of the replica and a completed request duration (to the 101). No retry after this point.
void tunnel_start(ClientConn* c, UpstreamConn* u, const HttpHead& h) {
  Worker* w = c->w;
  Pool* p = u->pool;
  pool_success(p);
  p->responses[1]++;
  p->requests++;
  observe_done(c, p);
  c->status = 101;
  c->ring_id = p->ring_id;
  if (c->started_ns != 0) c->replica.assign(p->name);
  count_response(w, 101);
  w->counters.tunnels_opened++;
  exchange_unwait(c);
  c->state = ExState::tunnel;
  c->client_eof = c->up_eof = c->skip_interim = false;  // (a 100 before the 101 ended already)
  c->keep_alive = false;
  http_conn_set_raw(&u->conn);
  http_conn_set_raw(&c->conn);
  forward_switching_head(&c->out, h);
  c->bytes_out += c->out.size();
  if (int rc = http_conn_write(&c->conn, c->out.data(), c->out.size()); rc != 0) {
    tunnel_end(c, http_err_name(rc));
    return;
  }
  exchange_wait(c, Wait::tunnel, w->cfg->tunnel_timeout_ms);
  exchange_defer_resume(c);
}

// Bytes read from one side of the tunnel go to the other. Memory bound: the side read stops while
// the other's queue is over the high-water mark (the other's on_drain starts it again), so a peer
// that does not read holds at most that plus one read buffer in the LB.
void tunnel_relay(ClientConn* c, HttpConn* from, HttpConn* to, const char* data, size_t len) {
  if (c->wait == Wait::tunnel) c->deadline = uv_now(c->w->loop) + c->w->cfg->tunnel_timeout_ms;
  if (int rc = http_conn_write(to, data, len); rc != 0) {
    tunnel_end(c, http_err_name(rc));
    return;
  }
  if (to->write_queued > kHighWater) http_conn_stop(from);
}

// One side of the tunnel reported err (from: its connection; the other: to). EOF is a half-close,
// passed on to the other side once what is queued for it is written (uv_shutdown); any other error
// (a reset, a failed write) ends the tunnel.
void tunnel_on_error(ClientConn* c, HttpConn* from, HttpConn* to, bool* eof, int err) {
  if (err != UV_EOF) {
    tunnel_end(c, http_err_name(err));
    return;
  }
  http_conn_stop(from);
  if (*eof) return;
  *eof = true;
  if (int rc = http_conn_shutdown(to); rc != 0) {
    tunnel_end(c, http_err_name(rc));
    return;
  }
  tunnel_check_done(c);
}

// The sweep's look at a tunnel: a replica the snapshot says is dead closes it; a removed replica
// (its pool retired) or a stopping worker gives it --drain-timeout from now (or its idle
// deadline, if sooner), which traffic no longer pushes back.
void tunnel_sweep(ClientConn* c) {
  Worker* w = c->w;
  if (c->up == nullptr) return;
  if (pool_marked_dead(c->up->pool)) {
    tunnel_end(c, "replica marked dead");
    return;
  }
  if (c->wait == Wait::tunnel && (w->stopping || c->up->pool->state == PoolState::retired)) {
    uint64_t until = uv_now(w->loop) + w->cfg->drain_timeout_ms;
    c->wait = Wait::tunnel_drain;
    if (until < c->deadline) c->deadline = until;
  }
}

void up_on_head(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = u->client;
  if (c == nullptr) {
    upstream_close(u);
    return;
  }
  const HttpHead& h = hc->head;
  if (h.status < 100) {  // "HTTP/1.1 000": llhttp takes any 3 digits; no client knows what it means
    exchange_fail(c, "malformed response", Fail::junk);
    return;
  }
  // A server must not switch to a protocol the request did not offer, and must name the one it
  // switches to (RFC 9110 §15.2.2): a 101 to a request whose Upgrade the LB dropped (or to one
  // still sending), or without an Upgrade header, is malformed. Passed on, it left the client
  // waiting on a connection that had switched to nothing.
  if (h.status == 101) {
    if (!c->upgrade || !c->req_done || !forward_has_upgrade(h)) {
      exchange_fail(c, "101 Switching Protocols to a request without Upgrade", Fail::junk);
      return;
    }
    tunnel_start(c, u, h);
    return;
  }
  if (h.status >= 100 && h.status < 200) {
    c->skip_interim = true;  // 100 Continue and friends: the final response follows
    pass_interim(c, h);
    return;
  }
  pool_success(u->pool);
  if (h.status < 600) u->pool->responses[h.status / 100]++;
  c->status = h.status;
  c->ring_id = u->pool->ring_id;
  if (c->started_ns != 0) c->replica.assign(u->pool->name);
  if (h.status == 404 && c->w->cfg->assignment_404) {
    observe_done(c, u->pool);  // the replica answered; the 400 that replaces it goes at once
    // The replica's answer is replaced; respond_local closes its connection, whose rest (the 404's
    // body) nobody reads.
    std::string path(http_url_path(http_head_url(c->conn.head)));
    respond_local(c, 400, http_error_json("'" + path + "' endpoint does not exist in server replicas"));
    return;
  }
  c->state = ExState::streaming;
  exchange_unwait(c);
  if (c->side != nullptr) {  // HTTP/2: the side makes its own head; the body comes decoded
    hc->body_mode = HttpBody::decoded;
    count_response(c->w, h.status);
    c->side->response_head(c, h);
    return;
  }
  ForwardFraming f = forward_response_head(&c->out, c->conn.head, h, c->keep_alive && !c->w->stopping);
  c->keep_alive = f.keep_alive;
  hc->body_mode = f.dechunk ? HttpBody::decoded : HttpBody::raw;
  count_response(c->w, h.status);
  c->head_pending = true;  // written with the first body bytes, at the message end or in up_on_parsed
}

void up_on_body(HttpConn* hc, const char* data, size_t len) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = u->client;
  if (c == nullptr || c->skip_interim) return;
  if (c->state == ExState::tunnel) {
    c->bytes_out += len;
    tunnel_relay(c, hc, &c->conn, data, len);
    return;
  }
  if (write_response(c, data, len) != 0) {
    client_close(c);
    return;
  }
  if (client_queued(c) > kHighWater) {  // resumed by client_on_drain (exchange_stream_drained)
    http_conn_stop(hc);
    c->pending_mark = client_pending(c);
  }
}

HttpNext up_on_message_end(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = u->client;
  if (c == nullptr) {
    upstream_close(u);
    return HttpNext::pause;
  }
  if (c->skip_interim) {
    c->skip_interim = false;
    return HttpNext::parse;
  }
  u->pool->requests++;
  if (c->head_pending && write_response(c, nullptr, 0) != 0) http_conn_close(&c->conn);  // no body
  if (c->side != nullptr) c->side->response_end(c);
  observe_done(c, u->pool);
  bool keep = hc->head.keep_alive && c->req_done;
  detach_upstream(c, keep);
  exchange_done(c);
  return keep ? HttpNext::parse : HttpNext::pause;
}

void up_on_error(HttpConn* hc, int err) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = u->client;
  if (c == nullptr) {  // idle in the pool: the replica closed it
    upstream_close(u);
    return;
  }
  if (c->state == ExState::tunnel) {
    tunnel_on_error(c, hc, &c->conn, &c->up_eof, err);
    return;
  }
  if (c->state == ExState::streaming) {  // cut short: the client cannot get a complete answer
    exchange_fail(c, http_err_name(err), Fail::cut);
    return;
  }
  if (err == HTTP_E_PARSE || err == HTTP_E_TOO_LARGE)
    exchange_fail(c, "malformed response", Fail::junk);
  else
    exchange_fail(c, http_err_name(err), fail_of(err, Fail::empty));
}

// The replica took every request byte queued for it: the client may send more, and once its
// request is complete the response timeout starts.
void up_on_drain(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = u->client;
  if (c == nullptr) return;
  if (c->state == ExState::tunnel) {  // the replica took the client's bytes: read more of them
    if (!c->client_eof && !c->conn.reading) http_conn_start(&c->conn);
    tunnel_check_done(c);
    return;
  }
  if (c->wait == Wait::request_body) {
    c->deadline = uv_now(c->w->loop) + c->w->cfg->body_timeout_ms;
    request_sent_check(c);
  }
  if (c->stopped_for_upstream) {
    c->stopped_for_upstream = false;
    client_start(c);
  }
}

void up_on_close(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  Pool* p = u->pool;
  upstream_free(u);
  // A retired pool's last connection: the next report says so, and frees it.
  if (p != nullptr && p->state == PoolState::retired && p->conns == 0)
    worker_report_soon(container_of(p->pools, &Worker::pools));
}

// The bytes read from the replica so far are parsed: a response head still held back (its body has
// not arrived yet) goes to the client now.
// It is also where the response body idle timeout restarts: the replica just sent bytes.
void up_on_parsed(HttpConn* hc) {
  ClientConn* c = up_of(hc)->client;
  if (c == nullptr) return;
  if (c->head_pending && write_response(c, nullptr, 0) != 0) {
    http_conn_close(&c->conn);
    return;
  }
  if (c->state == ExState::streaming)
    exchange_wait(c, Wait::response_body, c->w->cfg->body_timeout_ms);
}

const HttpConnHandlers kUpstreamHandlers = {up_on_head,  up_on_body,  up_on_message_end, up_on_error,
                                            up_on_drain, up_on_close, up_on_parsed};

// --- routing and dispatch ----------------------------------------------------------------------

// Routes the exchange by the worker's installed snapshot (c->pos, walking past c->tried) and
// starts the attempt on the replica picked: over a pooled connection at once, else once connected.
// Answers 503 when no replica is usable, 502 (with a strike) or 503 (a local resource error) when
// no connection can be made.
void dispatch(ClientConn* c) {
  Worker* w = c->w;
  c->state = ExState::routing;
  Pool* p = routing_pick(&w->routing, *w->snap, w->pools, w->cfg, c->pos, c->tried);
  if (p == nullptr) {
    w->counters.no_replica++;
    respond_local(c, 503, http_error_json(c->tried.empty() ? "no replica is available"
                                                            : "no replica could serve the request"));
    return;
  }
  int err = 0;
  UpstreamConn* u = upstream_acquire(p, &kUpstreamHandlers, kReadBuffer, on_up_connected, &err);
  if (u == nullptr) {
    if (http_local_error(err)) {  // no socket for it (EMFILE...): not the replica's fault
      LOG_DEBUG("cannot connect to %s: %s (a local resource error; the replica is not blamed)",
                p->name.c_str(), uv_strerror(err));
      respond_local(c, 503, http_error_json(std::string("the load balancer is out of resources (") +
                                            http_err_name(err) + ": " + uv_strerror(err) +
                                            "); no replica is at fault"));
      return;
    }
    pool_strike(p, http_err_name(err));
    worker_report_soon(w);
    c->tried.push_back(p->ring_id);
    respond_local(c, 502, http_error_json("cannot connect to replica '" + p->name + "'"));
    return;
  }
  u->client = c;
  c->up = u;
  p->inflight++;
  if (u->connected) {
    send_request(c);
  } else {
    c->state = ExState::connecting;
    exchange_wait(c, Wait::connect, w->cfg->connect_timeout_ms);
  }
}

// The client's address, for X-Forwarded-For and --hash-key ip.
void fill_peer(ClientConn* c) {
  struct sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getpeername(&c->conn.tcp, reinterpret_cast<struct sockaddr*>(&addr), &len) == 0)
    c->peer_ip = http_format_ip(reinterpret_cast<struct sockaddr*>(&addr));
  c->xff_line.reserve(c->peer_ip.size() + 19);
  c->xff_line.append("X-Forwarded-For: ").append(c->peer_ip).append("\r\n");
}

// --- client side -------------------------------------------------------------------------------

bool is_admin_path(std::string_view path) {
  return path == "/rep" || path == "/add" || path == "/rm" || path == "/metrics" || path == "/healthz" ||
         path == "/readyz" || path == "/route" || path == "/ring" || path == "/dashboard";
}

// Answers the exchange with a complete response of the LB's own (errors, admin answers). Once a
// response byte went to the client it cannot be replaced: the connection is reset instead.
void respond_local(ClientConn* c, int status, const std::string& body, std::string_view type,
                   std::string_view extra) {
  if (response_started(c)) {
    client_close(c, true);
    return;
  }
  detach_upstream(c, false);
  exchange_unwait(c);
  c->state = ExState::answered;
  if (c->w->stopping) c->keep_alive = false;
  if (c->side != nullptr) {
    count_response(c->w, status);
    c->status = status;
    c->bytes_out += body.size();
    c->side->local_response(c, status, type, body, extra);
    exchange_done(c);
    return;
  }
  c->out.clear();
  http_append_response(&c->out, status, type, body, c->keep_alive, extra);
  if (c->conn.head.method == HTTP_HEAD) c->out.resize(c->out.size() - body.size());
  count_response(c->w, status);
  c->status = status;
  c->bytes_out += c->out.size();
  if (http_conn_write(&c->conn, c->out.data(), c->out.size()) != 0) {
    http_conn_close(&c->conn);
    return;
  }
  // Always: the upstream was detached above, so no up_on_message_end will complete the exchange
  // (a 404 turned into 400 used to leave it open: the connection stalled and shutdown never ended).
  exchange_done(c);
}

// The access log's line for the exchange that ends (complete: its response went whole; otherwise
// the client left or the response was cut, logged as status 0). Once per exchange.
void exchange_log(ClientConn* c, bool complete) {
  const HttpHead& h = c->conn.head;
  AccessLogEntry e;
  e.client = c->peer_ip;
  e.method = llhttp_method_name(h.method);
  e.target = http_head_url(h);
  e.http_minor = h.minor;
  e.status = complete ? c->status : 0;
  e.bytes_in = c->bytes_in;
  e.bytes_out = c->bytes_out;
  e.replica = c->replica;
  e.ring_id = c->ring_id;
  e.duration_us = (uv_hrtime() - c->started_ns) / 1000;
  e.retries = c->attempts;
  if (c->rid[0] != 0) e.request_id = std::string_view(c->rid, 6);
  else if (!c->routed_id.empty()) e.request_id = c->routed_id;
  else http_head_get(h, "x-request-id", &e.request_id);
  access_log_write(&c->w->access_log, e);
  c->started_ns = 0;
}

// The response is complete. Once the request is complete too, the connection goes on with the next
// request, or closes when either side asked for it (after its queued bytes are written). The rest
// of a request body still to come is discarded, with the body idle timeout running.
//
// Memory bound: the next pipelined request is read only once nothing is queued for this client
// (kPipelineQueueMax), for local and proxied responses alike; otherwise client_on_drain resumes
// once the client has read it. The resume is deferred (exchange_defer_resume): this runs inside
// upstream callbacks, timers and messages.
void exchange_done(ClientConn* c) {
  observe_done(c, nullptr);  // the LB's own answer to a proxied request (502, 503, 504, 408)
  if (c->started_ns != 0) exchange_log(c, true);
  c->state = ExState::answered;
  if (c->req_done) exchange_unwait(c);
  else exchange_wait(c, Wait::request_body, c->w->cfg->body_timeout_ms);
  if (c->side != nullptr) return;  // the stream ends with its response (exchange_stream_close)
  if (!c->keep_alive) {
    if (c->conn.write_queued == 0) http_conn_close(&c->conn);
    return;
  }
  if (c->req_done && c->conn.paused && c->conn.write_queued <= kPipelineQueueMax)
    exchange_defer_resume(c);
  // Otherwise on_message_end (still to come, or on the stack) or client_on_drain carries on.
}

// Answers a request the LB refuses (a verdict of http_validate.h) and closes the connection after
// the answer: the bytes after a refused head (its body, the tunnel after CONNECT, what follows a
// broken framing) are not read as requests. Nothing of the request goes upstream.
void reject_request(ClientConn* c, HttpVerdict verdict) {
  c->keep_alive = false;
  c->state = ExState::idle;
  c->conn.body_mode = HttpBody::decoded;
  LOG_DEBUG("refused a request: %d %s", verdict.status, verdict.reason);
  respond_local(c, verdict.status, http_error_json(verdict.reason), "application/json",
                verdict.status == 405 ? "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE\r\n"
                                      : "");
}

// The admin request is complete: it goes to the control plane, and the exchange waits for the
// answer without a deadline (/add waits for heartbeats). A control plane that no longer takes
// messages (it is stopping) gets the client a 503.
void admin_call(ClientConn* c) {
  Worker* w = c->w;
  exchange_unwait(c);
  c->state = ExState::admin_wait;
  c->admin_call = ++w->next_call;
  FromWorker m;
  m.kind = FromWorker::Kind::admin_call;
  m.worker = w->index;
  m.call = c->admin_call;
  m.head = c->conn.head;
  m.body = std::move(c->admin_body);
  m.peer_ip = c->peer_ip;
  c->admin_body.clear();
  if (!mailbox_post(w->control, std::move(m))) {
    c->admin_call = 0;
    respond_local(c, 503, http_error_json("the load balancer is stopping"));
    return;
  }
  w->admin_waiting[c->admin_call] = c;
}

void client_on_head(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  Worker* w = c->w;
  const HttpHead& h = hc->head;
  w->counters.requests++;
  worker_report_soon(w);
  if (c->peer_ip.empty() && c->side == nullptr) fill_peer(c);
  c->state = ExState::idle;
  c->req_done = false;
  c->body_sent = c->skip_interim = c->same_retry_used = c->head_pending = false;
  c->upgrade = c->client_eof = c->up_eof = false;
  c->attempts = 0;
  c->pending_mark = 0;
  c->observe_ns = 0;
  c->tried.clear();
  c->body_buf.clear();
  c->admin_body.clear();
  c->keep_alive = h.keep_alive && !w->stopping;
  c->started_ns = 0;
  if (w->access_log.mode != AccessLogMode::off) {
    c->started_ns = uv_hrtime();
    // The head as parsed: request line, header lines, the blank line.
    c->bytes_in = strlen(llhttp_method_name(h.method)) + h.buf.size() + 14;
    c->bytes_out = 0;
    c->status = 0;
    c->ring_id = 0;
    c->replica.clear();
    c->rid[0] = 0;
    c->routed_id = {};
  }

  HttpVerdict verdict = http_validate_request(h);
  if (verdict.status != 0) {
    reject_request(c, verdict);
    return;
  }
  http_head_origin_form(&hc->head);
  std::string_view path = http_url_path(http_head_url(h));
  bool admin_here = w->admin_separate ? c->admin_listener : true;
  if (c->admin_listener || (admin_here && is_admin_path(path))) {
    c->state = ExState::admin_reading;
    hc->body_mode = HttpBody::decoded;
    exchange_wait(c, Wait::request_body, w->cfg->body_timeout_ms);
    return;
  }
  hc->body_mode = HttpBody::raw;
  c->observe_ns = uv_hrtime();
  char rid[8];
  bool generated;
  std::string_view key = routing_key(w->cfg, h, c->peer_ip, &w->rng, rid, &generated);
  if (c->started_ns != 0) {
    if (generated) memcpy(c->rid, rid, sizeof c->rid);
    else if (w->cfg->hash_key == HashKey::rid) c->routed_id = key;  // the X-Request-Id: no 2nd lookup
  }
  c->pos = ring_position(w->snap->ring.get(), key);
  // An upgrade request's connection closes after any answer but a 101: the bytes the client sent
  // after its head (read and held meanwhile) belong to the protocol it asked for, not to HTTP.
  c->upgrade = forward_upgrade_wanted(h);
  if (c->upgrade) c->keep_alive = false;
  forward_request_head(&c->req_head, h, c->peer_ip, c->xff_line,
                       generated ? std::string_view(rid, 6) : std::string_view(),
                       c->side != nullptr ? c->side_tls : tls_on(&c->conn));
  if (c->upgrade) forward_request_upgrade(&c->req_head, h);
  dispatch(c);
}

void client_on_body(HttpConn* hc, const char* data, size_t len) {
  ClientConn* c = client_of(hc);
  Worker* w = c->w;
  if (c->state == ExState::h2) {
    h2_conn_input(c->h2, data, len);
    return;
  }
  c->bytes_in += len;
  if (c->state == ExState::tunnel) {
    if (c->up != nullptr) tunnel_relay(c, hc, &c->up->conn, data, len);
    return;
  }
  if (c->wait == Wait::request_body)  // the client is sending: idle timeout restarts
    c->deadline = uv_now(w->loop) + w->cfg->body_timeout_ms;
  if (c->state == ExState::admin_reading) {
    if (c->admin_body.size() + len > w->cfg->admin_body_limit) {
      c->keep_alive = false;
      respond_local(c, 413, http_error_json("request body is larger than " +
                                            std::to_string(w->cfg->admin_body_limit) + " bytes"));
      return;
    }
    c->admin_body.append(data, len);
    return;
  }
  // Answered already (by the LB, or a replica's 404 turned into 400): discard the rest. A replica
  // whose response is still streaming gets the rest of the body: it may read it before it ends its
  // response, and stopping here would stall it and then blame it for the stall.
  if (c->state == ExState::answered || (c->state == ExState::streaming && c->up == nullptr)) return;
  if (c->up != nullptr && c->state != ExState::connecting) {
    c->body_sent = true;
    if (int rc = http_conn_write(&c->up->conn, data, len); rc != 0) {
      exchange_fail(c, http_err_name(rc), fail_of(rc, Fail::empty));
      return;
    }
    if (c->up && c->up->conn.write_queued > kHighWater) {
      c->stopped_for_upstream = true;
      client_stop(c);
    }
    return;
  }
  c->body_buf.append(data, len);  // not connected yet
  if (c->body_buf.size() > kHighWater) {
    c->stopped_for_upstream = true;
    client_stop(c);
  }
}

HttpNext client_on_message_end(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  c->req_done = true;
  if (c->state == ExState::admin_reading) {
    admin_call(c);  // the admin action may take its time (/add waits for heartbeats)
  } else if (c->state == ExState::answered) {
    exchange_unwait(c);  // answered early; the body has now all been read
  } else {
    request_sent_check(c);
  }
  // With bytes still queued for the client the next request waits for client_on_drain (see
  // exchange_done).
  if (c->state == ExState::answered && c->keep_alive && hc->write_queued <= kPipelineQueueMax)
    return HttpNext::parse;
  return HttpNext::pause;
}

void client_on_error(HttpConn* hc, int err) {
  ClientConn* c = client_of(hc);
  if (c->state == ExState::tunnel) {
    if (c->up == nullptr) http_conn_close(hc);
    else tunnel_on_error(c, hc, &c->up->conn, &c->client_eof, err);
    return;
  }
  if (c->state == ExState::h2) {  // the client closed or reset its HTTP/2 connection
    http_conn_close(hc);
    return;
  }
  // The HTTP/2 connection preface as the connection's first bytes (h2c with prior knowledge, or
  // h2 that ALPN chose over TLS): the connection becomes an HTTP/2 session. The bytes after the
  // preface are still buffered; they go to the session from the check handle (we are inside the
  // connection's parse).
  if (err == HTTP_E_PARSE && llhttp_get_errno(&hc->parser) == HPE_PAUSED_H2_UPGRADE &&
      c->state == ExState::idle && c->peer_ip.empty() && !c->admin_listener) {
    fill_peer(c);
    c->h2 = h2_conn_new(c->w, hc, c->peer_ip, tls_on(hc));
    if (c->h2 == nullptr) {
      http_conn_close(hc);
      return;
    }
    c->state = ExState::h2;
    c->keep_alive = false;
    http_conn_set_raw(hc);
    exchange_defer_resume(c);
    return;
  }
  bool in_exchange = c->state != ExState::idle && c->state != ExState::answered;
  if (err == HTTP_E_PARSE || err == HTTP_E_TOO_LARGE) {
    // A request that broke before its head completed, after a finished exchange (pipelined behind
    // a good one), is a new exchange: it gets its own answer before the close.
    if (c->req_done && c->state == ExState::answered) {
      c->state = ExState::idle;
      c->skip_interim = c->head_pending = false;
      c->req_done = false;
    }
    if (!response_started(c)) {
      // The request's upstream connection, if it got the head already, is closed with it (it
      // holds half a request).
      detach_upstream(c, false);
      c->state = ExState::idle;
      if (err == HTTP_E_TOO_LARGE) {
        reject_request(c, HttpVerdict{431, "request header fields too large"});
        return;
      }
      HttpVerdict v = http_parse_error_verdict(llhttp_get_errno(&hc->parser), hc->parse_error);
      c->keep_alive = false;
      respond_local(c, v.status, http_error_json(std::string("malformed request: ") + v.reason));
      return;
    }
  }
  if (in_exchange && c->req_done && err == UV_EOF) {
    c->keep_alive = false;  // the client half-closed after its request: answer, then close
    return;
  }
  http_conn_close(hc);
}

// The client read everything queued for it: the replica's response may flow again (its idle
// timeout restarts), a connection that is to close closes, and a pipelined request held back by
// the high-water mark is read now (its own callback: nothing else is on the stack).
void client_on_drain(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  if (c->state == ExState::h2) {
    h2_conn_on_drain(c->h2);
    return;
  }
  if (c->state == ExState::tunnel) {  // the client read the replica's bytes: read more of them
    if (c->up != nullptr && !c->up_eof && !c->up->conn.reading) http_conn_start(&c->up->conn);
    tunnel_check_done(c);
    return;
  }
  if (c->wait == Wait::response_body)
    c->deadline = uv_now(c->w->loop) + c->w->cfg->body_timeout_ms;
  if (c->up && hc->write_queued == 0 && !c->up->conn.reading) http_conn_start(&c->up->conn);
  if (c->state == ExState::answered && !c->keep_alive) {
    http_conn_close(hc);
    return;
  }
  if (c->state == ExState::answered && c->req_done && hc->paused) http_conn_resume(hc);
}

// Takes the memory of a closed client (its on_close ran, or its set-up failed) for the next accept:
// every field starts afresh, as for a new ClientConn, while the read buffer and the strings' and the
// head's capacity are kept (up to kSpareKeepMax); freed when the worker already keeps enough.
void client_recycle(Worker* w, ClientConn* c) {
  if (w->spare_clients.size() >= kSpareClients) {
    delete c;
    return;
  }
  auto keep = [](std::string& s) {
    std::string kept;
    if (s.capacity() <= kSpareKeepMax) kept.swap(s);
    kept.clear();
    return kept;
  };
  char* in = c->conn.in;
  uint32_t in_cap = c->conn.in_cap;
  c->conn.in = nullptr;
  HttpHead head;
  if (c->conn.head.buf.capacity() <= kSpareKeepMax) head = std::move(c->conn.head);
  std::string req_head = keep(c->req_head), out = keep(c->out);
  c->~ClientConn();
  new (c) ClientConn();
  c->conn.in = in;
  c->conn.in_cap = in_cap;
  c->conn.head = std::move(head);
  c->req_head = std::move(req_head);
  c->out = std::move(out);
  if (c->req_head.capacity() < kReqHeadReserve) c->req_head.reserve(kReqHeadReserve);
  if (c->out.capacity() < kOutReserve) c->out.reserve(kOutReserve);
  w->spare_clients.push_back(c);
}

void client_on_close(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  Worker* w = c->w;
  if (c->state == ExState::tunnel) tunnel_account_end(c);  // closed in the tunnel (worker stopping)
  if (c->h2 != nullptr) {  // its streams' exchanges end with it
    h2_conn_free(c->h2);
    c->h2 = nullptr;
  }
  if (c->started_ns != 0 && c->state != ExState::idle && c->state != ExState::answered &&
      c->state != ExState::tunnel)
    exchange_log(c, false);  // it ends without a complete response: status 0
  detach_upstream(c, false);
  active_remove(c);
  if (c->admin_call != 0) w->admin_waiting.erase(c->admin_call);  // its answer will be dropped
  if (c->deferred) {
    for (ClientConn*& d : w->deferred)
      if (d == c) d = nullptr;
  }
  w->open_conns--;
  if (!c->admin_listener && !c->handed_off) spread_closed(w);
  worker_report_soon(w);
  client_recycle(w, c);
}

const HttpConnHandlers kClientHandlers = {client_on_head, client_on_body, client_on_message_end,
                                          client_on_error, client_on_drain, client_on_close};

// The exchange's deadline passed: the one place that acts on a timeout, by what it waited for.
void exchange_timeout(ClientConn* c) {
  Worker* w = c->w;
  Wait wt = c->wait;
  exchange_unwait(c);
  switch (wt) {
    case Wait::none:
      return;
    case Wait::connect:
      exchange_fail(c, "connect timeout", Fail::connect);
      return;
    case Wait::request_body:
      if (response_started(c)) {  // answered already; the rest of the body never came
        c->keep_alive = false;
        client_close(c, true);
        return;
      }
      if (c->up != nullptr && c->up->conn.write_queued > 0) {
        // The client sent its bytes; the replica stopped taking them.
        exchange_fail(c, "replica stopped reading the request", Fail::timeout);
        return;
      }
      // The client stopped sending its body: its fault alone. The upstream connection (which has
      // part of a request) is closed, not pooled, and the replica is not blamed.
      c->keep_alive = false;
      respond_local(c, 408, http_error_json("the request body did not arrive in time (more than " +
                                            std::to_string(w->cfg->body_timeout_ms) +
                                            " ms without a byte)"));
      return;
    case Wait::response:
      exchange_fail(c, "timeout", Fail::timeout);
      return;
    case Wait::tunnel:
      tunnel_end(c, "idle timeout (--tunnel-timeout)");
      return;
    case Wait::tunnel_drain:
      tunnel_end(c, "replica removed or load balancer stopping (--drain-timeout)");
      return;
    case Wait::response_body:
      if (client_queued(c) > 0 && c->pending_mark > 0) {
        // The client's queue is full: a client that read something since the last look is slow,
        // not gone (one reading a large response at 50 KiB/s was cut after --body-timeout).
        uint64_t pending = client_pending(c);
        if (pending < c->pending_mark) {
          c->pending_mark = pending;
          exchange_wait(c, Wait::response_body, w->cfg->body_timeout_ms);
          return;
        }
      }
      if (c->up != nullptr && client_queued(c) == 0 && c->req_done) {
        // The client reads and sent its whole request; the replica stopped sending mid-body: cut
        // and blamed. (A replica that answered early may be waiting for the rest of the upload.)
        Pool* p = c->up->pool;
        p->failures++;
        pool_strike(p, "response body timeout");
        LOG_DEBUG("response from %s stalled mid-body: cut", p->name.c_str());
      }
      // Otherwise the client stopped reading its response: its connection goes, nobody is blamed.
      exchange_fail(c, "response body timeout", Fail::cut);
      return;
  }
}

}  // namespace

HttpConn* exchange_accept(Worker* w, bool admin_listener) {
  ClientConn* c;
  if (!w->spare_clients.empty()) {
    c = w->spare_clients.back();
    w->spare_clients.pop_back();
    w->spare_low = std::min(w->spare_low, w->spare_clients.size());
  } else {
    c = new ClientConn();
    c->req_head.reserve(kReqHeadReserve);  // one allocation per connection, not one per doubling
    c->out.reserve(kOutReserve);
  }
  c->w = w;
  c->admin_listener = admin_listener;
  if (http_conn_init(w->loop, &c->conn, HTTP_REQUEST, &kClientHandlers, kReadBuffer) != 0) {
    client_recycle(w, c);
    return nullptr;
  }
  w->counters.connections++;
  w->open_conns++;
  if (!admin_listener) spread_opened(w);
  worker_report_soon(w);
  return &c->conn;
}

void exchange_free_spares(Worker* w) {
  for (ClientConn* c : w->spare_clients) delete c;
  w->spare_clients.clear();
}

namespace {

// Frees the spares that no accept needed since the last trim (the fewest held meanwhile), the
// longest kept first (they are at the front: accepts take from the back).
void spares_trim(Worker* w, uint64_t now) {
  if (now < w->spare_trim_at) return;
  w->spare_trim_at = now + kSpareTrimMs;
  size_t unused = std::min(w->spare_low, w->spare_clients.size());
  for (size_t i = 0; i < unused; i++) delete w->spare_clients[i];
  w->spare_clients.erase(w->spare_clients.begin(), w->spare_clients.begin() + unused);
  w->spare_low = w->spare_clients.size();
}

}  // namespace

void exchange_handed_off(HttpConn* hc) { client_of(hc)->handed_off = true; }

void exchange_sweep(Worker* w) {
  uint64_t now = uv_now(w->loop);
  spares_trim(w, now);
  ClientConn* c = w->active;
  while (c != nullptr) {
    ClientConn* next = c->act_next;
    if (c->conn.closing) {
      exchange_unwait(c);
    } else if (now >= c->deadline) {
      exchange_timeout(c);
    } else if (c->state == ExState::tunnel) {
      tunnel_sweep(c);
    } else if (c->up != nullptr && pool_marked_dead(c->up->pool) &&
               (c->state == ExState::connecting || c->state == ExState::sending ||
                c->state == ExState::awaiting_response) &&
               replayable(c)) {
      exchange_fail(c, "replica marked dead", Fail::dead);
    }
    c = next;
  }
}

void exchange_admin_answer(Worker* w, uint64_t call, const AdminAnswer& answer) {
  auto it = w->admin_waiting.find(call);
  if (it == w->admin_waiting.end()) return;  // the client closed meanwhile
  ClientConn* c = it->second;
  w->admin_waiting.erase(it);
  c->admin_call = 0;
  if (c->conn.closing || c->state != ExState::admin_wait) return;
  respond_local(c, answer.status, answer.body, answer.content_type, answer.extra);
}

// --- exchanges of HTTP/2 streams -----------------------------------------------------------------

ClientConn* exchange_stream_open(Worker* w, const ClientSide* side, void* data,
                                 const std::string& peer_ip, bool tls) {
  ClientConn* c = new (std::nothrow) ClientConn();
  if (c == nullptr) return nullptr;
  c->w = w;
  c->side = side;
  c->side_data = data;
  c->side_tls = tls;
  c->peer_ip = peer_ip;
  c->xff_line.reserve(peer_ip.size() + 19);
  c->xff_line.append("X-Forwarded-For: ").append(peer_ip).append("\r\n");
  http_head_reset(&c->conn.head);
  return c;
}

void exchange_stream_head(ClientConn* c) { client_on_head(&c->conn); }

void exchange_stream_reject(ClientConn* c, int status, const char* reason) {
  Worker* w = c->w;
  w->counters.requests++;
  c->keep_alive = false;
  if (w->access_log.mode != AccessLogMode::off) {
    c->started_ns = uv_hrtime();
    c->bytes_in = c->conn.head.buf.size();
  }
  reject_request(c, HttpVerdict{status, reason});
}

void exchange_stream_body(ClientConn* c, const char* data, size_t len) {
  client_on_body(&c->conn, data, len);
}

void exchange_stream_end(ClientConn* c) {
  if (c->req_done) return;
  client_on_message_end(&c->conn);
}

void exchange_stream_drained(ClientConn* c) {
  if (c->wait == Wait::response_body)
    c->deadline = uv_now(c->w->loop) + c->w->cfg->body_timeout_ms;
  if (c->up && !c->up->conn.reading && c->state == ExState::streaming) http_conn_start(&c->up->conn);
}

void exchange_stream_close(ClientConn* c) {
  Worker* w = c->w;
  if (c->started_ns != 0 && c->state != ExState::idle && c->state != ExState::answered)
    exchange_log(c, false);  // it ends without a complete response: status 0
  detach_upstream(c, false);
  active_remove(c);
  if (c->admin_call != 0) w->admin_waiting.erase(c->admin_call);
  if (c->deferred) {
    for (ClientConn*& d : w->deferred)
      if (d == c) d = nullptr;
  }
  delete c;
}
