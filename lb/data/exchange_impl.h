// exchange_impl: what the three files of the client exchange share, and nothing else includes.
//   exchange.cc         the HTTP/1 client connection's exchange state machine and its one error
//                       funnel (exchange_fail) and timeout funnel (exchange_timeout)
//   tunnel.cc           an exchange after the replica's 101 to an upgrade request (ExState::tunnel)
//   exchange_stream.cc  the seam to HTTP/2: the connection that turns h2, and the exchanges of its
//                       streams (exchange_stream.h, a ClientConn with a ClientSide)
//   exchange_accept.cc  a client connection's memory: made at accept, recycled at close
// Everything here runs on the worker's thread, inside its loop's callbacks.
//
// The helpers the request path calls on every exchange (deadlines, counting, detaching the
// upstream) are inline here: they were local to one translation unit before the split and the
// compiler inlined them there; defined here they stay inlined wherever they are used.
#pragma once

#include <cstddef>
#include <cstdint>

#include <uv.h>

#include "lb/data/exchange.h"
#include "lb/data/upstream.h"
#include "lb/data/worker_state.h"
#include "lb/http/http_validate.h"

// Bytes queued on one side of an exchange (or a tunnel) before the other side stops being read.
constexpr size_t kHighWater = 256 * 1024;
// The read buffer of a client connection and of an upstream one.
constexpr size_t kReadBuffer = 16 * 1024;

// --- deadlines (the sweep's list, Worker::active) ----------------------------------------------

// Starts waiting for wt, ms from now (a wait already running is pushed back: idle timeouts). The
// exchange joins the worker's list of exchanges with a deadline if it is not on it.
inline void exchange_wait(ClientConn* c, Wait wt, uint64_t ms) {
  c->wait = wt;
  Worker* w = c->w;
  c->deadline = uv_now(w->loop) + ms;
  if (c->on_active) return;
  c->on_active = true;
  c->act_prev = nullptr;
  c->act_next = w->active;
  if (c->act_next) c->act_next->act_prev = c;
  w->active = c;
}

// Off the active list: the exchange waits for nothing (wait becomes none).
inline void exchange_unwait(ClientConn* c) {
  c->wait = Wait::none;
  if (!c->on_active) return;
  if (c->act_prev) c->act_prev->act_next = c->act_next;
  else c->w->active = c->act_next;
  if (c->act_next) c->act_next->act_prev = c->act_prev;
  c->on_active = false;
  c->act_prev = c->act_next = nullptr;
}

// --- counting ------------------------------------------------------------------------------------

// A response of the status went (or is going) to the client: counted for the next report.
inline void exchange_count_response(Worker* w, int status) {
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
inline void exchange_observe_done(ClientConn* c, Pool* p) {
  if (c->observe_ns == 0) return;
  uint64_t us = (uv_hrtime() - c->observe_ns) / 1000;
  c->observe_ns = 0;
  duration_observe(&c->w->counters.duration, us);
  if (p != nullptr) duration_observe(&p->duration, us);
}

// --- the upstream side ---------------------------------------------------------------------------

// Detaches the upstream from the exchange. keep: the exchange ended cleanly and the connection may be
// pooled; otherwise it is closed.
inline void exchange_detach_upstream(ClientConn* c, bool keep) {
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

// --- exchange.cc ---------------------------------------------------------------------------------

// The client connection's callbacks (the HTTP/1 exchange's state machine).
extern const HttpConnHandlers kClientHandlers;

// Queues the parsing of c's next pipelined request (or, in a tunnel or an h2 connection, the
// reading of the bytes after the head or preface) for the worker's check handle: its response may
// have ended inside an upstream's or a timer's callback, and parsing there would run another
// exchange (routing, upstream_acquire of the very connection on whose stack we are) re-entrantly.
void exchange_defer_resume(ClientConn* c);
// The access log's line for the exchange that ends (complete: its response went whole; otherwise
// the client left or the response was cut, logged as status 0). Once per exchange.
void exchange_log(ClientConn* c, bool complete);
// The client's address, for X-Forwarded-For and --hash-key ip (an HTTP/1 connection's own).
void exchange_fill_peer(ClientConn* c);
// Answers a request the LB refuses (a verdict of http_validate.h) and closes the connection after
// the answer. Nothing of the request goes upstream.
void exchange_reject(ClientConn* c, HttpVerdict verdict);
// The request side of the client connection's callbacks (kClientHandlers), which a stream's
// exchange runs too with its head, body and end (its conn is never initialised for I/O).
void client_on_head(HttpConn* hc);
void client_on_body(HttpConn* hc, const char* data, size_t len);
HttpNext client_on_message_end(HttpConn* hc);

// --- exchange_accept.cc ----------------------------------------------------------------------------

// Takes the memory of a closed client (its on_close ran, or its set-up failed) for the next accept.
void exchange_recycle(Worker* w, ClientConn* c);
// The sweep's tick (now: loop time): at most once a second, frees the spares no accept needed
// since the last trim.
void exchange_spares_trim(Worker* w, uint64_t now);

// --- tunnel.cc: an exchange after a 101 (ExState::tunnel) -------------------------------------

// The replica switched protocols (response h to upgrade request of c, on u): the tunnel starts.
// False, with nothing done, when the 101 is malformed (the request offered no Upgrade the LB
// carries out, or it names none).
bool tunnel_start(ClientConn* c, UpstreamConn* u, const HttpHead& h);
// Bytes read from one side of the tunnel (from) go to the other (to).
void tunnel_relay(ClientConn* c, HttpConn* from, HttpConn* to, const char* data, size_t len);
// One side of the tunnel reported err (eof: that side's half-close flag).
void tunnel_on_error(ClientConn* c, HttpConn* from, HttpConn* to, bool* eof, int err);
// The replica took the client's bytes (up_on_drain) / the client took the replica's
// (client_on_drain): the side held back reads again, and the tunnel ends if both sides are done.
void tunnel_on_up_drain(ClientConn* c);
void tunnel_on_client_drain(ClientConn* c);
// The deadline passed (Wait::tunnel or Wait::tunnel_drain), or the tunnel otherwise ends: both
// connections close. Once.
void tunnel_end(ClientConn* c, const char* why);
// The client connection closes while in the tunnel (the worker stops): counted and logged.
void tunnel_account_end(ClientConn* c);
// The sweep's look at a tunnel (a dead or removed replica, a stopping worker).
void tunnel_sweep(ClientConn* c);

// --- exchange_stream.cc: the HTTP/2 seam -------------------------------------------------------

// The HTTP/2 connection preface came as the connection's first bytes (c is in state idle, hc its
// connection): c becomes the connection's session (ExState::h2), or hc closes when it cannot.
void exchange_h2_start(ClientConn* c);
