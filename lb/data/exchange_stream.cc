// exchange_stream: the seam between the exchange and HTTP/2 (exchange_stream.h). A client
// connection that opens with the HTTP/2 preface is handed to an h2 session (lb/data/h2_client.h)
// here; each stream of that session then runs an exchange of its own through the functions below,
// which feed the exchange's request-side callbacks (client_on_head, client_on_body,
// client_on_message_end in exchange.cc) as the HTTP/1 connection's parser would.
#include "lb/data/exchange_stream.h"

#include <new>

#include "lb/data/exchange_impl.h"
#include "lb/data/h2_client.h"
#include "lb/http/tls.h"

// The HTTP/2 connection preface as the connection's first bytes (h2c with prior knowledge, or
// h2 that ALPN chose over TLS): the connection becomes an HTTP/2 session. The bytes after the
// preface are still buffered; they go to the session from the check handle (we are inside the
// connection's parse).
void exchange_h2_start(ClientConn* c) {
  HttpConn* hc = &c->conn;
  exchange_fill_peer(c);
  c->h2 = h2_conn_new(c->w, hc, c->peer_ip, tls_on(hc));
  if (c->h2 == nullptr) {
    http_conn_close(hc);
    return;
  }
  c->state = ExState::h2;
  c->keep_alive = false;
  http_conn_set_raw(hc);
  exchange_defer_resume(c);
}

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
  exchange_reject(c, HttpVerdict{status, reason});
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
  exchange_detach_upstream(c, false);
  exchange_unwait(c);
  if (c->admin_call != 0) w->admin_waiting.erase(c->admin_call);
  if (c->deferred) {
    for (ClientConn*& d : w->deferred)
      if (d == c) d = nullptr;
  }
  delete c;
}
