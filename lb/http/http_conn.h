// http_conn: one HTTP/1.x connection on a libuv TCP handle, driven by llhttp. Shared by every HTTP user
// in ringlb: the replica's server connections, the load balancer's client and upstream connections, and
// the load generator's client connections.
//
// The connection reads into one buffer it owns, parses with llhttp (never lenient) and reports a message
// as events: on_head (the head is in conn->head), on_body (body bytes), on_message_end. Parsing stops
// (pauses) at every message end until the owner says to go on, so pipelined requests are handled one at
// a time and in order; unparsed bytes stay in the buffer and reading stops while paused.
//
// Body bytes come in one of two forms, chosen by the owner in on_head: raw (the bytes exactly as on the
// wire, chunk framing included, for a proxy that forwards them unchanged) or decoded (llhttp's body data).
//
// Writes try the socket first (uv_try_write) and queue only what did not fit, copied, so callers may
// pass stack or borrowed buffers. write_queued tells how much waits; on_drain fires when it reaches zero
// after having been non-zero (backpressure).
//
// A connection may carry a transport between its socket and the parser (TLS, lb/http/tls.h; see
// "Transport" below): the parser then sees plaintext and writes are encrypted, with the same
// contracts (write_queued counts plaintext bytes the owner gave that are not yet on the wire). Such
// a connection holds its read buffer only while plaintext waits in it: `in` is null while idle, and
// taken again (in_cap bytes) when the transport has plaintext (http_conn.cc, in_take/in_release).
//
// Teardown: http_conn_close may be called from any callback, including inside the owner's event
// callbacks; the connection stops delivering events at once and on_close runs later from the loop, when
// the handle is closed. Only then may the owner free the memory that embeds the connection (or
// initialise it again: the read buffer is kept for that, and freed with the HttpConn's memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <llhttp.h>
#include <uv.h>

#include "lb/http/container_of.h"
#include "lb/http/http_head.h"

struct HttpConn;
struct HttpServer;

enum class HttpBody : uint8_t { raw, decoded };

// What on_message_end answers.
enum class HttpNext : uint8_t { parse, pause };

// Errors reported through on_error besides libuv codes (UV_EOF, UV_ECONNRESET, ...).
enum : int {
  HTTP_E_PARSE = -100000,  // malformed message (llhttp error; conn->parse_error says which)
  HTTP_E_TOO_LARGE = -100001,  // head over its limits
};
// HTTP_E_PARSE with llhttp_get_errno(&c->parser) == HPE_PAUSED_H2_UPGRADE is the HTTP/2 connection
// preface, parsed whole: the bytes after it stay in the buffer (see http_conn_set_raw).

// --- Transport (TLS) --------------------------------------------------------------------------
// Operations of a transport between the socket and the parser, called through a table so that the
// HTTP layer's users without TLS (the replica, the load generator) never link OpenSSL. Set by
// tls_attach (lb/http/tls.h) before the connection reads; plain connections have none.
struct HttpTransport {
  // A buffer for the next socket read; the transport's own, valid until keep returns.
  void (*alloc)(HttpConn* c, uv_buf_t* buf);
  // nread bytes of that buffer came off the socket, or the socket ended or failed (nread < 0).
  void (*input)(HttpConn* c, const char* data, ssize_t nread);
  // Moves plaintext into dst, at most cap bytes: > 0 bytes moved, 0 nothing yet, < 0 the stream
  // ended: UV_EOF, the socket's error, or UV_EPROTO (a TLS error; the alert is sent).
  ssize_t (*read)(HttpConn* c, char* dst, size_t cap);
  // Keeps what input gave and read has not used yet (the alloc buffer is reused after this).
  void (*keep)(HttpConn* c);
  // Encrypts n buffers and writes them (http_conn_write_wire). 0 or a negative libuv code.
  int (*write)(HttpConn* c, const uv_buf_t* bufs, unsigned n);
  // A graceful close begins: a last write if the socket takes it at once (close_notify).
  void (*shutdown)(HttpConn* c);
  // Frees the transport's state (the connection's handle is closed).
  void (*free)(HttpConn* c);
};

struct HttpConnHandlers {
  // The head is complete (conn->head). Set conn->body_mode here if raw bytes are wanted.
  void (*on_head)(HttpConn* c);
  // A piece of the body, raw or decoded per conn->body_mode. The data is valid only during the call.
  // Raw: the bytes as they came, except a chunked body's trailer section, which is passed on at the
  // message's end rebuilt from the parsed fields without those http_trailer_forbidden names.
  void (*on_body)(HttpConn* c, const char* data, size_t len);
  // The message is complete. parse: go on with the next pipelined message; pause: wait for resume.
  HttpNext (*on_message_end)(HttpConn* c);
  // Reading failed, the peer closed, or a queued write failed (once): err is UV_EOF, another libuv
  // code, HTTP_E_PARSE or HTTP_E_TOO_LARGE. The connection has stopped reading; the owner decides
  // whether to close. On EOF a message that the close completes (a close-delimited response body) is
  // delivered first.
  void (*on_error)(HttpConn* c, int err);
  // The write queue drained (optional).
  void (*on_drain)(HttpConn* c);
  // The handle is closed; the owner may free the connection now.
  void (*on_close)(HttpConn* c);
  // Parsing stopped after it used bytes or delivered events: the buffer ran out, the owner paused at
  // a message end or stopped reading (optional). Everything the bytes read so far produced has been
  // delivered, so an owner that holds back a write to combine it with the next one (a proxy's response
  // head with the first body bytes) writes it here at the latest. Not called once closing.
  void (*on_parsed)(HttpConn* c) = nullptr;
};

struct HttpConn {
  uv_tcp_t tcp;
  llhttp_t parser;
  HttpHead head;
  HttpHeadLimits limits;
  const HttpConnHandlers* h = nullptr;
  void* owner = nullptr;  // free for the owner's use

  char* in = nullptr;  // read buffer and its unparsed region [in_start, in_end); null while a
                       // transport's connection has nothing buffered (see "Transport")
  uint32_t in_cap = 0, in_start = 0, in_end = 0;
  size_t write_queued = 0;  // bytes accepted by http_conn_write and not yet written
  const char* parse_error = nullptr;
  int peer_error = 0;  // EOF or read error seen, reported once the bytes before it are parsed

  HttpBody body_mode = HttpBody::decoded;
  bool expect_no_body = false;  // response side: the request was HEAD (set before the response)
  bool reading = false;   // the owner wants bytes (between http_conn_start and http_conn_stop)
  bool paused = false;    // stopped at a message end, waiting for http_conn_resume
  bool in_body = false;   // between on_head and on_message_end
  bool in_message = false;  // a message has begun (its first byte was parsed)
  bool closing = false;
  bool write_failed = false;  // a queued write failed (reported through on_error once)
  bool raw = false;       // a tunnel: bytes pass through unparsed (http_conn_set_raw)
  bool shut = false;      // our side's write half is shut (http_conn_shutdown)
  uint8_t event = 0;      // pending parser event (internal)
  bool after_pause = false;  // llhttp was resumed and may complete a message without input
  bool in_trailers = false;  // raw body: past the last chunk; the trailer lines are held (internal)
  uint32_t trailers_from = 0;  // raw body: head.headers' index of the first trailer field (internal)
  const char* held = nullptr;  // raw body bytes held for one write with the trailers (internal)
  size_t held_len = 0;
  uv_shutdown_t shutdown_req;  // http_conn_shutdown's

  // Timeouts in ms (0 = none). While a head is being read the deadline is header_timeout after its
  // first byte (slowloris); while idle between messages, idle_timeout; while the owner handles a message,
  // none. The server that accepted the connection closes it once loop time passes the deadline.
  uint32_t header_timeout_ms = 0, idle_timeout_ms = 0;
  uint64_t deadline = 0;
  HttpServer* server = nullptr;  // set by http_server for the connections it accepted
  HttpConn* prev = nullptr;
  HttpConn* next = nullptr;

  // --- Transport (TLS): null for plain TCP ---
  const HttpTransport* transport = nullptr;
  void* transport_state = nullptr;  // the transport's own

  HttpConn() = default;
  HttpConn(const HttpConn&) = delete;
  HttpConn& operator=(const HttpConn&) = delete;
  ~HttpConn() { free(in); }
};

// Initialises c on loop as a request (server side) or response (client side) parser with a read buffer
// of in_cap bytes. The handle is open after this returns 0; close it with http_conn_close. A connection
// whose on_close has run may be initialised again (a client reconnecting, a server reusing a closed
// client's memory): its state starts afresh, while owner, limits, timeouts, the read buffer (when
// in_cap is the same) and the head's buffer capacity are kept.
int http_conn_init(uv_loop_t* loop, HttpConn* c, llhttp_type_t type, const HttpConnHandlers* h,
                   size_t in_cap);

// Starts reading and parsing. Safe to call when already reading.
int http_conn_start(HttpConn* c);
// Stops reading (backpressure); buffered bytes stay until http_conn_start.
void http_conn_stop(HttpConn* c);
// Continues after on_message_end answered pause: parses what is buffered, then reads again.
void http_conn_resume(HttpConn* c);

// Resets the parser for a new exchange on a kept-alive client connection (response side).
void http_conn_reset_parser(HttpConn* c);

// Raw pass-through, for a tunnel after 101 Switching Protocols: from now on nothing is parsed and no
// message event comes again; every byte read, those already buffered first, goes to on_body as it is
// (body_mode does not matter), and a peer close or read error reaches on_error. The connection stays
// a message in progress (never idle to its server, no header or idle deadline). Irreversible; may be
// called from the owner's callbacks (from on_head or on_message_end, the bytes after the message
// follow raw at once). Reading starts with http_conn_start as usual.
void http_conn_set_raw(HttpConn* c);
// Half-close: shuts the write side once the bytes queued are written (uv_shutdown; the peer reads
// EOF). Nothing may be written afterwards. Idempotent; returns 0 or a libuv code.
int http_conn_shutdown(HttpConn* c);

// Writes n buffers in order; returns 0 or a negative libuv code (the connection is then broken).
int http_conn_write(HttpConn* c, const uv_buf_t* bufs, unsigned n);
inline int http_conn_write(HttpConn* c, const char* data, size_t len) {
  uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
  return http_conn_write(c, &b, 1);
}

// Transport (TLS) only: writes len bytes of wire data (ciphertext) after what is queued, trying the
// socket first and copying the rest; given is the number of the owner's bytes they carry, counted
// in write_queued until the copy is on the wire. 0 or a negative libuv code.
int http_conn_write_wire(HttpConn* c, const char* data, size_t len, size_t given);

// Closes the connection: no more events; on_close runs later. Idempotent. With reset, sends RST.
void http_conn_close(HttpConn* c, bool reset = false);

// True for an error that says this process ran out of something (descriptors, socket buffers,
// memory): EMFILE, ENFILE, ENOBUFS, ENOMEM. Such an error is never the peer's fault: the data plane
// answers a request that meets it 503 naming the cause, a heartbeat that meets it has no result.
inline bool http_local_error(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM;
}

// The name of an error an HttpConn reports: "malformed message" and "head too large" for its own
// codes, else libuv's name. Never uv_err_name on HTTP_E_*: libuv allocates (and never frees) a
// string for a code it does not know.
inline const char* http_err_name(int err) {
  if (err == HTTP_E_PARSE) return "malformed message";
  if (err == HTTP_E_TOO_LARGE) return "head too large";
  return uv_err_name(err);
}

// The connection whose TCP handle is handle (for uv callbacks).
inline HttpConn* http_conn_of(uv_handle_t* handle) {
  return container_of(reinterpret_cast<uv_tcp_t*>(handle), &HttpConn::tcp);
}
