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

// Upgrade (WebSocket and other tunnels):

// True when request h asks to switch protocols (an Upgrade header, and a Connection header listing
// "upgrade") and the LB carries the switch out: a tunnel after the replica's 101. The decisions
// (RFC 9110 §7.8 lets a server ignore Upgrade; then it is dropped as any hop-by-hop header and the
// request is an ordinary one):
//  - HTTP/1.0: ignored, as §7.8 requires of a server.
//  - a body (Content-Length over 0, or Transfer-Encoding): ignored. The body would have to be
//    forwarded, then the switch made at its end; WebSocket sends none (RFC 6455 §4.1), and a
//    request smuggled in the body of a request that switches is not worth the risk.
//  - CONNECT never gets here (refused: http_validate.h).
// Bytes a client sends after an upgrade request (pipelined requests included) are never read as
// HTTP by the LB: after a 101 they go into the tunnel, after any other answer the connection closes.
bool forward_upgrade_wanted(const HttpHead& h);

// Adds to *out, a request head built by forward_request_head (it ends with the blank line), the
// Upgrade headers of request h with "Connection: Upgrade": for a request forward_upgrade_wanted
// says yes to (otherwise, as every hop-by-hop header, they are dropped).
void forward_request_upgrade(std::string* out, const HttpHead& h);

// True when response h names the protocol it switches to (an Upgrade header): a 101 without one is
// malformed (RFC 9110 §15.2.2).
bool forward_has_upgrade(const HttpHead& h);

// Builds into *out the 101 Switching Protocols head the client gets for response resp: its end-to-
// end headers (no framing: a 101 has no body), "Connection: Upgrade" and its Upgrade headers.
void forward_switching_head(std::string* out, const HttpHead& resp);
