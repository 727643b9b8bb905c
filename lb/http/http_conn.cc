#include "lb/http/http_conn.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lb/http/http_server.h"

namespace {

// Pending parser events, a bit set: a response without a body completes in the same llhttp step as
// its head, so both may be pending at once.
enum : uint8_t { EV_NONE = 0, EV_HEAD = 1, EV_END = 2, EV_LAST_CHUNK = 4 };

constexpr size_t kHeadReserve = 1024;  // bytes of URL and header lines
constexpr size_t kHeadersReserve = 16;
// Raw body bytes up to the last chunk's line are held back, up to this many, to go out in one piece
// with the trailer section when it is parsed from the same read (a write, not two, per response).
constexpr size_t kHoldMax = 4096;

HttpConn* conn_of_parser(llhttp_t* p) { return static_cast<HttpConn*>(p->data); }

int on_message_begin(llhttp_t* p) {
  HttpConn* c = conn_of_parser(p);
  http_head_reset(&c->head);
  c->in_message = true;
  c->body_mode = HttpBody::decoded;
  c->deadline = c->header_timeout_ms ? uv_now(c->tcp.loop) + c->header_timeout_ms : 0;
  return 0;
}

int on_url(llhttp_t* p, const char* at, size_t len) {
  HttpConn* c = conn_of_parser(p);
  return http_head_add_url(&c->head, c->limits, at, len) == 0 ? 0 : -1;
}

int on_header_field(llhttp_t* p, const char* at, size_t len) {
  HttpConn* c = conn_of_parser(p);
  return http_head_add_field(&c->head, c->limits, at, len) == 0 ? 0 : -1;
}

int on_header_value(llhttp_t* p, const char* at, size_t len) {
  HttpConn* c = conn_of_parser(p);
  return http_head_add_value(&c->head, c->limits, at, len) == 0 ? 0 : -1;
}

// True for a response that has no body whatever its Content-Length says (RFC 9112 §6.3): the answer
// to a HEAD request, and every 1xx, 204 and 304. llhttp does not know the request, and reads a body
// of Content-Length bytes after a 304.
bool response_has_no_body(const HttpConn* c, const llhttp_t* p) {
  if (p->type != HTTP_RESPONSE) return false;
  int status = p->status_code;
  return c->expect_no_body || (status >= 100 && status < 200) || status == 204 || status == 304;
}

// Pauses so the read loop learns where the head ends (raw body forwarding starts there) and delivers
// on_head outside llhttp. For a response without a body llhttp is told to skip it (return 1), which
// cannot be combined with a pause: the message completes in the same step and on_message_complete
// pauses for both events.
int on_headers_complete(llhttp_t* p) {
  HttpConn* c = conn_of_parser(p);
  http_head_finish(&c->head, p);
  c->event = EV_HEAD;
  if (response_has_no_body(c, p)) return 1;
  return HPE_PAUSED;
}

int on_body(llhttp_t* p, const char* at, size_t len) {
  HttpConn* c = conn_of_parser(p);
  if (c->body_mode == HttpBody::decoded && !c->closing) c->h->on_body(c, at, len);
  return 0;
}

// A chunk size over 2^63-1 is refused (a parse error: 400 for a request, a malformed response for
// a response): llhttp accepts sizes up to 2^64-1, and a peer that reads them as signed 64-bit
// numbers would frame the body otherwise than the LB does. nginx refuses them too.
//
// The last chunk (size 0) of a raw body pauses right after its line, so that the raw bytes stop
// there: the trailer section that follows is held and passed on rebuilt (trailers_end).
int on_chunk_header(llhttp_t* p) {
  if (p->content_length > static_cast<uint64_t>(INT64_MAX)) return -1;
  HttpConn* c = conn_of_parser(p);
  if (p->content_length != 0 || c->body_mode != HttpBody::raw) return 0;
  c->event |= EV_LAST_CHUNK;
  return HPE_PAUSED;
}

// The end of a raw chunked body, in one piece with the held bytes before it (the last chunk's line
// and what preceded it in the same read): the trailer fields, but those a trailer section must not
// carry, then the blank line. The lines are the head's own ("Name: value\r\n", as llhttp
// validated them).
void trailers_end(HttpConn* c) {
  std::string out(c->held, c->held_len);
  c->held_len = 0;
  const HttpHead& h = c->head;
  for (size_t i = c->trailers_from; i < h.headers.size(); i++) {
    const HttpHeader& hd = h.headers[i];
    std::string_view name = http_head_name(h, hd);
    if (name.empty() || http_trailer_forbidden(name)) continue;
    out.append(name).append(": ").append(http_head_value(h, hd)).append("\r\n");
  }
  out.append("\r\n");
  c->h->on_body(c, out.data(), out.size());
}

int on_message_complete(llhttp_t* p) {
  HttpConn* c = conn_of_parser(p);
  c->event |= EV_END;
  return HPE_PAUSED;
}

const llhttp_settings_t* parser_settings() {
  static llhttp_settings_t s;
  static bool init = false;
  if (!init) {
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    s.on_chunk_header = on_chunk_header;
    init = true;
  }
  return &s;
}

void on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf);
void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
void conn_feed(HttpConn* c);

void conn_set_idle(HttpConn* c) {
  c->deadline = c->idle_timeout_ms ? uv_now(c->tcp.loop) + c->idle_timeout_ms : 0;
}

// Runs the owner's callbacks for the pending parser events. Returns false when parsing must stop.
bool deliver_event(HttpConn* c) {
  uint8_t ev = c->event;
  c->event = EV_NONE;
  if (ev & EV_HEAD) {
    c->in_body = true;
    c->deadline = 0;
    c->h->on_head(c);
    if (c->closing) return false;
    if (c->raw) return true;  // switched protocols: the message's end is not an HTTP event
  }
  if (ev & EV_LAST_CHUNK) {
    c->in_trailers = true;
    c->trailers_from = static_cast<uint32_t>(c->head.headers.size());
  }
  if (ev & EV_END) {
    if (c->in_trailers) {
      c->in_trailers = false;
      if (!c->closing) trailers_end(c);
      if (c->closing) return false;
    }
    c->in_body = false;
    c->in_message = false;
    // The request was HEAD for every response to it: an interim one (100 Continue) is followed
    // by the final one, which has no body either. Clearing it there made the final response's
    // Content-Length a body to wait for: the client hung, and the replica was blamed for a
    // "stalled" body it never owed (three such HEADs at once killed a healthy replica).
    if (!(c->parser.type == HTTP_RESPONSE && c->head.status >= 100 && c->head.status < 200))
      c->expect_no_body = false;
    HttpNext next = c->h->on_message_end(c);
    if (c->closing) return false;
    if (c->raw) return true;  // the owner switched protocols: what follows is raw
    if (next == HttpNext::pause) {
      c->paused = true;
      return false;
    }
    conn_set_idle(c);
  }
  return true;
}

void deliver_peer_error(HttpConn* c) {
  int err = c->peer_error;
  c->peer_error = 0;
  if (err == UV_EOF && c->in_message && !c->raw) {
    llhttp_errno_t e = llhttp_finish(&c->parser);
    if (e == HPE_PAUSED) {  // the close completed a close-delimited body
      llhttp_resume(&c->parser);
      deliver_event(c);
    }
  }
  if (!c->closing) c->h->on_error(c, err);
}

// Parses the buffered bytes until they run out, a message ends and the owner pauses, the owner stops
// reading, or the connection closes. A peer close or read error is reported once every byte before it
// has been parsed.
void conn_parse(HttpConn* c) {
  bool parsed = false;
  // After a pause llhttp may have work left that needs no input (completing a bodyless message after
  // its head), so it runs once more even when the buffer is empty.
  while (!c->closing && !c->paused && c->reading && (c->in_start < c->in_end || c->after_pause)) {
    parsed = true;
    c->after_pause = false;
    const char* p = c->in + c->in_start;
    size_t n = c->in_end - c->in_start;
    if (c->raw) {  // a tunnel: the bytes go on as they are
      c->in_start = c->in_end = 0;
      if (n > 0) c->h->on_body(c, p, n);
      continue;
    }
    bool raw_body = c->in_body && c->body_mode == HttpBody::raw && !c->in_trailers;
    llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
    size_t used = n;
    if (e == HPE_PAUSED) {
      used = static_cast<size_t>(llhttp_get_error_pos(&c->parser) - p);
      llhttp_resume(&c->parser);
      c->after_pause = true;
    } else if (e == HPE_PAUSED_UPGRADE) {
      // The layer does not switch protocols (RFC 9110 §7.8 lets a server ignore Upgrade, and a
      // proxy drops it as hop-by-hop): the message was an ordinary one, and the bytes after it
      // are HTTP/1.1 again.
      used = static_cast<size_t>(llhttp_get_error_pos(&c->parser) - p);
      llhttp_resume_after_upgrade(&c->parser);
    } else if (e != HPE_OK) {
      c->parse_error = llhttp_get_error_reason(&c->parser);
      c->held_len = 0;  // a body whose trailer section is malformed ends here
      int err = c->head.over_limit ? HTTP_E_TOO_LARGE : HTTP_E_PARSE;
      c->reading = false;
      // The HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", all of it parsed): the
      // bytes after it stay buffered for an owner that speaks h2 (http_conn_set_raw, then start).
      if (e == HPE_PAUSED_H2_UPGRADE)
        c->in_start += static_cast<uint32_t>(llhttp_get_error_pos(&c->parser) - p);
      else
        c->in_start = c->in_end = 0;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
      c->h->on_error(c, err);
      return;
    }
    c->in_start += static_cast<uint32_t>(used);
    if (raw_body && used > 0 && !c->closing) {
      if (e == HPE_PAUSED && (c->event & EV_LAST_CHUNK) && used <= kHoldMax) {
        c->held = p;  // valid until the next read: this loop reads nothing
        c->held_len = used;
      } else {
        c->h->on_body(c, p, used);
      }
    }
    if (c->in_start == c->in_end) c->in_start = c->in_end = 0;
    if (e == HPE_PAUSED && !deliver_event(c)) break;  // paused or closing
  }
  if (c->held_len > 0) {  // the trailer section comes in a later read
    size_t n = c->held_len;
    c->held_len = 0;
    if (!c->closing) c->h->on_body(c, c->held, n);
  }
  if (!c->closing && !c->paused && c->reading && c->in_start == c->in_end && c->peer_error != 0) {
    parsed = true;
    deliver_peer_error(c);
  }
  if (parsed && !c->closing && c->h->on_parsed) c->h->on_parsed(c);
}

// Reads while the owner wants bytes and the buffer has room. While paused at a message end the
// connection keeps reading (pipelined requests, or a peer's close) until the buffer is full, so a
// paused keep-alive connection costs no epoll changes.
int conn_update_reading(HttpConn* c) {
  if (c->closing) return 0;
  uv_stream_t* s = reinterpret_cast<uv_stream_t*>(&c->tcp);
  if (c->reading && c->peer_error == 0 && c->in_end - c->in_start < c->in_cap) {
    int rc = uv_read_start(s, on_alloc, on_read);
    return rc == UV_EALREADY ? 0 : rc;
  }
  uv_read_stop(s);
  return 0;
}

void on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  HttpConn* c = http_conn_of(handle);
  if (c->transport != nullptr) {  // TLS: ciphertext goes to the transport's buffer
    c->transport->alloc(c, buf);
    return;
  }
  if (c->in_start > 0) {
    memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
    c->in_end -= c->in_start;
    c->in_start = 0;
  }
  *buf = uv_buf_init(c->in + c->in_end, c->in_cap - c->in_end);
}

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  HttpConn* c = http_conn_of(reinterpret_cast<uv_handle_t*>(stream));
  if (nread == 0) return;
  if (c->transport != nullptr) {
    c->transport->input(c, buf->base, nread);
    conn_feed(c);
    if (c->transport != nullptr) c->transport->keep(c);
    conn_update_reading(c);
    return;
  }
  if (nread > 0) {
    c->in_end += static_cast<uint32_t>(nread);
  } else {
    c->peer_error = static_cast<int>(nread);
  }
  conn_parse(c);
  conn_update_reading(c);
}

// --- Transport (TLS) --------------------------------------------------------------------------
// A connection with a transport holds its read buffer only while plaintext waits in it: the
// socket's bytes land in the transport's per-thread buffer, so once everything decrypted has been
// parsed the buffer goes (in_release), and the next plaintext takes one again (in_take). An idle
// keep-alive TLS connection thus costs no read buffer: over TLS the buffer's pages were always
// resident (written by every decryption, in heap the handshakes had touched), 16 KiB of the 34 KiB
// an idle TLS client cost (bench/RESULTS.md). One released buffer per thread is kept for the next
// take, so a busy connection does not malloc and free 16 KiB per read. Plain connections keep
// their buffer for their whole life (their fast path is unchanged).
struct SpareIn {
  char* buf = nullptr;
  uint32_t cap = 0;
  ~SpareIn() { free(buf); }  // the thread ends
};
thread_local SpareIn t_spare_in;

bool in_take(HttpConn* c) {
  if (c->in != nullptr) return true;
  SpareIn& sp = t_spare_in;
  if (sp.buf != nullptr && sp.cap == c->in_cap) {
    c->in = sp.buf;
    sp.buf = nullptr;
    return true;
  }
  c->in = static_cast<char*>(malloc(c->in_cap));
  return c->in != nullptr;
}

void in_release(HttpConn* c) {
  if (c->in == nullptr || c->in_start != c->in_end) return;
  c->in_start = c->in_end = 0;
  SpareIn& sp = t_spare_in;
  if (sp.buf == nullptr) {
    sp.buf = c->in;
    sp.cap = c->in_cap;
  } else {
    free(c->in);
  }
  c->in = nullptr;
}

// Parses what the transport has decrypted: moves plaintext into the read buffer while it has room,
// parses it, and goes on while parsing makes room and the transport has more. Once the transport
// says the stream ended, that is the connection's peer_error (reported after the bytes before it,
// as for a plain socket).
void conn_feed_transport(HttpConn* c) {
  for (;;) {
    bool got = false;
    // Taken even when the stream has ended: conn_parse may run llhttp once more without input
    // (after_pause), and llhttp must not be handed a null pointer (found by fuzz_tls, UBSan).
    if (!c->closing && !in_take(c)) {
      if (c->peer_error == 0) c->peer_error = UV_ENOMEM;
      c->after_pause = false;
    }
    if (c->peer_error == 0 && !c->closing) {
      if (c->in_start > 0 && c->in_end == c->in_cap) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
      }
      while (c->in_end < c->in_cap) {
        ssize_t n = c->transport->read(c, c->in + c->in_end, c->in_cap - c->in_end);
        if (n > 0) {
          c->in_end += static_cast<uint32_t>(n);
          got = true;
          continue;
        }
        if (n < 0) c->peer_error = static_cast<int>(n);
        break;
      }
    }
    conn_parse(c);
    if (!got || c->closing || c->paused || !c->reading || c->in_end == c->in_cap) return;
  }
}

// Parses what came in; through the transport, if the connection has one (its read buffer is
// released once empty). A plain connection only parses.
void conn_feed(HttpConn* c) {
  if (c->transport == nullptr) {
    conn_parse(c);
    return;
  }
  conn_feed_transport(c);
  in_release(c);
}
// --- end Transport ------------------------------------------------------------------------------

void on_close(uv_handle_t* handle) {
  HttpConn* c = http_conn_of(handle);
  if (c->transport != nullptr) {
    c->transport->free(c);
    c->transport = nullptr;
    c->transport_state = nullptr;
  }
  if (c->server) http_server_forget(c->server, c);
  c->h->on_close(c);
}

struct WriteReq {
  uv_write_t req;
  size_t len;
  char data[];
};

// A queued write failing (the peer reset the connection) is reported once through on_error: an
// owner that paused until on_drain, or stopped reading, would otherwise wait for good.
void on_write(uv_write_t* req, int status) {
  WriteReq* w = container_of(req, &WriteReq::req);
  HttpConn* c = static_cast<HttpConn*>(req->data);
  size_t len = w->len;
  c->write_queued -= len;
  free(w);
  if (c->closing) return;
  if (status < 0) {
    if (!c->write_failed) {
      c->write_failed = true;
      http_conn_stop(c);
      c->h->on_error(c, status);
    }
    return;
  }
  // A transport's own bytes (a TLS handshake) carry none of the owner's: no drain to report.
  if (len > 0 && c->write_queued == 0 && c->h->on_drain) c->h->on_drain(c);
}

}  // namespace

int http_conn_init(uv_loop_t* loop, HttpConn* c, llhttp_type_t type, const HttpConnHandlers* h,
                   size_t in_cap) {
  // Every per-connection field starts afresh, so a connection may be initialised again after its
  // on_close (a client reconnecting in the same memory). The head keeps its buffers' capacity, and
  // starts with room for a typical head: one allocation each rather than one per doubling.
  http_head_reset(&c->head);
  if (c->head.buf.capacity() < kHeadReserve) c->head.buf.reserve(kHeadReserve);
  if (c->head.headers.capacity() < kHeadersReserve) c->head.headers.reserve(kHeadersReserve);
  c->in_start = c->in_end = 0;
  c->write_queued = 0;
  c->parse_error = nullptr;
  c->peer_error = 0;
  c->body_mode = HttpBody::decoded;
  c->expect_no_body = c->reading = c->paused = c->in_body = c->in_message = c->in_trailers = false;
  c->held_len = 0;
  c->closing = c->after_pause = false;
  c->raw = c->shut = false;
  c->event = 0;
  c->deadline = 0;
  c->h = h;
  c->transport = nullptr;  // freed by on_close, if the connection had one
  c->transport_state = nullptr;
  if (c->in == nullptr || c->in_cap != in_cap) {
    free(c->in);
    c->in_cap = 0;
    c->in = static_cast<char*>(malloc(in_cap));
    if (c->in == nullptr) return UV_ENOMEM;
    c->in_cap = static_cast<uint32_t>(in_cap);
  }
  llhttp_init(&c->parser, type, parser_settings());
  c->parser.data = c;
  return uv_tcp_init(loop, &c->tcp);
}

int http_conn_start(HttpConn* c) {
  if (c->closing) return UV_EPIPE;
  c->reading = true;
  conn_feed(c);
  return conn_update_reading(c);
}

void http_conn_stop(HttpConn* c) {
  c->reading = false;
  conn_update_reading(c);
}

void http_conn_resume(HttpConn* c) {
  if (c->closing) return;
  c->paused = false;
  conn_set_idle(c);
  http_conn_start(c);
}

void http_conn_reset_parser(HttpConn* c) {
  llhttp_reset(&c->parser);
  c->in_body = c->in_message = c->paused = c->in_trailers = false;
  c->expect_no_body = false;
  c->event = 0;
}

void http_conn_set_raw(HttpConn* c) {
  c->raw = true;
  c->in_message = true;
  c->in_body = c->paused = c->after_pause = c->in_trailers = false;
  c->event = 0;
  c->deadline = 0;
}

namespace {
void on_shutdown(uv_shutdown_t*, int) {}  // a failure shows as a write or read error, or not at all
}  // namespace

int http_conn_shutdown(HttpConn* c) {
  if (c->closing) return UV_EPIPE;
  if (c->shut) return 0;
  c->shut = true;
  // Over TLS the write half ends with close_notify first, so the peer reads a clean end of stream
  // rather than a truncation (TLS 1.3 lets the other direction go on: RFC 8446 §6.1).
  if (c->transport != nullptr) c->transport->shutdown(c);
  return uv_shutdown(&c->shutdown_req, reinterpret_cast<uv_stream_t*>(&c->tcp), on_shutdown);
}

int http_conn_write(HttpConn* c, const uv_buf_t* bufs, unsigned n) {
  if (c->closing) return UV_EPIPE;
  if (c->transport != nullptr) return c->transport->write(c, bufs, n);
  uv_stream_t* s = reinterpret_cast<uv_stream_t*>(&c->tcp);
  size_t total = 0;
  for (unsigned i = 0; i < n; i++) total += bufs[i].len;
  if (total == 0) return 0;
  size_t done = 0;
  if (c->write_queued == 0) {
    int rc = uv_try_write(s, bufs, n);
    if (rc < 0 && rc != UV_EAGAIN) return rc;
    if (rc > 0) done = static_cast<size_t>(rc);
    if (done == total) return 0;
  }
  size_t rest = total - done;
  WriteReq* w = static_cast<WriteReq*>(malloc(sizeof(WriteReq) + rest));
  if (w == nullptr) return UV_ENOMEM;
  w->len = rest;
  char* out = w->data;
  size_t skip = done;
  for (unsigned i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(out, bufs[i].base + skip, len - skip);
    out += len - skip;
    skip = 0;
  }
  w->req.data = c;
  uv_buf_t b = uv_buf_init(w->data, static_cast<unsigned>(rest));
  int rc = uv_write(&w->req, s, &b, 1, on_write);
  if (rc != 0) {
    free(w);
    return rc;
  }
  c->write_queued += rest;
  return 0;
}

int http_conn_write_wire(HttpConn* c, const char* data, size_t len, size_t given) {
  if (c->closing) return UV_EPIPE;
  if (len == 0) return 0;
  uv_stream_t* s = reinterpret_cast<uv_stream_t*>(&c->tcp);
  uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
  // libuv's uv_try_write refuses (UV_EAGAIN) while earlier writes are queued: order is kept.
  int rc = uv_try_write(s, &b, 1);
  if (rc < 0 && rc != UV_EAGAIN) return rc;
  size_t done = rc > 0 ? static_cast<size_t>(rc) : 0;
  if (done == len) return 0;
  size_t rest = len - done;
  WriteReq* w = static_cast<WriteReq*>(malloc(sizeof(WriteReq) + rest));
  if (w == nullptr) return UV_ENOMEM;
  w->len = given;
  memcpy(w->data, data + done, rest);
  w->req.data = c;
  b = uv_buf_init(w->data, static_cast<unsigned>(rest));
  rc = uv_write(&w->req, s, &b, 1, on_write);
  if (rc != 0) {
    free(w);
    return rc;
  }
  c->write_queued += given;
  return 0;
}

void http_conn_close(HttpConn* c, bool reset) {
  if (c->closing) return;
  if (c->transport != nullptr && !reset) c->transport->shutdown(c);
  c->closing = true;
  c->reading = false;
  uv_handle_t* handle = reinterpret_cast<uv_handle_t*>(&c->tcp);
  if (reset && uv_is_active(handle) >= 0) {
    if (uv_tcp_close_reset(&c->tcp, on_close) == 0) return;
  }
  uv_close(handle, on_close);
}
