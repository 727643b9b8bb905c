// h2_client: HTTP/2 from clients (h2 chosen by ALPN over TLS, or h2c with prior knowledge), with
// nghttp2 as the framing library, driven on the worker's loop through nghttp2_session_mem_recv and
// nghttp2_session_mem_send: no blocking call, no thread.
//
// An H2Conn belongs to the ClientConn of the TCP (or TLS) connection that sent the HTTP/2 preface
// (ExState::h2, exchange.cc): that connection is raw from then on, its bytes come here
// (h2_conn_input) and the frames nghttp2 makes go out through it. Each stream is one exchange of
// its own (a ClientConn with a ClientSide, exchange.h): routed by its own key, proxied as HTTP/1.1
// over the worker's upstream pools, with the failover, timeouts, access log and metrics of any
// exchange.
//
// States of a stream (H2Stream::st), an explicit machine beside nghttp2's own:
//   head      HEADERS being received; the request head accumulates (under the HTTP/1 limits)
//   open      the exchange runs; request body DATA goes to it, response bytes queue in `out`
//   closed    nghttp2 closed the stream (on_stream_close); the exchange was told and freed
//
// Flow control: request DATA is acknowledged (nghttp2_session_consume, WINDOW_UPDATE) only while
// the exchange takes it (stop_reading holds it back), so a replica that does not read stops the
// client; response bytes queue per stream, and over the exchange's high-water mark the replica is
// no longer read; frames are made only while the client connection's write queue is low, so a
// client that does not read stops every stream. Memory per connection: its windows, its streams'
// queues (each under the high-water mark plus one read) and nghttp2's own bounded state.
//
// Hostile input: SETTINGS_MAX_CONCURRENT_STREAMS 100 (a stream past it: GOAWAY PROTOCOL_ERROR from
// nghttp2 once the client acknowledged the setting, REFUSED_STREAM before), the request head's
// limits as for HTTP/1 (431), connection-specific headers and bad pseudo-headers refused by
// nghttp2 (RST_STREAM PROTOCOL_ERROR, RFC 9113 §8.2.2, §8.3), and rapid reset: more than
// kResetsPerSecond streams reset by the client within one second ends the connection with GOAWAY
// ENHANCE_YOUR_CALM.
//
// Completions never re-enter: nghttp2 is entered only from the connection's own read callback and
// from the H2Conn's idle handle (flush), never from an exchange's call; what the exchange gives
// (response bytes, an end, a reset) is queued and flushed from the idle handle.
#pragma once

#include <string>

struct Worker;
struct HttpConn;
struct H2Conn;

// A session for the client connection hc of worker w (its preface already read). Null when
// nghttp2 cannot be set up (out of memory).
H2Conn* h2_conn_new(Worker* w, HttpConn* hc, const std::string& peer_ip, bool tls);
// Bytes read from the client.
void h2_conn_input(H2Conn* h, const char* data, size_t len);
// The client connection's write queue drained.
void h2_conn_on_drain(H2Conn* h);
// The client connection is closed: every stream's exchange ends, the session is freed (its
// handles close from the loop).
void h2_conn_free(H2Conn* h);
