// http_head: one parsed HTTP message head (request or response), accumulated from llhttp's data
// callbacks, which may deliver the URL, a header name or a header value in several pieces.
//
// All text lives in one buffer owned by the head; headers are offsets into it, so a head is reused
// message after message without allocating once its buffer has grown. Each header is kept as its
// wire line "Name: value\r\n" (value as received, without leading whitespace), so a proxy forwards
// it with one copy (http_head_line).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <llhttp.h>

struct HttpHeader {
  uint32_t name_off, name_len;
  uint32_t value_off, value_len;
};

// Limits a head enforces while it accumulates (a request over them gets 431).
struct HttpHeadLimits {
  uint32_t max_bytes = 16 * 1024;  // URL and all header names and values together
  uint32_t max_headers = 100;
};

struct HttpHead {
  std::string buf;  // the URL, then one "Name: value\r\n" line per header
  std::vector<HttpHeader> headers;
  uint32_t url_off = 0, url_len = 0;
  // The authority of an absolute-form target, set by http_head_origin_form (http_validate.h); 0
  // length otherwise.
  uint32_t authority_off = 0, authority_len = 0;
  // Filled by http_head_finish when the head is complete.
  llhttp_method_t method = HTTP_GET;
  int status = 0;
  uint8_t major = 1, minor = 1;
  bool keep_alive = true;
  bool chunked = false;
  int64_t content_length = -1;  // -1: none given
  bool length_over_range = false;  // Content-Length over 2^63-1 (content_length is then -1)
  // Accumulation state.
  uint32_t text_bytes = 0;  // URL, names and values (what HttpHeadLimits::max_bytes counts)
  uint8_t part = 0;         // what the last piece was: nothing yet, a name or a value (http_head.cc)
  bool over_limit = false;
};

void http_head_reset(HttpHead* h);

// Appends a piece of the URL, a header name or a header value. They return 0, or -1 once the head is
// over its limits (over_limit stays set; the caller answers 431 or fails the message).
int http_head_add_url(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len);
int http_head_add_field(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len);
int http_head_add_value(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len);

// Ends the last header line and copies method, status, version and framing from the parser at
// on_headers_complete.
void http_head_finish(HttpHead* h, const llhttp_t* parser);

inline std::string_view http_head_url(const HttpHead& h) {
  return std::string_view(h.buf.data() + h.url_off, h.url_len);
}
inline std::string_view http_head_authority(const HttpHead& h) {
  return std::string_view(h.buf.data() + h.authority_off, h.authority_len);
}
inline std::string_view http_head_name(const HttpHead& h, const HttpHeader& hd) {
  return std::string_view(h.buf.data() + hd.name_off, hd.name_len);
}
inline std::string_view http_head_value(const HttpHead& h, const HttpHeader& hd) {
  return std::string_view(h.buf.data() + hd.value_off, hd.value_len);
}
// The header as the line "Name: value\r\n" (complete once the head is finished).
inline std::string_view http_head_line(const HttpHead& h, const HttpHeader& hd) {
  return std::string_view(h.buf.data() + hd.name_off, hd.value_off + hd.value_len + 2 - hd.name_off);
}

// The value of the first header called name (ASCII case-insensitive), or nullptr-data view when absent.
// Leading and trailing spaces of the value are trimmed.
bool http_head_get(const HttpHead& h, std::string_view name, std::string_view* value);

// The path of the URL: up to '?' or '#'.
std::string_view http_url_path(std::string_view url);
// The value of query parameter key in url ("a=1&b=2"), false when absent.
bool http_url_query(std::string_view url, std::string_view key, std::string_view* value);

inline unsigned char http_ascii_lower(char ch) {
  unsigned char u = static_cast<unsigned char>(ch);
  return static_cast<unsigned>(u - 'A') < 26u ? u | 0x20 : u;
}
// ASCII case-insensitive equality (header names are ASCII tokens). Inline: a proxy compares every
// header name it forwards, and a call to strncasecmp cost more than the comparison.
inline bool http_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (http_ascii_lower(a[i]) != http_ascii_lower(b[i])) return false;
  return true;
}
// True for Content-Length and Transfer-Encoding (any case): the headers that frame a message's body.
inline bool http_is_framing(std::string_view name) {
  return (name.size() == 14 && http_iequals(name, "content-length")) ||
         (name.size() == 17 && http_iequals(name, "transfer-encoding"));
}
// True for the hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1), and Content-Length and
// Transfer-Encoding are not among them.
bool http_is_hop_by_hop(std::string_view name);
// True for the fields a trailer section must not carry (RFC 9110 §6.5.1): the hop-by-hop ones, the
// framing (Content-Length, Transfer-Encoding), routing (Host) and the Trailer list itself. A proxy
// drops them: a next hop that reads them (llhttp takes "Connection: close" or a Transfer-Encoding in
// the trailers as it would in the head) would frame the connection otherwise than the proxy does.
bool http_trailer_forbidden(std::string_view name);
// The header names h's Connection headers list besides close, keep-alive and upgrade, joined by
// commas ("" when none, the usual case): more hop-by-hop headers, which a proxy removes along with
// Connection itself (RFC 9110 §7.6.1). Content-Length, Transfer-Encoding and Host are never among
// them, listed or not: the framing a proxy forwards is the framing it parsed.
std::string http_connection_options(const HttpHead& h);
// True when a Connection header's value lists anything besides close, keep-alive, upgrade and the
// headers http_connection_options never returns.
bool http_connection_value_has_options(std::string_view value);
// True when name is one of the comma-separated names in list (case-insensitive).
bool http_list_has(std::string_view list, std::string_view name);

// Appends to out the header lines of h that a proxy forwards: all but the hop-by-hop ones, those
// h's Connection headers name included, and those skip(name, header) returns true for. skip sees
// each header at most twice (a second pass drops the Connection-named ones, in the rare message
// that has them), so it must give the same answer both times.
template <typename Skip>
void http_append_forwarded(std::string* out, const HttpHead& h, Skip skip) {
  size_t start = out->size();
  bool options = false;  // found in the same pass: the usual message costs no second look
  for (const HttpHeader& hd : h.headers) {
    std::string_view name = http_head_name(h, hd);
    if (http_is_hop_by_hop(name)) {
      if (!options && http_iequals(name, "connection"))
        options = http_connection_value_has_options(http_head_value(h, hd));
      continue;
    }
    if (skip(name, hd)) continue;
    out->append(http_head_line(h, hd));
  }
  if (!options) return;
  out->resize(start);
  const std::string listed = http_connection_options(h);
  for (const HttpHeader& hd : h.headers) {
    std::string_view name = http_head_name(h, hd);
    if (http_is_hop_by_hop(name) || http_list_has(listed, name) || skip(name, hd)) continue;
    out->append(http_head_line(h, hd));
  }
}
