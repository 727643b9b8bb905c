// exchange_stream: the seam between an exchange and an HTTP/2 stream (lb/data/h2_client.h). A
// stream's exchange is a ClientConn with a side (ClientConn::side): it runs the HTTP/1 exchange's
// state machine (exchange.h) for its request, routed by its own key and proxied as HTTP/1.1, and
// reaches its client through the side's calls instead of an HTTP/1 connection of its own. The
// side reports the stream's progress with the exchange_stream_* functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "lb/http/http_head.h"

struct Worker;
struct ClientConn;

// The client side of an exchange that is not an HTTP/1 connection of its own: an HTTP/2 stream
// (lb/data/h2_client.h). An exchange with a side (ClientConn::side) never touches its `conn` for
// I/O (it is never initialised); it calls these instead. The calls only queue: they never call
// back into the exchange (the side reports progress later, from its own callbacks, through the
// exchange_stream_* functions below).
struct ClientSide {
  // The replica's final response head (hop-by-hop headers and framing are the side's to drop).
  void (*response_head)(ClientConn* c, const HttpHead& resp);
  // Response body bytes (decoded: never chunk framing). 0, or a libuv code (the side is gone).
  int (*response_body)(ClientConn* c, const char* data, size_t len);
  // The response is complete. resp: its head as response_head had it, with the trailer fields of
  // a chunked response (if any) appended to its headers.
  void (*response_end)(ClientConn* c, const HttpHead& resp);
  // A complete response of the LB's own (errors, admin answers). extra: "Name: value\r\n" lines.
  void (*local_response)(ClientConn* c, int status, std::string_view type, const std::string& body,
                         std::string_view extra);
  // The response cannot be completed: the stream is reset.
  void (*reset)(ClientConn* c);
  // Backpressure on the request body: stop / resume taking it from the client.
  void (*stop_reading)(ClientConn* c);
  void (*start_reading)(ClientConn* c);
  // Response bytes queued for the client and not yet taken by it.
  size_t (*queued)(const ClientConn* c);
};

// --- what the side calls (lb/data/h2_client.cc) -------------------------------------------------
// A new exchange whose client side is side (data: side_data) for a client at peer_ip. Its request
// head is filled into c->conn.head (method, url, headers, framing as http_head_finish would) and
// then given with exchange_stream_head. Freed by exchange_stream_close only.
ClientConn* exchange_stream_open(Worker* w, const ClientSide* side, void* data,
                                 const std::string& peer_ip, bool tls);
// The head is complete: the request is validated, routed and sent on (or answered locally).
void exchange_stream_head(ClientConn* c);
// The head was over the limits (--max-header... as for HTTP/1): answered 431.
void exchange_stream_reject(ClientConn* c, int status, const char* reason);
// Request body bytes (as they go upstream: chunk framing included when the head says chunked).
void exchange_stream_body(ClientConn* c, const char* data, size_t len);
// The request is complete.
void exchange_stream_end(ClientConn* c);
// The side's queue for the client emptied: the replica's response may flow again.
void exchange_stream_drained(ClientConn* c);
// The stream is gone (complete, reset by either side, or its connection closed): the exchange
// ends (logged with status 0 if its response was not complete), its upstream is closed unless
// it was released, and c is freed.
void exchange_stream_close(ClientConn* c);
