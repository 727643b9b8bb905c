// exchange: the HTTP/1 client connection's exchange state machine (ExState, exchange.h), its one
// error funnel for the upstream side (exchange_fail) and its one timeout funnel (exchange_timeout).
// Its siblings share exchange_impl.h: tunnel.cc (after a 101), exchange_stream.cc (HTTP/2
// streams run this same machine through a ClientSide) and exchange_accept.cc (memory).
#include "lb/data/exchange.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <cstring>

#include "lb/data/exchange_impl.h"
#include "lb/data/exchange_stream.h"
#include "lb/data/forward.h"
#include "lb/data/h2_client.h"
#include "lb/http/tls.h"
#include "lb/data/routing.h"
#include "lb/http/container_of.h"
#include "lb/http/http_response.h"
#include "lb/log.h"

// Bytes queued for a client past which its next pipelined request waits: none. A client that reads
// its answers has nothing queued (writes go straight to the socket), so pipelining costs it nothing;
// one that does not read holds at most one response in the LB, as with HAProxy and NGINX.
constexpr size_t kPipelineQueueMax = 0;

static ClientConn* client_of(HttpConn* hc) { return container_of(hc, &ClientConn::conn); }
static UpstreamConn* up_of(HttpConn* hc) { return container_of(hc, &UpstreamConn::conn); }

// The client side's I/O: the exchange's own HTTP/1 connection, or its side (an HTTP/2 stream,
// ClientConn::side) for an exchange that has none. A side has no "close": it is reset.
static void client_close(ClientConn* c, bool reset = false) {
  if (c->side != nullptr) c->side->reset(c);
  else http_conn_close(&c->conn, reset);
}
static void client_stop(ClientConn* c) {
  if (c->side != nullptr) c->side->stop_reading(c);
  else http_conn_stop(&c->conn);
}
static void client_start(ClientConn* c) {
  if (c->side != nullptr) c->side->start_reading(c);
  else http_conn_start(&c->conn);
}
static size_t client_queued(const ClientConn* c) {
  return c->side != nullptr ? c->side->queued(c) : c->conn.write_queued;
}

static void dispatch(ClientConn* c);
static void exchange_done(ClientConn* c);
static void respond_local(ClientConn* c, int status, const std::string& body,
                          std::string_view type = "application/json", std::string_view extra = {});

// A response byte went to the client (the replica's head, or the LB's own answer).
static bool response_started(const ClientConn* c) {
  return c->state == ExState::streaming || c->state == ExState::answered ||
         c->state == ExState::tunnel;
}

namespace {

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

}  // namespace

// The failure class of libuv error err met in an attempt whose ordinary class is usual.
static Fail fail_of(int err, Fail usual) { return http_local_error(err) ? Fail::local : usual; }

// The whole request is written: the response head is due within --upstream-timeout.
static void await_response(ClientConn* c) {
  c->state = ExState::awaiting_response;
  exchange_wait(c, Wait::response, c->w->cfg->upstream_timeout_ms);
}

// Once the client's request is complete and its last byte was written to the replica's socket,
// the response timeout starts: only now is a silent replica at fault.
static void request_sent_check(ClientConn* c) {
  if (c->req_done && c->state == ExState::sending && c->up != nullptr && c->up->connected &&
      c->up->conn.write_queued == 0)
    await_response(c);
}

// --- deferred completions ----------------------------------------------------------------------

static void on_idle(uv_idle_t*) {}  // only keeps the loop from blocking while resumes wait

// Runs the resumes queued while other callbacks were on the stack. Each client is looked at anew:
// it may have closed, or filled its queue, since it was queued.
static void on_check(uv_check_t* h) {
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

static bool idempotent(llhttp_method_t m) {
  return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE || m == HTTP_PUT ||
         m == HTTP_DELETE;
}

// The request may go to another attempt: nothing of it went upstream yet, or it is idempotent and
// none of its body went (what did is not kept).
static bool replayable(const ClientConn* c) {
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
static void exchange_fail(ClientConn* c, const char* cause, Fail kind) {
  Worker* w = c->w;
  const Config* cfg = w->cfg;
  switch (c->state) {
    case ExState::streaming:
      if (kind != Fail::cut) {
        w->counters.upstream_failures++;
        if (kind == Fail::timeout) w->counters.upstream_timeouts++;
      }
      exchange_detach_upstream(c, false);
      client_close(c, true);
      return;
    case ExState::connecting:
    case ExState::sending:
    case ExState::awaiting_response:
      break;
    default:
      if (kind == Fail::cut) {
        exchange_detach_upstream(c, false);
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
  exchange_detach_upstream(c, false);
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

static void send_request(ClientConn* c) {
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

static void on_up_connected(UpstreamConn* u, int status) {
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
static int write_response(ClientConn* c, const char* data, size_t len) {
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
static void pass_interim(ClientConn* c, const HttpHead& h) {
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
static uint64_t client_pending(ClientConn* c) {
  if (c->side != nullptr) return c->side->queued(c);
  uint64_t n = c->conn.write_queued;
  uv_os_fd_t fd;
  int outq = 0;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->conn.tcp), &fd) == 0 &&
      ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
    n += static_cast<uint64_t>(outq);
  return n;
}

static void up_on_head(HttpConn* hc) {
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
  if (h.status == 101) {  // the tunnel starts (tunnel.cc), unless the 101 is malformed
    if (!tunnel_start(c, u, h))
      exchange_fail(c, "101 Switching Protocols to a request without Upgrade", Fail::junk);
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
    exchange_observe_done(c, u->pool);  // the replica answered; the 400 that replaces it goes at once
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
    exchange_count_response(c->w, h.status);
    c->side->response_head(c, h);
    return;
  }
  ForwardFraming f = forward_response_head(&c->out, c->conn.head, h, c->keep_alive && !c->w->stopping);
  c->keep_alive = f.keep_alive;
  hc->body_mode = f.dechunk ? HttpBody::decoded : HttpBody::raw;
  exchange_count_response(c->w, h.status);
  c->head_pending = true;  // written with the first body bytes, at the message end or in up_on_parsed
}

static void up_on_body(HttpConn* hc, const char* data, size_t len) {
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

static HttpNext up_on_message_end(HttpConn* hc) {
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
  if (c->side != nullptr) c->side->response_end(c, hc->head);
  exchange_observe_done(c, u->pool);
  bool keep = hc->head.keep_alive && c->req_done;
  exchange_detach_upstream(c, keep);
  exchange_done(c);
  return keep ? HttpNext::parse : HttpNext::pause;
}

static void up_on_error(HttpConn* hc, int err) {
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
static void up_on_drain(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = u->client;
  if (c == nullptr) return;
  if (c->state == ExState::tunnel) {
    tunnel_on_up_drain(c);
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

static void up_on_close(HttpConn* hc) {
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
static void up_on_parsed(HttpConn* hc) {
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
static void dispatch(ClientConn* c) {
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
void exchange_fill_peer(ClientConn* c) {
  struct sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getpeername(&c->conn.tcp, reinterpret_cast<struct sockaddr*>(&addr), &len) == 0)
    c->peer_ip = http_format_ip(reinterpret_cast<struct sockaddr*>(&addr));
  c->xff_line.reserve(c->peer_ip.size() + 19);
  c->xff_line.append("X-Forwarded-For: ").append(c->peer_ip).append("\r\n");
}

// --- client side -------------------------------------------------------------------------------

static bool is_admin_path(std::string_view path) {
  return path == "/rep" || path == "/add" || path == "/rm" || path == "/metrics" || path == "/healthz" ||
         path == "/readyz" || path == "/route" || path == "/ring" || path == "/dashboard";
}

// Answers the exchange with a complete response of the LB's own (errors, admin answers). Once a
// response byte went to the client it cannot be replaced: the connection is reset instead.
static void respond_local(ClientConn* c, int status, const std::string& body,
                          std::string_view type, std::string_view extra) {
  if (response_started(c)) {
    client_close(c, true);
    return;
  }
  exchange_detach_upstream(c, false);
  exchange_unwait(c);
  c->state = ExState::answered;
  if (c->w->stopping) c->keep_alive = false;
  if (c->side != nullptr) {
    exchange_count_response(c->w, status);
    c->status = status;
    c->bytes_out += body.size();
    c->side->local_response(c, status, type, body, extra);
    exchange_done(c);
    return;
  }
  c->out.clear();
  http_append_response(&c->out, status, type, body, c->keep_alive, extra);
  if (c->conn.head.method == HTTP_HEAD) c->out.resize(c->out.size() - body.size());
  exchange_count_response(c->w, status);
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
  if (c->side != nullptr) {  // an HTTP/2 stream (its head says 1.1: how it goes upstream)
    e.http_major = 2;
    e.http_minor = 0;
  }
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
static void exchange_done(ClientConn* c) {
  exchange_observe_done(c, nullptr);  // the LB's own answer to a proxied request (502, 503, 504, 408)
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
void exchange_reject(ClientConn* c, HttpVerdict verdict) {
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
static void admin_call(ClientConn* c) {
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
  if (c->peer_ip.empty() && c->side == nullptr) exchange_fill_peer(c);
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
    exchange_reject(c, verdict);
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

static void client_on_error(HttpConn* hc, int err) {
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
  // The HTTP/2 connection preface as the connection's first bytes: the connection becomes an
  // HTTP/2 session (exchange_stream.cc).
  if (err == HTTP_E_PARSE && llhttp_get_errno(&hc->parser) == HPE_PAUSED_H2_UPGRADE &&
      c->state == ExState::idle && c->peer_ip.empty() && !c->admin_listener) {
    exchange_h2_start(c);
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
      exchange_detach_upstream(c, false);
      c->state = ExState::idle;
      if (err == HTTP_E_TOO_LARGE) {
        exchange_reject(c, HttpVerdict{431, "request header fields too large"});
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
static void client_on_drain(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  if (c->state == ExState::h2) {
    h2_conn_on_drain(c->h2);
    return;
  }
  if (c->state == ExState::tunnel) {
    tunnel_on_client_drain(c);
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

static void client_on_close(HttpConn* hc) {
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
  exchange_detach_upstream(c, false);
  exchange_unwait(c);
  if (c->admin_call != 0) w->admin_waiting.erase(c->admin_call);  // its answer will be dropped
  if (c->deferred) {
    for (ClientConn*& d : w->deferred)
      if (d == c) d = nullptr;
  }
  w->open_conns--;
  if (!c->admin_listener && !c->handed_off) spread_closed(w);
  worker_report_soon(w);
  exchange_recycle(w, c);
}

const HttpConnHandlers kClientHandlers = {client_on_head, client_on_body, client_on_message_end,
                                          client_on_error, client_on_drain, client_on_close};

// The exchange's deadline passed: the one place that acts on a timeout, by what it waited for.
static void exchange_timeout(ClientConn* c) {
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

void exchange_sweep(Worker* w) {
  uint64_t now = uv_now(w->loop);
  exchange_spares_trim(w, now);
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
