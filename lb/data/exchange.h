// exchange: one client connection of a worker and the exchange in progress on it, as one explicit
// state machine (ExState), with one error funnel for the upstream side (exchange_fail: the answer
// is picked from the state) and one timeout funnel (exchange_timeout: the culprit is picked from
// what the deadline waited for).
//
// Exchanges on a connection run one at a time: the connection pauses at each request's end until
// its response is complete (pipelining). A proxied request is routed by the worker's installed
// snapshot, sent over a pooled upstream connection, and its response streamed back; a request that
// fails before its response started goes to the next replica clockwise when --retries, --retry-on
// and its method allow. An admin request is read whole and handed to the control plane
// (FromWorker::admin_call); its answer comes back as a message (exchange_admin_answer). An upgrade
// request (forward_upgrade_wanted) whose replica answers 101 turns the exchange into a tunnel
// (ExState::tunnel, lb/data/tunnel.cc): both connections raw, until both sides closed; it is the
// connection's last. A connection that opens with the HTTP/2 preface becomes an HTTP/2 session
// (ExState::h2) whose streams are exchanges of their own (lb/data/exchange_stream.h).
//
// Completions never run inside the callback that caused them: the next pipelined request of a
// client whose response ended inside another connection's callback (an upstream's, a timer's) is
// parsed from the worker's check handle once that callback has returned (exchange_defer_resume).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lb/http/http_conn.h"
#include "lb/plane.h"

struct Worker;
struct UpstreamConn;
struct H2Conn;
struct ClientConn;
struct ClientSide;  // an HTTP/2 stream's side of an exchange (lb/data/exchange_stream.h)

// Where an exchange is. Request-side progress (req_done) and backpressure are flags beside it.
enum class ExState : uint8_t {
  idle,               // no request yet on this connection
  admin_reading,      // an admin request: its body is being read (up to --admin-body-limit)
  admin_wait,         // the complete admin request is with the control plane (no deadline)
  routing,            // proxied: a replica is being picked (first attempt or retry); transient
  connecting,         // proxied: the TCP connect to the picked replica runs; the request waits
  sending,            // proxied: the head went upstream; the body follows as the client sends it
  awaiting_response,  // proxied: the whole request was written; its response head is due
  streaming,          // the response head came; its body flows to the client: no more failover
  answered,           // the response is complete (the replica's or the LB's own); the rest of
                      // the request body, if any, is read and discarded
  tunnel,             // the replica answered an upgrade request 101 and the 101 went on: both
                      // connections pass bytes through unparsed (http_conn_set_raw), each side
                      // read only while the other's queue is under the high-water mark, a
                      // half-close passed on, until both sides closed or one broke; never
                      // replayed, the upstream connection never pooled; logged at its end
  h2,                 // the connection sent the HTTP/2 preface: it is raw, its bytes go to c->h2
                      // (lb/data/h2_client.h); its exchanges are its streams' own ClientConns
};

// What the exchange's deadline waits for, and so whose fault it is when it passes (see
// exchange_timeout, the one place that acts on it). At most one wait at a time; none while the
// exchange waits on nothing the worker can time (an admin call in progress, between requests).
enum class Wait : uint8_t {
  none,
  connect,        // the upstream connect (--connect-timeout): the replica's fault
  request_body,   // body bytes from the client, or the upstream taking the ones it has
                  // (--body-timeout, idle): the client's fault (408) unless the replica stopped
                  // reading the request
  response,       // the response head, once the whole request was written (--upstream-timeout):
                  // the replica's fault (504); only in state awaiting_response
  response_body,  // the next response body bytes, or the client reading those queued
                  // (--body-timeout, idle): the replica's fault unless the client stopped reading
  tunnel,         // a byte either way in the tunnel (--tunnel-timeout, idle): both sides close
  tunnel_drain,   // the tunnel's replica was removed (/rm) or the worker stops (SIGTERM): both
                  // sides close at --drain-timeout from then (or the idle timeout, if sooner);
                  // traffic does not push it back
};

struct ClientConn {
  HttpConn conn;
  Worker* w = nullptr;
  bool admin_listener = false;  // accepted on --admin-listen: every request is an admin request
  bool handed_off = false;      // given to another worker (spread): not counted here
  bool spread_asked = false;    // its first idle moment came: it stays on this worker from now on
  std::string peer_ip;
  std::string xff_line;  // "X-Forwarded-For: PEER_IP\r\n", the line added when the client sent none

  ExState state = ExState::idle;
  Wait wait = Wait::none;
  // One-bit flags for what is orthogonal to the state.
  bool req_done = false;              // the request's last byte arrived
  bool keep_alive = true;             // the client connection survives this exchange
  bool body_sent = false;             // body bytes went upstream: not kept for a retry
  bool stopped_for_upstream = false;  // client reading stopped: upstream queue or buffer full
  bool skip_interim = false;          // an interim 1xx response is being skipped upstream
  bool head_pending = false;          // the response head waits in out for the first body bytes
  bool same_retry_used = false;       // the one retry on the same replica (a stale pooled conn)
  bool deferred = false;              // on the worker's deferred-resume queue
  bool on_active = false;             // on the worker's list of exchanges with a deadline
  bool upgrade = false;               // the request offers an Upgrade the LB carries out
  bool client_eof = false;            // tunnel: the client half-closed (passed on upstream)
  bool up_eof = false;                // tunnel: the replica half-closed (passed on to the client)
  uint8_t attempts = 0;               // retries on other replicas so far
  // The response bytes still on their way to the client (client_pending) when its reading was
  // last looked at: while it keeps shrinking, the client is reading, however slowly (0: never
  // looked, the exchange had not filled the client's queue).
  uint64_t pending_mark = 0;
  UpstreamConn* up = nullptr;
  uint64_t pos = 0;       // the key's ring position (valid across snapshots)
  uint64_t deadline = 0;  // loop time at which `wait` times out
  uint64_t observe_ns = 0;  // uv_hrtime when a proxied request's head arrived; 0 once observed
  uint64_t admin_call = 0;  // the call id while in admin_wait
  std::vector<uint32_t> tried;  // ring ids
  std::string req_head;         // the head sent upstream
  std::string body_buf;         // body bytes waiting for the upstream connection
  std::string out;              // the response head (held back while head_pending), local responses
  std::string admin_body;
  // HTTP/2 (lb/data/h2_client.h): the connection's session (state h2), or, for a stream's
  // exchange, its side (then conn is never initialised) and the side's own data.
  H2Conn* h2 = nullptr;
  const ClientSide* side = nullptr;
  void* side_data = nullptr;
  bool side_tls = false;  // the stream's connection is TLS (X-Forwarded-Proto)
  ClientConn* act_prev = nullptr;
  ClientConn* act_next = nullptr;
  // For the access log (filled while it is on): what exchange_log writes at the exchange's end.
  uint64_t started_ns = 0;  // uv_hrtime when the head arrived; 0: nothing to log
  uint64_t bytes_in = 0, bytes_out = 0;
  int status = 0;            // the status sent
  uint32_t ring_id = 0;      // the replica that answered (0: the LB's own answer)
  std::string replica;
  char rid[8] = {};          // the request id generated for it, or empty
  std::string_view routed_id;  // --hash-key rid: the client's X-Request-Id (in conn.head), or empty
};

// The server's on_accept for worker w: a new client connection (admin_listener: on --admin-listen).
// Returns nullptr when it cannot be set up (the server then drops the client).
HttpConn* exchange_accept(Worker* w, bool admin_listener);
// Frees the closed clients' memory w keeps for its next accepts (when the worker is torn down).
void exchange_free_spares(Worker* w);
// The client just accepted on hc went to another worker (lb/data/spread.h); hc closes next.
void exchange_handed_off(HttpConn* hc);

// The sweep (every 100 ms): exchanges past their deadline time out, and replayable exchanges still
// waiting for the first response byte of a replica the snapshot now says is dead go to the next
// replica at once. Tunnels to a dead replica close; tunnels to a removed replica, or all of them
// once the worker stops, start their --drain-timeout.
void exchange_sweep(Worker* w);

// The control plane's answer to admin call `call`: answered to its client, unless the client went
// away meanwhile (then dropped).
void exchange_admin_answer(Worker* w, uint64_t call, const AdminAnswer& answer);
