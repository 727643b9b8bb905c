#include "lb/data/h2_client.h"

#include <nghttp2/nghttp2.h>

#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "lb/data/exchange.h"
#include "lb/data/exchange_stream.h"
#include "lb/data/worker_state.h"
#include "lb/http/container_of.h"
#include "lb/http/http_conn.h"
#include "lb/log.h"

namespace {

constexpr uint32_t kMaxStreams = 100;                // SETTINGS_MAX_CONCURRENT_STREAMS
constexpr int32_t kStreamWindow = 256 * 1024;        // SETTINGS_INITIAL_WINDOW_SIZE (request DATA)
constexpr int32_t kConnWindow = 1024 * 1024;         // the connection's receive window
constexpr size_t kWireHigh = 64 * 1024;              // frames made while the client queue is under
constexpr size_t kReadStopQueued = 256 * 1024;       // the client's input waits over this queue
constexpr size_t kWriteBatch = 64 * 1024;            // frames gathered into one socket write
constexpr uint32_t kResetsPerSecond = 200;           // client resets per second before GOAWAY
constexpr uint64_t kTickMs = 250;                    // drain, idle and reset-window checks

enum class H2St : uint8_t {
  head,    // HEADERS being received: the request head accumulates
  open,    // the exchange runs
};

struct H2Stream {
  H2Conn* h = nullptr;
  int32_t id = 0;
  H2St st = H2St::head;
  ClientConn* ex = nullptr;  // the stream's exchange (freed by exchange_stream_close)
  std::string out;           // response body bytes for the client, from out_off
  size_t out_off = 0;
  bool out_end = false;      // the response is complete once out is sent
  bool submitted = false;    // the response head went to nghttp2
  bool paused = false;       // the exchange holds the request body back (no WINDOW_UPDATE)
  bool chunked_up = false;   // the request body goes upstream chunked (no content-length)
  bool has_host = false;
  bool req_ended = false;
  bool bad_path = false;     // :path has a byte an HTTP/1.1 request target cannot carry
  size_t head_fields = 0;    // the response head's header fields: those after it are trailers
  std::vector<std::string> trailers;  // the replica's trailer fields (names lowercased, values)
  size_t unconsumed = 0;     // request DATA bytes not yet acknowledged to the client
  uint64_t began = 0;        // loop time its HEADERS began (the header timeout while in head)
  std::string authority, cookie;
  H2Stream* prev = nullptr;
  H2Stream* next = nullptr;
};

}  // namespace

struct H2Conn {
  Worker* w = nullptr;
  HttpConn* hc = nullptr;  // the client connection (raw), owned by its ClientConn
  std::string peer_ip;
  bool tls = false;
  nghttp2_session* s = nullptr;
  uv_idle_t flush_idle;    // runs the flush once the callbacks on the stack have returned
  uv_timer_t tick;
  int handles = 0;
  bool flush_armed = false;
  bool freed = false;      // h2_conn_free ran: waiting for the handles to close
  bool goaway = false;     // a graceful GOAWAY went out (drain or idle)
  bool calm = false;       // ENHANCE_YOUR_CALM: the connection ends
  bool read_stopped = false;
  H2Stream* streams = nullptr;
  uint32_t nstreams = 0;
  uint64_t window_start = 0;  // rapid reset: resets counted since
  uint32_t resets = 0;
  uint64_t idle_since = 0;    // loop time the last stream ended
  std::string wbuf;           // frames gathered for one write
  std::vector<int32_t> drained;  // streams whose queue emptied during a flush
};

namespace {

H2Stream* stream_of(const ClientConn* c) { return static_cast<H2Stream*>(c->side_data); }

void flush(H2Conn* h);

void on_flush_idle(uv_idle_t* i) {
  H2Conn* h = container_of(i, &H2Conn::flush_idle);
  uv_idle_stop(i);
  h->flush_armed = false;
  flush(h);
}

void schedule(H2Conn* h) {
  if (h->flush_armed || h->freed) return;
  h->flush_armed = true;
  uv_idle_start(&h->flush_idle, on_flush_idle);
}

// The connection ends: frames already made go first (the close waits for the queue).
void conn_end(H2Conn* h) {
  if (h->hc->closing) return;
  if (h->hc->write_queued == 0) http_conn_close(h->hc);
  else http_conn_stop(h->hc);  // closed by h2_conn_on_drain
}

bool conn_over(H2Conn* h) {
  return !nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s);
}

// Makes frames while the client takes them, writes them in batches, then tells the exchanges
// whose queue emptied (after the session's own work: they may give more at once).
void flush(H2Conn* h) {
  if (h->freed || h->hc->closing) return;
  while (h->hc->write_queued < kWireHigh) {
    const uint8_t* data;
    ssize_t n = nghttp2_session_mem_send(h->s, &data);
    if (n < 0) {
      LOG_DEBUG("h2: %s", nghttp2_strerror(static_cast<int>(n)));
      http_conn_close(h->hc);
      return;
    }
    if (n > 0) h->wbuf.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    if (n == 0 || h->wbuf.size() >= kWriteBatch) {
      if (!h->wbuf.empty() && http_conn_write(h->hc, h->wbuf.data(), h->wbuf.size()) != 0) {
        http_conn_close(h->hc);
        return;
      }
      h->wbuf.clear();
      if (n == 0) break;
    }
  }
  std::vector<int32_t> ids;
  ids.swap(h->drained);
  for (int32_t id : ids) {
    auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(h->s, id));
    if (st != nullptr && st->ex != nullptr) exchange_stream_drained(st->ex);
  }
  if (conn_over(h) || (h->goaway && h->nstreams == 0)) conn_end(h);
}

void stream_unlink(H2Conn* h, H2Stream* st) {
  if (st->prev) st->prev->next = st->next;
  else h->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  h->nstreams--;
  if (h->nstreams == 0) h->idle_since = uv_now(h->w->loop);
}

// --- the exchange's client side ----------------------------------------------------------------

nghttp2_nv nv(const std::string& name, const std::string& value);

// The replica's trailers end the stream in a HEADERS frame of their own after the last DATA (which
// then does not carry END_STREAM). Inside on_data_read, as nghttp2_submit_trailer asks; nghttp2
// copies the fields. If it refuses them, the stream ends with the DATA, without trailers.
void submit_trailers(H2Stream* st, uint32_t* flags) {
  std::vector<nghttp2_nv> nva;
  for (size_t i = 0; i + 1 < st->trailers.size(); i += 2)
    nva.push_back(nv(st->trailers[i], st->trailers[i + 1]));
  int rv = nghttp2_submit_trailer(st->h->s, st->id, nva.data(), nva.size());
  if (rv == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  else LOG_DEBUG("h2: stream %d: trailers not submitted: %s", st->id, nghttp2_strerror(rv));
  st->trailers.clear();
}

ssize_t on_data_read(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                     nghttp2_data_source* source, void*) {
  auto* st = static_cast<H2Stream*>(source->ptr);
  size_t have = st->out.size() - st->out_off;
  size_t n = have < length ? have : length;
  memcpy(buf, st->out.data() + st->out_off, n);
  st->out_off += n;
  if (st->out_off == st->out.size()) {
    st->out.clear();
    st->out_off = 0;
    if (have > 0 && !st->out_end) st->h->drained.push_back(st->id);
  } else if (st->out_off >= kWriteBatch && st->out_off * 2 >= st->out.size()) {
    st->out.erase(0, st->out_off);
    st->out_off = 0;
  }
  if (st->out.empty() && st->out_end) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!st->trailers.empty()) submit_trailers(st, flags);
    return static_cast<ssize_t>(n);
  }
  if (n == 0) return NGHTTP2_ERR_DEFERRED;
  return static_cast<ssize_t>(n);
}

void submit(H2Stream* st, std::vector<nghttp2_nv>& nva) {
  st->submitted = true;
  nghttp2_data_provider prd;
  prd.source.ptr = st;
  prd.read_callback = on_data_read;
  int rv = nghttp2_submit_response(st->h->s, st->id, nva.data(), nva.size(), &prd);
  if (rv != 0) LOG_DEBUG("h2: stream %d: response not submitted: %s", st->id, nghttp2_strerror(rv));
  schedule(st->h);
}

nghttp2_nv nv(const std::string& name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

// Header names an h2 response must not carry (RFC 9113 §8.2.2) besides HTTP/1's hop-by-hop ones.
bool not_for_h2(std::string_view name) {
  return http_is_hop_by_hop(name) || http_iequals(name, "transfer-encoding") ||
         http_iequals(name, "keep-alive") || http_iequals(name, "proxy-connection") ||
         http_iequals(name, "upgrade") || http_iequals(name, "connection");
}

void side_response_head(ClientConn* c, const HttpHead& resp) {
  H2Stream* st = stream_of(c);
  st->head_fields = resp.headers.size();
  std::vector<std::string> text;  // names (lowercased) and values, kept until submitted (copied)
  text.reserve(2 + 2 * resp.headers.size());
  text.emplace_back(":status");
  text.emplace_back(std::to_string(resp.status));
  for (const HttpHeader& hd : resp.headers) {
    std::string_view name = http_head_name(resp, hd);
    if (not_for_h2(name)) continue;
    std::string lower(name);
    for (char& ch : lower) ch = static_cast<char>(http_ascii_lower(ch));
    text.push_back(std::move(lower));
    std::string_view v = http_head_value(resp, hd);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    text.emplace_back(v);
  }
  std::vector<nghttp2_nv> nva;
  for (size_t i = 0; i + 1 < text.size(); i += 2) nva.push_back(nv(text[i], text[i + 1]));
  submit(st, nva);
}

int side_response_body(ClientConn* c, const char* data, size_t len) {
  H2Stream* st = stream_of(c);
  st->out.append(data, len);
  nghttp2_session_resume_data(st->h->s, st->id);
  schedule(st->h);
  return 0;
}

void side_response_end(ClientConn* c, const HttpHead& resp) {
  H2Stream* st = stream_of(c);
  for (size_t i = st->head_fields; i < resp.headers.size(); i++) {  // the trailers, if any
    std::string_view name = http_head_name(resp, resp.headers[i]);
    if (name.empty() || http_trailer_forbidden(name)) continue;
    std::string lower(name);
    for (char& ch : lower) ch = static_cast<char>(http_ascii_lower(ch));
    std::string_view v = http_head_value(resp, resp.headers[i]);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    st->trailers.push_back(std::move(lower));
    st->trailers.emplace_back(v);
  }
  st->out_end = true;
  nghttp2_session_resume_data(st->h->s, st->id);
  schedule(st->h);
}

void side_local_response(ClientConn* c, int status, std::string_view type, const std::string& body,
                         std::string_view extra) {
  H2Stream* st = stream_of(c);
  std::vector<std::string> text;
  text.emplace_back(":status");
  text.emplace_back(std::to_string(status));
  text.emplace_back("content-type");
  text.emplace_back(type);
  text.emplace_back("content-length");
  text.emplace_back(std::to_string(body.size()));
  while (!extra.empty()) {  // "Name: value\r\n" lines
    size_t eol = extra.find("\r\n");
    std::string_view line = extra.substr(0, eol);
    extra.remove_prefix(eol == std::string_view::npos ? extra.size() : eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(line.substr(0, colon));
    for (char& ch : name) ch = static_cast<char>(http_ascii_lower(ch));
    if (not_for_h2(name)) continue;
    std::string_view v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    text.push_back(std::move(name));
    text.emplace_back(v);
  }
  if (c->conn.head.method != HTTP_HEAD) st->out.append(body);
  st->out_end = true;
  std::vector<nghttp2_nv> nva;
  for (size_t i = 0; i + 1 < text.size(); i += 2) nva.push_back(nv(text[i], text[i + 1]));
  submit(st, nva);
}

void side_reset(ClientConn* c) {
  H2Stream* st = stream_of(c);
  nghttp2_submit_rst_stream(st->h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
  schedule(st->h);
}

void side_stop_reading(ClientConn* c) { stream_of(c)->paused = true; }

void side_start_reading(ClientConn* c) {
  H2Stream* st = stream_of(c);
  st->paused = false;
  if (st->unconsumed > 0) {
    nghttp2_session_consume(st->h->s, st->id, st->unconsumed);
    st->unconsumed = 0;
    schedule(st->h);
  }
}

size_t side_queued(const ClientConn* c) {
  const H2Stream* st = stream_of(c);
  return st->out.size() - st->out_off;
}

const ClientSide kSide = {side_response_head, side_response_body,  side_response_end,
                          side_local_response, side_reset,        side_stop_reading,
                          side_start_reading,  side_queued};

// --- nghttp2's callbacks (inside mem_recv / mem_send only) ------------------------------------

H2Conn* conn_of(void* user) { return static_cast<H2Conn*>(user); }

int on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  H2Conn* h = conn_of(user);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto* st = new (std::nothrow) H2Stream();
  if (st == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  st->ex = exchange_stream_open(h->w, &kSide, st, h->peer_ip, h->tls);
  if (st->ex == nullptr) {
    delete st;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  st->h = h;
  st->id = f->hd.stream_id;
  st->began = uv_now(h->w->loop);
  st->next = h->streams;
  if (st->next) st->next->prev = st;
  h->streams = st;
  h->nstreams++;
  h->w->counters.h2_streams++;
  worker_report_soon(h->w);
  nghttp2_session_set_stream_user_data(s, st->id, st);
  return 0;
}

// The method a :method names, among HTTP's (llhttp's HTTP_METHOD_MAP: what an HTTP/1.1 replica
// parses; not PRI, not RTSP's). Looked up by name only: llhttp_method_name aborts the process on a
// number that is no method, and walking the numbers met one for every :method it did not know (a
// client's HEADERS with :method FOO stopped the LB; found by fuzz_h2).
llhttp_method_t method_of(std::string_view name, bool* ok) {
  *ok = true;
#define RINGLB_METHOD(NUM, NAME, STRING) \
  if (name == #STRING) return HTTP_##NAME;
  HTTP_METHOD_MAP(RINGLB_METHOD)
#undef RINGLB_METHOD
  *ok = false;
  return HTTP_GET;
}

void head_add(HttpHead* head, const HttpHeadLimits& lim, std::string_view name,
              std::string_view value) {
  if (http_head_add_field(head, lim, name.data(), name.size()) != 0) return;
  http_head_add_value(head, lim, value.data(), value.size());
}

int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* n, size_t nlen,
              const uint8_t* v, size_t vlen, uint8_t, void* user) {
  H2Conn* h = conn_of(user);
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (st == nullptr || st->st != H2St::head || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  HttpHead* head = &st->ex->conn.head;
  const HttpHeadLimits& lim = h->hc->limits;
  std::string_view name(reinterpret_cast<const char*>(n), nlen);
  std::string_view value(reinterpret_cast<const char*>(v), vlen);
  if (name == ":method") {
    bool ok;
    head->method = method_of(value, &ok);
    if (!ok) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // RST_STREAM: no such method
  } else if (name == ":path") {
    // Only what an HTTP/1.1 request line carries (RFC 9112 §3.2: visible ASCII): nghttp2 lets
    // obs-text and more through, and a replica's strict parser refused the request line the LB
    // made of it (found by fuzz_h2). The stream gets 400, as the same target over HTTP/1.1 does.
    for (char ch : value) {
      if (static_cast<unsigned char>(ch) <= 0x20 || static_cast<unsigned char>(ch) >= 0x7f) st->bad_path = true;
    }
    http_head_add_url(head, lim, value.data(), value.size());
  } else if (name == ":authority") {
    st->authority.assign(value);
  } else if (name[0] == ':') {
    // :scheme (nghttp2 checked it), nothing else gets past nghttp2
  } else if (name == "cookie") {  // split by the client (RFC 9113 §8.2.3): one line upstream
    if (!st->cookie.empty()) st->cookie.append("; ");
    st->cookie.append(value);
  } else {
    if (name == "host") st->has_host = true;
    head_add(head, lim, name, value);
  }
  return 0;
}

// The request head is complete: framing as HTTP/1.1 upstream would see it, then the exchange.
void head_done(H2Conn* h, H2Stream* st, bool end_stream) {
  HttpHead* head = &st->ex->conn.head;
  const HttpHeadLimits& lim = h->hc->limits;
  if (!st->cookie.empty()) head_add(head, lim, "cookie", st->cookie);
  if (!st->has_host && !st->authority.empty()) head_add(head, lim, "host", st->authority);
  head->major = head->minor = 1;
  head->keep_alive = true;
  std::string_view cl;
  if (http_head_get(*head, "content-length", &cl)) {
    int64_t n = 0;
    for (char ch : cl) n = n * 10 + (ch - '0');  // digits only: nghttp2 checked
    head->content_length = n;
  }
  if (!end_stream && head->content_length < 0) {
    head_add(head, lim, "transfer-encoding", "chunked");
    head->chunked = true;
    st->chunked_up = true;
  }
  st->st = H2St::open;
  if (st->bad_path) {
    exchange_stream_reject(st->ex, 400, "malformed request: invalid character in :path");
    return;
  }
  if (head->over_limit) {
    exchange_stream_reject(st->ex, 431, "request header fields too large");
    return;
  }
  exchange_stream_head(st->ex);
}

void request_end(H2Stream* st) {
  if (st->req_ended || st->ex == nullptr) return;
  st->req_ended = true;
  if (st->chunked_up) exchange_stream_body(st->ex, "0\r\n\r\n", 5);
  exchange_stream_end(st->ex);
}

int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  H2Conn* h = conn_of(user);
  if (f->hd.type == NGHTTP2_RST_STREAM) {  // rapid reset (CVE-2023-44487): capped per second
    h->w->counters.h2_client_resets++;
    worker_report_soon(h->w);
    uint64_t now = uv_now(h->w->loop);
    if (now - h->window_start >= 1000) {
      h->window_start = now;
      h->resets = 0;
    }
    if (++h->resets > kResetsPerSecond && !h->calm) {
      h->calm = true;
      h->w->counters.h2_calm_goaways++;
      LOG_DEBUG("h2: %s reset more than %u streams in a second: GOAWAY ENHANCE_YOUR_CALM",
                h->peer_ip.c_str(), kResetsPerSecond);
      nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (st == nullptr) return 0;
  bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f->hd.type == NGHTTP2_HEADERS && st->st == H2St::head) {
    if (h->calm) return 0;
    head_done(h, st, end);
  }
  if (end && st->st == H2St::open) request_end(st);
  return 0;
}

int on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data, size_t len,
                  void*) {
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
  if (st == nullptr || st->ex == nullptr || st->st != H2St::open) {
    nghttp2_session_consume(s, id, len);
    return 0;
  }
  const char* d = reinterpret_cast<const char*>(data);
  if (st->chunked_up) {
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    exchange_stream_body(st->ex, size, static_cast<size_t>(n));
    exchange_stream_body(st->ex, d, len);
    exchange_stream_body(st->ex, "\r\n", 2);
  } else {
    exchange_stream_body(st->ex, d, len);
  }
  if (st->paused) st->unconsumed += len;
  else nghttp2_session_consume(s, id, len);
  return 0;
}


int on_stream_close_ud(nghttp2_session* s, int32_t id, uint32_t, void* user) {
  H2Conn* h = conn_of(user);
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
  if (st == nullptr) return 0;
  nghttp2_session_set_stream_user_data(s, id, nullptr);
  ClientConn* ex = st->ex;
  st->ex = nullptr;
  if (ex != nullptr) exchange_stream_close(ex);
  stream_unlink(h, st);
  delete st;
  return 0;
}

// The response went whole (END_STREAM sent) while the client has not ended its request: the rest
// is not wanted (RFC 9113 §8.1: RST_STREAM NO_ERROR), so the stream closes rather than linger
// half-open, holding a stream slot, until the client ends it.
int on_frame_send(nghttp2_session* s, const nghttp2_frame* f, void*) {
  if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0)
    return 0;
  auto* st = static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (st != nullptr && !st->req_ended)
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
  return 0;
}

void on_tick(uv_timer_t* t) {
  H2Conn* h = container_of(t, &H2Conn::tick);
  if (h->freed || h->hc->closing) return;
  uint64_t now = uv_now(h->w->loop);
  bool idle = h->nstreams == 0 && h->w->cfg->idle_timeout_ms > 0 &&
              now - h->idle_since >= h->w->cfg->idle_timeout_ms;
  // A header block still incomplete after --header-timeout (slowloris over CONTINUATION): nothing
  // else may come on the connection meanwhile, so the connection ends.
  uint32_t header_ms = h->w->cfg->header_timeout_ms;
  for (H2Stream* st = h->streams; st != nullptr && header_ms > 0; st = st->next) {
    if (st->st == H2St::head && now - st->began >= header_ms) {
      LOG_DEBUG("h2: %s: a request head took more than --header-timeout", h->peer_ip.c_str());
      http_conn_close(h->hc);
      return;
    }
  }
  if (!h->goaway && (h->w->stopping || idle)) {  // drain: streams in progress finish
    h->goaway = true;
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, nullptr, 0);
    schedule(h);
  } else if (h->goaway && h->nstreams == 0) {
    conn_end(h);
  }
}

void on_handle_closed(uv_handle_t* hd) {
  H2Conn* h = static_cast<H2Conn*>(hd->data);
  if (--h->handles == 0) delete h;
}

}  // namespace

H2Conn* h2_conn_new(Worker* w, HttpConn* hc, const std::string& peer_ip, bool tls) {
  auto* h = new (std::nothrow) H2Conn();
  if (h == nullptr) return nullptr;
  h->w = w;
  h->hc = hc;
  h->peer_ip = peer_ip;
  h->tls = tls;
  nghttp2_session_callbacks* cb;
  if (nghttp2_session_callbacks_new(&cb) != 0) {
    delete h;
    return nullptr;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close_ud);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // acknowledged as the exchange takes it
  int rv = nghttp2_session_server_new2(&h->s, cb, h, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) {
    delete h;
    return nullptr;
  }
  const HttpHeadLimits& lim = hc->limits;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, lim.max_bytes + 32 * lim.max_headers},
  };
  nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, kConnWindow);
  // The preface the HTTP/1 parser recognised: nghttp2 checks it as its server side expects.
  nghttp2_session_mem_recv(h->s, reinterpret_cast<const uint8_t*>(NGHTTP2_CLIENT_MAGIC),
                           NGHTTP2_CLIENT_MAGIC_LEN);
  uv_idle_init(w->loop, &h->flush_idle);
  uv_timer_init(w->loop, &h->tick);
  h->flush_idle.data = h->tick.data = h;
  h->handles = 2;
  h->idle_since = h->window_start = uv_now(w->loop);
  uv_timer_start(&h->tick, on_tick, kTickMs, kTickMs);
  w->counters.h2_connections++;
  worker_report_soon(w);
  schedule(h);
  return h;
}

void h2_conn_input(H2Conn* h, const char* data, size_t len) {
  if (h->freed) return;
  ssize_t rv = nghttp2_session_mem_recv(h->s, reinterpret_cast<const uint8_t*>(data), len);
  if (rv < 0) {  // a connection error: nghttp2 queued its GOAWAY
    LOG_DEBUG("h2: %s: %s", h->peer_ip.c_str(), nghttp2_strerror(static_cast<int>(rv)));
    nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
  }
  flush(h);
  if (!h->hc->closing && h->hc->write_queued > kReadStopQueued) {  // the client does not read
    h->read_stopped = true;
    http_conn_stop(h->hc);
  }
}

void h2_conn_on_drain(H2Conn* h) {
  if (h->freed || h->hc->closing) return;
  if (conn_over(h) || (h->goaway && h->nstreams == 0)) {
    http_conn_close(h->hc);
    return;
  }
  if (h->read_stopped) {
    h->read_stopped = false;
    http_conn_start(h->hc);
  }
  schedule(h);
}

void h2_conn_free(H2Conn* h) {
  h->freed = true;
  while (h->streams != nullptr) {
    H2Stream* st = h->streams;
    if (st->ex != nullptr) exchange_stream_close(st->ex);
    st->ex = nullptr;
    stream_unlink(h, st);
    delete st;
  }
  nghttp2_session_del(h->s);
  h->s = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&h->flush_idle), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&h->tick), on_handle_closed);
}
