// http_validate: what a proxy refuses in a request that llhttp parsed, and with which status.
// llhttp (never lenient) already rejects most malformed bytes; these are the requests it accepts
// and HAProxy and nginx do not, because an upstream could frame or route them differently from the
// LB (request smuggling, Host confusion) or because the LB cannot forward them as HTTP/1.1.
//
// Pure functions of a finished head: the proxy calls http_validate_request once per request, in
// on_head, before anything of the request goes upstream, and answers a refusal with its status and
// then closes the connection (the bytes after a refused head cannot be trusted to be framed right).
#pragma once

#include <string_view>

#include <llhttp.h>

#include "lb/http/http_head.h"

// A verdict on a request: status 0 lets it through; otherwise the status to answer with (400, 405,
// 501, 505) and a reason for the error body (a static string).
struct HttpVerdict {
  int status;
  const char* reason;
};

// Checks a finished request head (http_head_finish ran). What llhttp's strict mode refuses already
// (whitespace in or after a header name, control characters in values, two Content-Length, CL with
// TE, bare LF in the headers) is not checked again: http_conn answers its parse errors.
//   400  HTTP/0.9; an empty header name; two Host
//        headers; an HTTP/1.1 request without Host; a request-target that is not origin-form
//        ("/..."), absolute-form ("http://authority/...") or "*" for OPTIONS; Content-Length and
//        Transfer-Encoding together; a Content-Length over 2^63-1; Transfer-Encoding in an
//        HTTP/1.0 request; a header named like Content-Length or Transfer-Encoding with '_' for
//        '-' (which CGI-style servers read as the real one).
//   405  CONNECT (the LB does not tunnel).
//   501  Transfer-Encoding other than exactly one "chunked".
//   505  a version other than HTTP/1.0 and HTTP/1.1.
HttpVerdict http_validate_request(const HttpHead& h);

// The verdict for a request llhttp failed to parse with err (reason: llhttp's text, may be null):
// 505 for a well-formed version llhttp does not know (HTTP/1.2, HTTP/3.0), 501 for a
// Transfer-Encoding it refuses (two of them), 400 otherwise.
HttpVerdict http_parse_error_verdict(llhttp_errno_t err, const char* reason);

// For a request whose target is in absolute-form (http_validate_request accepted it), points the
// head's URL at the origin-form part (path and query, "" when the target has none) and
// h->authority at the authority, which replaces the request's Host (RFC 9112 §3.2.2). Returns
// true when the target was in absolute-form; otherwise changes nothing.
bool http_head_origin_form(HttpHead* h);
