// tunnel: an exchange after the replica answered its upgrade request 101 (ExState::tunnel, see
// exchange.h). Both connections pass bytes through unparsed (http_conn_set_raw), each side read
// only while the other's queue is under the high-water mark, a half-close passed on, until both
// sides closed or one broke; never replayed, the upstream connection never pooled; logged at its
// end. Entered from exchange.cc's up_on_head (tunnel_start); the exchange's callbacks hand each
// event of a tunnel here.
#include <string>

#include "lb/data/exchange_impl.h"
#include "lb/data/forward.h"
#include "lb/log.h"

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
  exchange_detach_upstream(c, false);
  http_conn_close(&c->conn);
}

namespace {

// Both sides half-closed and every byte is written both ways: the tunnel is over.
void tunnel_check_done(ClientConn* c) {
  if (c->state == ExState::tunnel && c->client_eof && c->up_eof && c->conn.write_queued == 0 &&
      (c->up == nullptr || c->up->conn.write_queued == 0))
    tunnel_end(c, "both sides closed");
}

}  // namespace

// The replica switched protocols (response h to upgrade request of c, on u): the 101 goes to the
// client, both connections turn raw, and the client's bytes already read after its request head
// go upstream first (from the check handle: we are on u's callback stack). Counted as a response
// of the replica and a completed request duration (to the 101). No retry after this point.
//
// A server must not switch to a protocol the request did not offer, and must name the one it
// switches to (RFC 9110 §15.2.2): a 101 to a request whose Upgrade the LB dropped (or to one
// still sending), or without an Upgrade header, is malformed. Passed on, it left the client
// waiting on a connection that had switched to nothing. Then false, and nothing was done: the
// caller fails the attempt (a junk response).
bool tunnel_start(ClientConn* c, UpstreamConn* u, const HttpHead& h) {
  if (!c->upgrade || !c->req_done || !forward_has_upgrade(h)) return false;
  Worker* w = c->w;
  Pool* p = u->pool;
  pool_success(p);
  p->responses[1]++;
  p->requests++;
  exchange_observe_done(c, p);
  c->status = 101;
  c->ring_id = p->ring_id;
  if (c->started_ns != 0) c->replica.assign(p->name);
  exchange_count_response(w, 101);
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
    return true;
  }
  exchange_wait(c, Wait::tunnel, w->cfg->tunnel_timeout_ms);
  exchange_defer_resume(c);
  return true;
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

// The replica took the client's bytes: read more of them (unless the client half-closed).
void tunnel_on_up_drain(ClientConn* c) {
  if (!c->client_eof && !c->conn.reading) http_conn_start(&c->conn);
  tunnel_check_done(c);
}

// The client read the replica's bytes: read more of them (unless the replica half-closed).
void tunnel_on_client_drain(ClientConn* c) {
  if (c->up != nullptr && !c->up_eof && !c->up->conn.reading) http_conn_start(&c->up->conn);
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
