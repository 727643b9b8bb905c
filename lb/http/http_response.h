// http_response: formatting of responses that a component answers itself (replica routes, admin API,
// the proxy's own errors). Proxied responses are rewritten in lb/data, not here.
#pragma once

#include <string>
#include <string_view>

// The reason phrase for status ("OK", "Not Found"); "" for codes without one here (RFC 9112 §4
// makes the phrase optional).
const char* http_reason(int status);

// Appends the status line "HTTP/1.1 STATUS REASON\r\n" (status 100..999) in one append.
void http_append_status_line(std::string* out, int status);

// Appends a complete HTTP/1.1 response to out: status line, Content-Type (when body or content_type is
// non-empty), Content-Length, Connection: keep-alive or close, extra (complete header lines, each ending
// in \r\n, may be empty), and body.
void http_append_response(std::string* out, int status, std::string_view content_type,
                          std::string_view body, bool keep_alive, std::string_view extra = {});

// Appends text to out escaped for the inside of a JSON string (RFC 8259 §7): quotation mark, reverse
// solidus and control characters. Other bytes pass unchanged. For text from a request (a path) that a
// component puts in its own JSON answers.
void http_append_json_escaped(std::string* out, std::string_view text);

// The JSON error body every ringlb error uses (admin API and the proxy's own answers):
// {"message": "<Error> TEXT", "status": "failure"}, TEXT escaped.
std::string http_error_json(std::string_view text);
