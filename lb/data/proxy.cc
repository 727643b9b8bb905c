#include "lb/data/proxy.h"

#include <cstring>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "lb/control/admin.h"
#include "lb/http/http_response.h"
#include "lb/http/http_validate.h"
#include "lb/log.h"
#include "lb/data/upstream.h"

// One client connection and the exchange in progress on it. Exchanges on a connection run one at a
// time: the connection pauses at each request's end until its response is complete (pipelining).
struct ClientConn {
  HttpConn conn;  // first: http_conn_of(handle) is a ClientConn
  Proxy* proxy = nullptr;
  bool admin_listener = false;
  std::shared_ptr<bool> alive;
  std::string peer_ip;
  std::string xff_line;  // "X-Forwarded-For: PEER_IP\r\n", the line added when the client sent none
  // The exchange.
  enum class Kind : uint8_t { none, admin, proxied } kind = Kind::none;
  // What the exchange's deadline waits for, and so whose fault it is when it passes (see
  // exchange_timeout, the one place that acts on it). At most one wait at a time; none while the
  // exchange waits on nothing the proxy can time (an admin action in progress, between requests).
  enum class Wait : uint8_t {
    none,
    connect,        // the upstream connect (--connect-timeout): the replica's fault
    request_body,   // body bytes from the client, or the upstream taking the ones it has
                    // (--body-timeout, idle): the client's fault (408) unless the replica stopped
                    // reading the request
    response,       // the response head, once the whole request was written (--upstream-timeout):
                    // the replica's fault (504)
    response_body,  // the next response body bytes, or the client reading those queued
                    // (--body-timeout, idle): the replica's fault unless the client stopped reading
  } wait = Wait::none;
  bool req_done = false;       // the request's last byte arrived
  bool resp_started = false;   // the first response byte went to the client: no more failover
  bool resp_done = false;
  bool keep_alive = true;      // the client connection survives this exchange
  bool head_sent = false;      // the request head went to the current upstream
  bool body_sent = false;      // request body bytes went upstream and are not kept for a retry
  bool stopped_for_upstream = false;  // client reading stopped: upstream queue or buffer full
  bool swallow = false;        // discard the upstream body (404 turned into 400)
  bool skip_interim = false;   // an interim 1xx response is being skipped
  bool head_pending = false;   // the response head waits in out for the first body bytes
  bool same_retry_used = false;
  uint8_t attempts = 0;
  // The response bytes still on their way to the client (client_pending) when its reading was
  // last looked at: while it keeps shrinking, the client is reading, however slowly (0: never
  // looked, the exchange had not filled the client's queue).
  uint64_t pending_mark = 0;
  UpstreamConn* up = nullptr;
  uint64_t pos = 0;
  uint64_t deadline = 0;
  std::vector<uint32_t> tried;  // ring ids
  std::string req_head;         // the head sent upstream
  std::string body_buf;         // body bytes waiting for the upstream connection
  std::string out;              // the response head (held back while head_pending), local responses
  std::string admin_body;
  ClientConn* act_prev = nullptr;
  ClientConn* act_next = nullptr;
  bool on_active = false;
};

namespace {

constexpr size_t kReadBuffer = 16 * 1024;
constexpr size_t kHighWater = 256 * 1024;  // bytes queued on one side before the other stops reading
// Bytes queued for a client past which its next pipelined request waits: none. A client that reads
// its answers has nothing queued (writes go straight to the socket), so pipelining costs it nothing;
// one that does not read holds at most one response in the LB, as with HAProxy and NGINX.
constexpr size_t kPipelineQueueMax = 0;

ClientConn* client_of(HttpConn* c) { return reinterpret_cast<ClientConn*>(c); }
UpstreamConn* up_of(HttpConn* c) { return reinterpret_cast<UpstreamConn*>(c); }

void dispatch(ClientConn* c);
void respond_local(ClientConn* c, int status, const std::string& body,
                   std::string_view type = "application/json", std::string_view extra = {});

// Why an upstream attempt failed before its response started: decides the retry (--retry-on), the
// blame (a passive strike) and the status the client gets.
enum class Fail : uint8_t {
  connect,  // refused, reset or timed out while connecting: strike; retried on connect-failure
  empty,    // closed or reset before any response byte: strike once the client's request was
            // complete (a replica may give up on a slow client); retried on empty-response
  junk,     // a malformed response: strike; retried on junk-response
  timeout,  // no response head in time after the whole request was written: strike; 504;
            // retried on response-timeout
  local,    // this process ran out of descriptors, buffers or memory: no strike, no retry, 503
  dead,     // the replica was marked dead meanwhile: no strike; always retried when replayable
};

// The failure class of libuv error err met in an attempt whose ordinary class is usual.
Fail fail_of(int err, Fail usual) { return upstream_local_error(err) ? Fail::local : usual; }

// --- active exchanges (timeouts) ---------------------------------------------------------------

void active_add(ClientConn* c, uint64_t timeout_ms) {
  c->deadline = uv_now(c->proxy->loop) + timeout_ms;
  if (c->on_active) return;
  c->on_active = true;
  c->act_prev = nullptr;
  c->act_next = c->proxy->active;
  if (c->act_next) c->act_next->act_prev = c;
  c->proxy->active = c;
}

// Off the active list: the exchange waits for nothing (wait becomes none).
void active_remove(ClientConn* c) {
  c->wait = ClientConn::Wait::none;
  if (!c->on_active) return;
  if (c->act_prev) c->act_prev->act_next = c->act_next;
  else c->proxy->active = c->act_next;
  if (c->act_next) c->act_next->act_prev = c->act_prev;
  c->on_active = false;
  c->act_prev = c->act_next = nullptr;
}

// Starts waiting for w, ms from now (a wait already running for w is pushed back: idle timeouts).
void exchange_wait(ClientConn* c, ClientConn::Wait w, uint64_t ms) {
  c->wait = w;
  active_add(c, ms);
}

void exchange_unwait(ClientConn* c) { active_remove(c); }

// Once the client's request is complete and its last byte was written to the replica's socket,
// the response timeout starts: only now is a silent replica at fault.
void request_sent_check(ClientConn* c) {
  if (c->req_done && c->head_sent && c->up != nullptr && c->up->connected &&
      c->up->conn.write_queued == 0 && !c->resp_started && c->wait != ClientConn::Wait::response)
    exchange_wait(c, ClientConn::Wait::response, c->proxy->cfg->upstream_timeout_ms);
}

// --- upstream side -----------------------------------------------------------------------------

// Detaches the upstream from the exchange. keep: the exchange ended cleanly and the connection may be
// pooled; otherwise it is closed.
void detach_upstream(ClientConn* c, bool keep) {
  UpstreamConn* u = c->up;
  if (u == nullptr) return;
  c->up = nullptr;
  u->replica->inflight--;
  if (keep) {
    upstream_release(u, c->proxy->cfg->pool_idle_max);
  } else {
    u->client = nullptr;
    upstream_close(u);
  }
}

bool idempotent(llhttp_method_t m) {
  return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE || m == HTTP_PUT ||
         m == HTTP_DELETE;
}

// The current upstream failed before the response started (see Fail for the blame). Retries on the
// same replica once when a pooled connection turned out stale, else on the next replica clockwise
// while retries remain, --retry-on covers the class and the request can be replayed; otherwise
// answers 502, 504 for a response timeout or 503 for a local resource error.
void upstream_failed(ClientConn* c, const char* cause, Fail kind) {
  Proxy* p = c->proxy;
  const Config* cfg = p->cfg;
  UpstreamConn* u = c->up;
  Replica* r = u->replica;
  bool reused = u->served > 0;
  bool client_done = c->req_done;
  detach_upstream(c, false);
  p->metrics.upstream_failures++;
  if (kind == Fail::timeout) p->metrics.upstream_timeouts++;
  bool replayable = !c->head_sent || (idempotent(c->conn.head.method) && !c->body_sent);
  if (c->resp_started) {
    http_conn_close(&c->conn, true);
    return;
  }
  if (kind == Fail::local) {
    LOG_DEBUG("request to %s not sent: %s (a local resource error; the replica is not blamed)",
             r->name.c_str(), cause);
    respond_local(c, 503, proxy_error_json(std::string("the load balancer is out of resources (") +
                                           cause + "); no replica is at fault"));
    return;
  }
  if (reused && kind == Fail::empty && replayable && !c->same_retry_used) {
    c->same_retry_used = true;  // a kept-alive connection the replica had closed: not its fault
    c->head_sent = false;
    dispatch(c);
    return;
  }
  bool blame = kind == Fail::connect || kind == Fail::junk || kind == Fail::timeout ||
               (kind == Fail::empty && client_done);
  if (blame) {
    r->failures++;
    registry_passive_failure(r, cause);
  }
  c->tried.push_back(r->ring_id);
  uint8_t cls = kind == Fail::connect   ? RETRY_CONNECT_FAILURE
                : kind == Fail::empty   ? RETRY_EMPTY_RESPONSE
                : kind == Fail::junk    ? RETRY_JUNK_RESPONSE
                : kind == Fail::timeout ? RETRY_RESPONSE_TIMEOUT
                                        : 0xff;  // dead: the attempt never had a chance
  // Retried only when another replica is there to take it: with every one tried, the client gets
  // this failure's own status (504 after a timeout) rather than a generic 503.
  if (replayable && (cfg->retry_on & cls) != 0 && c->attempts < cfg->retries &&
      registry_pick(p->reg, c->pos, c->tried) != nullptr) {
    c->attempts++;
    p->metrics.retries++;
    c->head_sent = false;
    LOG_DEBUG("retry: %s failed (%s), trying the next replica", r->name.c_str(), cause);
    dispatch(c);
    return;
  }
  if (kind == Fail::timeout)
    respond_local(c, 504, proxy_error_json("replica '" + r->name + "' did not answer in time"));
  else
    respond_local(c, 502, proxy_error_json("replica '" + r->name + "' failed: " + cause));
}

void send_request(ClientConn* c) {
  UpstreamConn* u = c->up;
  uv_buf_t bufs[2] = {uv_buf_init(c->req_head.data(), static_cast<unsigned>(c->req_head.size())),
                      uv_buf_init(c->body_buf.data(), static_cast<unsigned>(c->body_buf.size()))};
  u->conn.expect_no_body = c->conn.head.method == HTTP_HEAD;
  int rc = http_conn_write(&u->conn, bufs, c->body_buf.empty() ? 1 : 2);
  c->head_sent = true;
  if (!c->body_buf.empty()) c->body_sent = true;
  c->body_buf.clear();
  if (rc != 0) {
    upstream_failed(c, uv_err_name(rc), fail_of(rc, Fail::empty));
    return;
  }
  if (c->req_done && u->conn.write_queued == 0)
    exchange_wait(c, ClientConn::Wait::response, c->proxy->cfg->upstream_timeout_ms);
  else
    exchange_wait(c, ClientConn::Wait::request_body, c->proxy->cfg->body_timeout_ms);
  http_conn_start(&u->conn);
  if (c->stopped_for_upstream && u->conn.write_queued < kHighWater) {
    c->stopped_for_upstream = false;
    http_conn_start(&c->conn);
  }
}

void on_up_connected(UpstreamConn* u, int status) {
  ClientConn* c = static_cast<ClientConn*>(u->client);
  if (c == nullptr) {  // the exchange went away while connecting
    upstream_close(u);
    return;
  }
  if (status != 0) {
    upstream_failed(c, uv_err_name(status), fail_of(status, Fail::connect));
    return;
  }
  send_request(c);
}

// Writes len bytes of response body to the client, preceded by the response head when it is still
// held back, in one write: a response that arrived in one read leaves in one writev, not two
// writes. len may be 0 (the head alone). Returns 0 or a libuv code.
int write_response(ClientConn* c, const char* data, size_t len) {
  if (!c->head_pending) return http_conn_write(&c->conn, data, len);
  c->head_pending = false;
  uv_buf_t bufs[2] = {uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size())),
                      uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len))};
  return http_conn_write(&c->conn, bufs, len > 0 ? 2 : 1);
}

// Passes an interim response (1xx other than 101) on to the client at once, as RFC 9110 §15.2 asks
// of a proxy: a client that sent Expect: 100-continue waits for it before sending its body (curl
// waits a second). Not to an HTTP/1.0 client, which does not know interim responses. The head is
// written as it is complete; the final response's head is held back as usual.
//
// An interim response has no body, so its Content-Length or Transfer-Encoding (a replica's
// mistake) is not passed on: a client or proxy in front that believed it would read the next
// response as that body. A replica sending interim responses faster than the client reads them
// is not read further while what is queued for the client is over the high-water mark
// (client_on_drain starts it again), as for a body: a flood of 1xx grew the LB by 200 MB a second.
void forward_interim(ClientConn* c, const HttpHead& h) {
  const HttpHead& req = c->conn.head;
  if (req.major != 1 || req.minor == 0 || c->resp_started) return;
  std::string& out = c->out;
  out.clear();
  http_append_status_line(&out, h.status);
  http_append_forwarded(&out, h, [](std::string_view name, const HttpHeader&) {
    return http_is_framing(name);
  });
  out.append("\r\n");
  if (http_conn_write(&c->conn, out.data(), out.size()) != 0) {
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
  uint64_t n = c->conn.write_queued;
  uv_os_fd_t fd;
  int outq = 0;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->conn.tcp), &fd) == 0 &&
      ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
    n += static_cast<uint64_t>(outq);
  return n;
}

void up_on_head(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = static_cast<ClientConn*>(u->client);
  if (c == nullptr) {
    upstream_close(u);
    return;
  }
  const HttpHead& h = hc->head;
  if (h.status < 100) {  // "HTTP/1.1 000": llhttp takes any 3 digits; no client knows what it means
    upstream_failed(c, "malformed response", Fail::junk);
    return;
  }
  // The LB forwards no Upgrade (it is hop-by-hop and tunnels are not supported yet), and a server
  // must not switch to a protocol the request did not offer (RFC 9110 §15.2.2): a 101 is malformed.
  // Passed on, it left the client waiting on a connection that had switched to nothing.
  if (h.status == 101) {
    upstream_failed(c, "101 Switching Protocols to a request without Upgrade", Fail::junk);
    return;
  }
  if (h.status >= 100 && h.status < 200) {
    c->skip_interim = true;  // 100 Continue and friends: the final response follows
    forward_interim(c, h);
    return;
  }
  registry_passive_success(u->replica);
  c->resp_started = true;
  active_remove(c);
  if (h.status == 404 && c->proxy->cfg->assignment_404) {
    c->swallow = true;
    std::string path(http_url_path(http_head_url(c->conn.head)));
    respond_local(c, 400, proxy_error_json("'" + path + "' endpoint does not exist in server replicas"));
    return;
  }
  const HttpHead& req = c->conn.head;
  bool no_body = req.method == HTTP_HEAD || h.status == 204 || h.status == 304;
  bool client_10 = req.major == 1 && req.minor == 0;
  bool dechunk = h.chunked && client_10 && !no_body;
  bool delimited = no_body || h.content_length >= 0 || (h.chunked && !client_10);
  if (!delimited || !h.keep_alive) c->keep_alive = false;
  if (http_server_stopping(&c->proxy->server)) c->keep_alive = false;

  std::string& out = c->out;
  out.clear();
  http_append_status_line(&out, h.status);
  // A 204 has no body whatever its framing headers say (RFC 9112 §6.3), and its sender must not
  // send them (RFC 9110 §8.6, RFC 9112 §6.1): they are not passed on, so that nothing after the LB
  // reads the next response as this one's body. (HEAD and 304 keep theirs: there they describe
  // the representation.)
  bool no_framing = h.status == 204;
  http_append_forwarded(&out, h, [dechunk, no_framing](std::string_view name, const HttpHeader&) {
    if (no_framing) return http_is_framing(name);
    return dechunk && http_iequals(name, "transfer-encoding");
  });
  if (!c->keep_alive) out.append("Connection: close\r\n");
  else if (client_10) out.append("Connection: keep-alive\r\n");
  out.append("\r\n");
  hc->body_mode = dechunk ? HttpBody::decoded : HttpBody::raw;
  metrics_response(&c->proxy->metrics, h.status);
  c->head_pending = true;  // written with the first body bytes, at the message end or in up_on_parsed
}

void up_on_body(HttpConn* hc, const char* data, size_t len) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = static_cast<ClientConn*>(u->client);
  if (c == nullptr || c->swallow || c->skip_interim) return;
  if (write_response(c, data, len) != 0) {
    http_conn_close(&c->conn);
    return;
  }
  if (c->conn.write_queued > kHighWater) {  // resumed by client_on_drain
    http_conn_stop(hc);
    c->pending_mark = client_pending(c);
  }
}

void exchange_done(ClientConn* c);

HttpNext up_on_message_end(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = static_cast<ClientConn*>(u->client);
  if (c == nullptr) {
    upstream_close(u);
    return HttpNext::pause;
  }
  if (c->skip_interim) {
    c->skip_interim = false;
    return HttpNext::parse;
  }
  u->replica->requests++;
  if (c->head_pending && write_response(c, nullptr, 0) != 0) http_conn_close(&c->conn);  // no body
  bool keep = hc->head.keep_alive && c->req_done;
  detach_upstream(c, keep);
  exchange_done(c);
  return keep ? HttpNext::parse : HttpNext::pause;
}

void up_on_error(HttpConn* hc, int err) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = static_cast<ClientConn*>(u->client);
  if (c == nullptr) {  // idle in the pool: the replica closed it
    upstream_close(u);
    return;
  }
  if (!c->resp_started) {
    if (err == HTTP_E_PARSE || err == HTTP_E_TOO_LARGE)
      upstream_failed(c, "malformed response", Fail::junk);
    else
      upstream_failed(c, uv_err_name(err), fail_of(err, Fail::empty));
    return;
  }
  // The response was cut short: the client cannot be given a complete answer.
  detach_upstream(c, false);
  http_conn_close(&c->conn, true);
}

// The replica took every request byte queued for it: the client may send more, and once its
// request is complete the response timeout starts.
void up_on_drain(HttpConn* hc) {
  UpstreamConn* u = up_of(hc);
  ClientConn* c = static_cast<ClientConn*>(u->client);
  if (c == nullptr) return;
  if (c->wait == ClientConn::Wait::request_body) {
    c->deadline = uv_now(c->proxy->loop) + c->proxy->cfg->body_timeout_ms;
    request_sent_check(c);
  }
  if (c->stopped_for_upstream) {
    c->stopped_for_upstream = false;
    http_conn_start(&c->conn);
  }
}

void up_on_close(HttpConn* hc) { upstream_free(up_of(hc)); }

// The bytes read from the replica so far are parsed: a response head still held back (its body has
// not arrived yet) goes to the client now.
// It is also where the response body idle timeout restarts: the replica just sent bytes.
void up_on_parsed(HttpConn* hc) {
  ClientConn* c = static_cast<ClientConn*>(up_of(hc)->client);
  if (c == nullptr) return;
  if (c->head_pending && write_response(c, nullptr, 0) != 0) {
    http_conn_close(&c->conn);
    return;
  }
  if (c->resp_started && !c->resp_done)
    exchange_wait(c, ClientConn::Wait::response_body, c->proxy->cfg->body_timeout_ms);
}

const HttpConnHandlers kUpstreamHandlers = {up_on_head,  up_on_body,  up_on_message_end, up_on_error,
                                            up_on_drain, up_on_close, up_on_parsed};

// --- routing -----------------------------------------------------------------------------------

// The routing key of the current request. Returns the request id to send upstream as X-Request-Id
// in *rid when the LB generated one.
std::string_view routing_key(ClientConn* c, char* rid_buf, bool* generated) {
  const Config* cfg = c->proxy->cfg;
  const HttpHead& h = c->conn.head;
  std::string_view v;
  *generated = false;
  switch (cfg->hash_key) {
    case HashKey::path: return http_url_path(http_head_url(h));
    case HashKey::ip: return c->peer_ip;
    case HashKey::header:
      if (http_head_get(h, cfg->hash_key_name, &v)) return v;
      break;
    case HashKey::cookie:
      if (http_head_get(h, "cookie", &v)) {
        size_t at = 0;
        while (at < v.size()) {
          size_t semi = v.find(';', at);
          std::string_view pair = v.substr(at, semi == std::string_view::npos ? v.npos : semi - at);
          while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
          size_t eq = pair.find('=');
          if (eq != v.npos && pair.substr(0, eq) == cfg->hash_key_name) return pair.substr(eq + 1);
          if (semi == std::string_view::npos) break;
          at = semi + 1;
        }
      }
      break;
    case HashKey::rid:
      if (http_head_get(h, "x-request-id", &v) && !v.empty()) return v;
      break;
  }
  // No key in the request: a fresh 6-digit request id, as the assignment's Rid.
  unsigned id = static_cast<unsigned>(100000 + c->proxy->rng() % 900000);
  for (int i = 5; i >= 0; i--, id /= 10) rid_buf[i] = static_cast<char>('0' + id % 10);
  rid_buf[6] = '\0';
  *generated = true;
  return std::string_view(rid_buf, 6);
}

// Builds the head sent upstream: the client's request line and end-to-end headers, with
// X-Forwarded-For and X-Request-Id added and HTTP/1.1 keep-alive towards the replica.
void build_request_head(ClientConn* c, std::string_view generated_rid) {
  const HttpHead& h = c->conn.head;
  std::string& out = c->req_head;
  out.clear();
  std::string_view url = http_head_url(h);
  out.append(llhttp_method_name(h.method));
  out.push_back(' ');
  // Was absolute-form without a path ("http://a", "http://a?q", "http://a#f"): the path is "/".
  if (h.authority_len > 0 && (url.empty() || url.front() != '/')) out.push_back('/');
  out.append(url);
  out.append(" HTTP/1.1\r\n");
  bool has_xff = false, has_host = false;
  bool absolute = h.authority_len > 0;  // its authority replaces Host (RFC 9112 §3.2.2)
  http_append_forwarded(&out, h, [&](std::string_view name, const HttpHeader&) {
    if (http_iequals(name, "x-forwarded-for")) {  // re-sent below with the client's address
      has_xff = true;
      return true;
    }
    if (http_iequals(name, "host")) {
      has_host = true;
      return absolute;
    }
    return false;
  });
  if (absolute) {
    out.append("Host: ");
    out.append(http_head_authority(h));
    out.append("\r\n");
  } else if (!has_host) {
    out.append("Host: ringlb\r\n");
  }
  if (has_xff) {
    // Every X-Forwarded-For the client sent, in order, then the client's address: one list, as
    // several header lines of one field mean (RFC 9110 §5.3).
    out.append("X-Forwarded-For: ");
    for (const HttpHeader& hd : h.headers) {
      if (!http_iequals(http_head_name(h, hd), "x-forwarded-for")) continue;
      std::string_view v = http_head_value(h, hd);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      if (v.empty()) continue;
      out.append(v);
      out.append(", ");
    }
    out.append(c->peer_ip);
    out.append("\r\n");
  } else {
    out.append(c->xff_line);
  }
  if (!generated_rid.empty()) {
    out.append("X-Request-Id: ");
    out.append(generated_rid);
    out.append("\r\n");
  }
  out.append("\r\n");
}

void dispatch(ClientConn* c) {
  Proxy* p = c->proxy;
  Replica* r = registry_pick(p->reg, c->pos, c->tried);
  if (r == nullptr) {
    p->metrics.no_replica++;
    respond_local(c, 503, proxy_error_json(c->tried.empty() ? "no replica is available"
                                                             : "no replica could serve the request"));
    return;
  }
  int err = 0;
  UpstreamConn* u = upstream_acquire(r, &kUpstreamHandlers, kReadBuffer, on_up_connected, &err);
  if (u == nullptr) {
    if (upstream_local_error(err)) {  // no socket for it (EMFILE...): not the replica's fault
      LOG_DEBUG("cannot connect to %s: %s (a local resource error; the replica is not blamed)",
               r->name.c_str(), uv_strerror(err));
      respond_local(c, 503, proxy_error_json(std::string("the load balancer is out of resources (") +
                                             uv_err_name(err) + ": " + uv_strerror(err) +
                                             "); no replica is at fault"));
      return;
    }
    registry_passive_failure(r, uv_err_name(err));
    c->tried.push_back(r->ring_id);
    respond_local(c, 502, proxy_error_json("cannot connect to replica '" + r->name + "'"));
    return;
  }
  u->client = c;
  c->up = u;
  r->inflight++;
  if (u->connected) {
    send_request(c);
  } else {
    exchange_wait(c, ClientConn::Wait::connect, p->cfg->connect_timeout_ms);
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
         path == "/readyz";
}

void respond_local(ClientConn* c, int status, const std::string& body, std::string_view type,
                   std::string_view extra) {
  if (c->resp_started && !c->swallow) {  // a response is already on its way: it cannot be replaced
    http_conn_close(&c->conn, true);
    return;
  }
  detach_upstream(c, false);
  exchange_unwait(c);
  c->resp_started = true;
  if (http_server_stopping(&c->proxy->server)) c->keep_alive = false;
  c->out.clear();
  http_append_response(&c->out, status, type, body, c->keep_alive, extra);
  if (c->conn.head.method == HTTP_HEAD) c->out.resize(c->out.size() - body.size());
  metrics_response(&c->proxy->metrics, status);
  if (http_conn_write(&c->conn, c->out.data(), c->out.size()) != 0) {
    http_conn_close(&c->conn);
    return;
  }
  // Always: the upstream was detached above, so no up_on_message_end will complete the exchange
  // (a 404 turned into 400 used to leave it open: the connection stalled and shutdown never ended).
  exchange_done(c);
}

// The response is complete. Once the request is complete too, the connection goes on with the next
// request, or closes when either side asked for it (after its queued bytes are written). The rest
// of a request body still to come is discarded, with the body idle timeout running.
//
// Memory bound: the next pipelined request is read only once nothing is queued for this client
// (kPipelineQueueMax), for local and proxied responses alike; otherwise client_on_drain resumes
// once the client has read it.
void exchange_done(ClientConn* c) {
  c->resp_done = true;
  if (c->req_done) exchange_unwait(c);
  else exchange_wait(c, ClientConn::Wait::request_body, c->proxy->cfg->body_timeout_ms);
  if (!c->keep_alive) {
    if (c->conn.write_queued == 0) http_conn_close(&c->conn);
    return;
  }
  if (c->req_done && c->conn.paused && c->conn.write_queued <= kPipelineQueueMax)
    http_conn_resume(&c->conn);
  // Otherwise on_message_end (still to come, or on the stack) or client_on_drain carries on.
}

// Answers a request the LB refuses (a verdict of http_validate.h) and closes the connection after
// the answer: the bytes after a refused head (its body, the tunnel after CONNECT, what follows a
// broken framing) are not read as requests. Nothing of the request goes upstream.
void reject_request(ClientConn* c, HttpVerdict verdict) {
  c->keep_alive = false;
  c->kind = ClientConn::Kind::none;
  c->conn.body_mode = HttpBody::decoded;
  LOG_DEBUG("refused a request: %d %s", verdict.status, verdict.reason);
  respond_local(c, verdict.status, proxy_error_json(verdict.reason), "application/json",
                verdict.status == 405 ? "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE\r\n"
                                      : "");
}

void client_on_head(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  Proxy* p = c->proxy;
  const HttpHead& h = hc->head;
  p->metrics.requests++;
  if (c->peer_ip.empty()) fill_peer(c);
  c->kind = ClientConn::Kind::none;
  c->req_done = c->resp_started = c->resp_done = false;
  c->head_sent = c->body_sent = c->swallow = c->skip_interim = c->same_retry_used = false;
  c->head_pending = false;
  c->attempts = 0;
  c->pending_mark = 0;
  c->tried.clear();
  c->body_buf.clear();
  c->admin_body.clear();
  c->keep_alive = h.keep_alive && !http_server_stopping(&p->server);

  HttpVerdict verdict = http_validate_request(h);
  if (verdict.status != 0) {
    reject_request(c, verdict);
    return;
  }
  http_head_origin_form(&hc->head);
  std::string_view path = http_url_path(http_head_url(h));
  bool admin_here = p->admin_separate ? c->admin_listener : true;
  if (c->admin_listener || (admin_here && is_admin_path(path))) {
    c->kind = ClientConn::Kind::admin;
    hc->body_mode = HttpBody::decoded;
    exchange_wait(c, ClientConn::Wait::request_body, p->cfg->body_timeout_ms);
    return;
  }
  c->kind = ClientConn::Kind::proxied;
  hc->body_mode = HttpBody::raw;
  char rid[8];
  bool generated;
  std::string_view key = routing_key(c, rid, &generated);
  c->pos = ring_position(p->reg->ring.get(), key);
  build_request_head(c, generated ? std::string_view(rid, 6) : std::string_view());
  dispatch(c);
}

void client_on_body(HttpConn* hc, const char* data, size_t len) {
  ClientConn* c = client_of(hc);
  if (c->wait == ClientConn::Wait::request_body)  // the client is sending: idle timeout restarts
    c->deadline = uv_now(c->proxy->loop) + c->proxy->cfg->body_timeout_ms;
  if (c->kind == ClientConn::Kind::admin) {
    if (c->resp_started) return;
    if (c->admin_body.size() + len > c->proxy->cfg->admin_body_limit) {
      c->keep_alive = false;
      respond_local(c, 413, proxy_error_json("request body is larger than " +
                                             std::to_string(c->proxy->cfg->admin_body_limit) + " bytes"));
      return;
    }
    c->admin_body.append(data, len);
    return;
  }
  // Answered already (by the LB, or a replica's 404 turned into 400): discard the rest. A replica
  // whose response is still streaming gets the rest of the body: it may read it before it ends its
  // response, and stopping here would stall it and then blame it for the stall.
  if (c->resp_done || c->swallow || (c->resp_started && c->up == nullptr)) return;
  if (c->up != nullptr && c->head_sent) {
    c->body_sent = true;
    if (int rc = http_conn_write(&c->up->conn, data, len); rc != 0) {
      upstream_failed(c, uv_err_name(rc), fail_of(rc, Fail::empty));
      return;
    }
    if (c->up && c->up->conn.write_queued > kHighWater) {
      c->stopped_for_upstream = true;
      http_conn_stop(hc);
    }
    return;
  }
  c->body_buf.append(data, len);  // not connected yet
  if (c->body_buf.size() > kHighWater) {
    c->stopped_for_upstream = true;
    http_conn_stop(hc);
  }
}

HttpNext client_on_message_end(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  c->req_done = true;
  if (c->kind == ClientConn::Kind::admin && !c->resp_started) {
    exchange_unwait(c);  // the admin action may take its time (/add waits for heartbeats)
    admin_handle(c->proxy, ClientRef{c->alive, c}, hc->head, c->admin_body);
  } else if (c->resp_done) {
    exchange_unwait(c);  // answered early; the body has now all been read
  } else {
    request_sent_check(c);
  }
  // With bytes still queued for the client the next request waits for client_on_drain (see
  // exchange_done).
  if (c->resp_done && c->keep_alive && hc->write_queued <= kPipelineQueueMax) return HttpNext::parse;
  return HttpNext::pause;
}

void client_on_error(HttpConn* hc, int err) {
  ClientConn* c = client_of(hc);
  bool in_exchange = c->kind != ClientConn::Kind::none && !c->resp_done;
  if (err == HTTP_E_PARSE || err == HTTP_E_TOO_LARGE) {
    // A request that broke before its head completed, after a finished exchange (pipelined behind
    // a good one), is a new exchange: it gets its own answer before the close.
    if (c->req_done && c->resp_done) {
      c->resp_started = c->resp_done = c->swallow = c->skip_interim = c->head_pending = false;
      c->req_done = false;
    }
    if (!c->resp_started) {
      // The request's upstream connection, if it got the head already, is closed with it (it
      // holds half a request).
      c->kind = ClientConn::Kind::none;
      detach_upstream(c, false);
      if (err == HTTP_E_TOO_LARGE) {
        reject_request(c, HttpVerdict{431, "request header fields too large"});
        return;
      }
      HttpVerdict v = http_parse_error_verdict(llhttp_get_errno(&hc->parser), hc->parse_error);
      c->keep_alive = false;
      respond_local(c, v.status, proxy_error_json(std::string("malformed request: ") + v.reason));
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
// the high-water mark is read now.
void client_on_drain(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  if (c->wait == ClientConn::Wait::response_body)
    c->deadline = uv_now(c->proxy->loop) + c->proxy->cfg->body_timeout_ms;
  if (c->up && hc->write_queued == 0 && !c->up->conn.reading) http_conn_start(&c->up->conn);
  if (c->resp_done && !c->keep_alive) {
    http_conn_close(hc);
    return;
  }
  if (c->resp_done && c->req_done && hc->paused) http_conn_resume(hc);
}

void client_on_close(HttpConn* hc) {
  ClientConn* c = client_of(hc);
  detach_upstream(c, false);
  active_remove(c);
  *c->alive = false;
  delete c;
}

const HttpConnHandlers kClientHandlers = {client_on_head, client_on_body, client_on_message_end,
                                          client_on_error, client_on_drain, client_on_close};

HttpConn* accept_client(HttpServer* s, bool admin) {
  Proxy* p = static_cast<Proxy*>(s->owner);
  ClientConn* c = new ClientConn();
  c->proxy = p;
  c->admin_listener = admin;
  c->alive = std::make_shared<bool>(true);
  c->req_head.reserve(1024);  // one allocation per connection, not one per doubling
  c->out.reserve(512);
  if (http_conn_init(p->loop, &c->conn, HTTP_REQUEST, &kClientHandlers, kReadBuffer) != 0) {
    delete c;
    return nullptr;
  }
  p->metrics.connections++;
  return &c->conn;
}

HttpConn* on_accept(HttpServer* s) { return accept_client(s, false); }

HttpConn* on_accept_admin(HttpServer* s) { return accept_client(s, true); }

// The exchange's deadline passed: the one place that acts on a timeout, by what it waited for.
void exchange_timeout(ClientConn* c) {
  using Wait = ClientConn::Wait;
  Wait w = c->wait;
  exchange_unwait(c);
  switch (w) {
    case Wait::none:
      return;
    case Wait::connect:
      if (c->up != nullptr) upstream_failed(c, "connect timeout", Fail::connect);
      return;
    case Wait::request_body:
      if (c->resp_started) {  // answered already; the rest of the body never came
        c->keep_alive = false;
        http_conn_close(&c->conn, true);
        return;
      }
      if (c->up != nullptr && c->up->conn.write_queued > 0) {
        // The client sent its bytes; the replica stopped taking them.
        upstream_failed(c, "replica stopped reading the request", Fail::timeout);
        return;
      }
      // The client stopped sending its body: its fault alone. The upstream connection (which has
      // part of a request) is closed, not pooled, and the replica is not blamed.
      c->keep_alive = false;
      respond_local(c, 408, proxy_error_json("the request body did not arrive in time (more than " +
                                             std::to_string(c->proxy->cfg->body_timeout_ms) +
                                             " ms without a byte)"));
      return;
    case Wait::response:
      if (c->up != nullptr) upstream_failed(c, "timeout", Fail::timeout);
      return;
    case Wait::response_body:
      if (c->conn.write_queued > 0 && c->pending_mark > 0) {
        // The client's queue is full: a client that read something since the last look is slow,
        // not gone (one reading a large response at 50 KiB/s was cut after --body-timeout).
        uint64_t pending = client_pending(c);
        if (pending < c->pending_mark) {
          c->pending_mark = pending;
          exchange_wait(c, Wait::response_body, c->proxy->cfg->body_timeout_ms);
          return;
        }
      }
      if (c->up != nullptr && c->conn.write_queued == 0 && c->req_done) {
        // The client reads and sent its whole request; the replica stopped sending mid-body: cut
        // and blamed. (A replica that answered early may be waiting for the rest of the upload.)
        Replica* r = c->up->replica;
        r->failures++;
        registry_passive_failure(r, "response body timeout");
        LOG_DEBUG("response from %s stalled mid-body: cut", r->name.c_str());
      }
      // Otherwise the client stopped reading its response: its connection goes, nobody is blamed.
      detach_upstream(c, false);
      http_conn_close(&c->conn, true);
      return;
  }
}

// Every 100 ms: exchanges past their deadline time out (exchange_timeout), and replayable
// exchanges still waiting for the first response byte of a replica that was marked dead meanwhile
// (a hung replica found by its heartbeats) go to the next replica now instead of waiting until the
// dead one is killed.
void on_sweep(uv_timer_t* t) {
  Proxy* p = static_cast<Proxy*>(t->data);
  uint64_t now = uv_now(p->loop);
  ClientConn* c = p->active;
  while (c != nullptr) {
    ClientConn* next = c->act_next;
    if (c->conn.closing) {
      exchange_unwait(c);
    } else if (now >= c->deadline) {
      exchange_timeout(c);
    } else if (c->up != nullptr && c->up->replica->state == ReplicaState::dead &&
               !c->resp_started &&
               (!c->head_sent || (idempotent(c->conn.head.method) && !c->body_sent))) {
      upstream_failed(c, "replica marked dead", Fail::dead);
    }
    c = next;
  }
}

// The listener reached --max-conns and stopped accepting. Said once, then at most once a minute
// while it keeps happening: an fd attack must not flood the log.
void on_server_full(HttpServer* s) {
  Proxy* p = static_cast<Proxy*>(s->owner);
  uint64_t now = uv_now(p->loop);
  if (p->full_logged && now - p->full_logged_at < 60000) return;
  p->full_logged = true;
  p->full_logged_at = now;
  LOG_WARN("%u client connections open (--max-conns): new clients wait in the listen backlog until "
           "one closes",
           s->config.max_conns);
}

void on_part_closed(uv_handle_t* h) {
  Proxy* p = static_cast<Proxy*>(h->data);
  if (--p->open == 0 && p->on_stopped) p->on_stopped();
}

void on_server_stopped(HttpServer* s) {
  Proxy* p = static_cast<Proxy*>(s->owner);
  if (--p->open == 1) {  // only the sweep is left
    uv_close(reinterpret_cast<uv_handle_t*>(&p->sweep), on_part_closed);
  }
}

}  // namespace

std::string proxy_error_json(const std::string& text) {
  std::string out = "{\"message\": \"<Error> ";
  http_append_json_escaped(&out, text);
  out.append("\", \"status\": \"failure\"}");
  return out;
}

void proxy_respond(const ClientRef& ref, int status, const std::string& body,
                   std::string_view content_type, std::string_view extra) {
  if (!*ref.alive) return;
  ClientConn* c = ref.conn;
  if (c->conn.closing || c->resp_started) return;
  respond_local(c, status, body, content_type, extra);
}

int proxy_start(Proxy* p, uv_loop_t* loop, const Config* cfg, Registry* reg, std::string* err) {
  p->loop = loop;
  p->cfg = cfg;
  p->reg = reg;
  p->rng.seed(uv_hrtime() ^ static_cast<uint64_t>(getpid()));
  HttpServerConfig sc;
  sc.header_timeout_ms = cfg->header_timeout_ms;
  sc.idle_timeout_ms = cfg->idle_timeout_ms;
  sc.max_conns = cfg->max_conns;
  p->server.config = sc;
  p->server.owner = p;
  p->server.on_accept = on_accept;
  p->server.on_stopped = on_server_stopped;
  p->server.on_full = on_server_full;
  std::string bound;
  int rc = http_server_listen(&p->server, loop, cfg->listen, &bound);
  if (rc != 0) {
    *err = "cannot listen on " + cfg->listen + ": " + uv_strerror(rc);
    return rc;
  }
  p->open++;
  LOG_INFO("listening on %s", bound.c_str());
  if (!cfg->admin_listen.empty()) {
    p->admin_separate = true;
    p->admin_server.config = sc;
    p->admin_server.owner = p;
    p->admin_server.on_accept = on_accept_admin;
    p->admin_server.on_stopped = on_server_stopped;
    p->admin_server.on_full = on_server_full;
    rc = http_server_listen(&p->admin_server, loop, cfg->admin_listen, &bound);
    if (rc != 0) {
      *err = "cannot listen on " + cfg->admin_listen + ": " + uv_strerror(rc);
      return rc;
    }
    p->open++;
    LOG_INFO("admin routes on %s", bound.c_str());
  }
  uv_timer_init(loop, &p->sweep);
  p->sweep.data = p;
  p->open++;
  uv_timer_start(&p->sweep, on_sweep, 100, 100);
  uv_unref(reinterpret_cast<uv_handle_t*>(&p->sweep));
  return 0;
}

void proxy_stop(Proxy* p, std::function<void()> on_stopped) {
  p->on_stopped = std::move(on_stopped);
  uv_ref(reinterpret_cast<uv_handle_t*>(&p->sweep));
  http_server_stop(&p->server);
  if (p->admin_separate) http_server_stop(&p->admin_server);
}
