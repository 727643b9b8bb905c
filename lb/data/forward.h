// forward: the heads the load balancer sends on. The request head a replica gets (the client's
// request line and end-to-end headers, X-Forwarded-For and X-Request-Id added, Host from an
// absolute-form target, HTTP/1.1 towards the replica), the response head the client gets (hop-by-hop
// headers dropped, de-chunked for an HTTP/1.0 client, no framing on a 204, Connection as the client
// connection will behave) and the interim (1xx) heads passed on to the client. Pure string work:
// no I/O, no connection state.
#pragma once

#include <string>
#include <string_view>

#include "lb/http/http_head.h"

// Builds into *out the head sent upstream for request h from the client at peer_ip. xff_line is the
// line "X-Forwarded-For: PEER_IP\r\n" added when the client sent none; generated_rid, when not
// empty, is sent as X-Request-Id (the LB drew the routing key). https: the client came over TLS:
// X-Forwarded-Proto: https is sent, in place of any the client sent.
void forward_request_head(std::string* out, const HttpHead& h, const std::string& peer_ip,
                          const std::string& xff_line, std::string_view generated_rid,
                          bool https = false);

// How a final response travels to the client (forward_response_head decides).
struct ForwardFraming {
  bool dechunk = false;     // the body is de-chunked (a chunked response to an HTTP/1.0 client)
  bool keep_alive = true;   // the client connection survives the response
};

// Builds into *out the head the client gets for final response resp to request req. keep_alive is
// what the client connection would do otherwise (its request's wish, the worker not stopping); the
// result says whether it still does (a response framed by the close, or whose sender closes, ends
// it) and whether the body is de-chunked.
ForwardFraming forward_response_head(std::string* out, const HttpHead& req, const HttpHead& resp,
                                     bool keep_alive);

// True when the client of request req is given interim (1xx) responses: an HTTP/1.1 one (an
// HTTP/1.0 client does not know them).
bool forward_interim_wanted(const HttpHead& req);

// Builds into *out interim response resp as the client gets it: its status line and end-to-end
// headers, without Content-Length or Transfer-Encoding (an interim response has no body; a client
// or proxy in front that believed them would read the next response as that body).
void forward_interim(std::string* out, const HttpHead& resp);
