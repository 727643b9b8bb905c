#include "lb/http/http_validate.h"

#include <cstdint>
#include <cstring>

namespace {

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// The length of the scheme prefix "http://" or "https://" (any case) that url starts with, or 0.
size_t absolute_prefix(std::string_view url) {
  if (url.size() > 7 && http_iequals(url.substr(0, 7), "http://")) return 7;
  if (url.size() > 8 && http_iequals(url.substr(0, 8), "https://")) return 8;
  return 0;
}

// True for a request-target the LB forwards: origin-form, absolute-form with an authority, and
// asterisk-form for OPTIONS (RFC 9112 §3.2). llhttp lets through "*" with any method and URLs
// with schemes other than http(s), which a replica would take for something else than a path.
bool target_acceptable(std::string_view url, llhttp_method_t method) {
  if (!url.empty() && url.front() == '/') return true;
  if (url == "*") return method == HTTP_OPTIONS;
  size_t prefix = absolute_prefix(url);
  if (prefix == 0) return false;
  size_t end = url.find_first_of("/?#", prefix);
  std::string_view authority = url.substr(prefix, end == std::string_view::npos ? url.npos : end - prefix);
  // A non-empty authority without userinfo: "http://user@evil/" would become "Host: user@evil",
  // and RFC 9110 §4.2.4 asks a recipient to treat userinfo from an untrusted source as an error.
  return !authority.empty() && authority.find('@') == std::string_view::npos;
}

// True when the 4 bytes at p spell "host" in any case: one load and one comparison, as every
// request has a header of 4 letters (Host) and usually no other. Setting bit 5 maps only the
// upper-case letter to its lower-case one for each of h, o, s and t.
bool is_host(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  uint32_t host;
  memcpy(&host, "host", 4);
  return (v | 0x20202020u) == host;
}

// True for a header name that is Content-Length or Transfer-Encoding with '_' for some '-'
// ("Transfer_Encoding"). The LB does not frame by it, but a replica behind a CGI-style gateway
// (WSGI, CGI, PHP: HTTP_TRANSFER_ENCODING) reads it as the framing header, so the replica would
// frame the body otherwise than the LB did: request smuggling. nginx drops such names by default.
bool framing_lookalike(std::string_view name) {
  if (name.size() != 14 && name.size() != 17) return false;
  if (name.find('_') == std::string_view::npos) return false;
  const char* framing = name.size() == 14 ? "content-length" : "transfer-encoding";
  for (size_t i = 0; i < name.size(); i++) {
    char ch = name[i] == '_' ? '-' : static_cast<char>(http_ascii_lower(name[i]));
    if (ch != framing[i]) return false;
  }
  return true;
}

}  // namespace

HttpVerdict http_validate_request(const HttpHead& h) {
  if (h.major == 0) return {400, "HTTP/0.9 requests are not supported"};
  if (h.major != 1 || h.minor > 1) return {505, "only HTTP/1.0 and HTTP/1.1 are supported"};
  if (h.method == HTTP_CONNECT) return {405, "CONNECT is not supported"};
  if (!target_acceptable(http_head_url(h), h.method))
    return {400, "the request-target is not a path, an absolute http URL without userinfo or * for OPTIONS"};
  // One pass over the headers, one length switch each: every proxied request comes through here.
  unsigned hosts = 0, encodings = 0;
  bool chunked_only = true;
  for (const HttpHeader& hd : h.headers) {
    // A name with whitespace in it or before its colon ("Host : a") llhttp refuses in strict
    // mode, which deps/meson.build builds it in; an empty one it lets through.
    std::string_view name = http_head_name(h, hd);
    switch (name.size()) {
      case 0:
        return {400, "a header has an empty name"};
      case 4:
        if (is_host(name.data())) hosts++;
        break;
      case 14:
        if (framing_lookalike(name)) return {400, "a header name that reads as Content-Length"};
        break;
      case 17:
        if (http_iequals(name, "transfer-encoding")) {
          encodings++;
          chunked_only = chunked_only && http_iequals(trim(http_head_value(h, hd)), "chunked");
        } else if (framing_lookalike(name)) {
          return {400, "a header name that reads as Transfer-Encoding"};
        }
        break;
      default:
        break;
    }
  }
  if (hosts > 1) return {400, "more than one Host header"};
  if (hosts == 0 && h.minor == 1) return {400, "an HTTP/1.1 request without Host"};
  if (h.length_over_range) return {400, "Content-Length over 2^63-1"};
  // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (an HTTP/1.0
  // hop before the LB frames it otherwise); nginx refuses it too.
  if (encodings > 0 && h.minor == 0) return {400, "Transfer-Encoding in an HTTP/1.0 request"};
  if (encodings > 1 || !chunked_only) return {501, "Transfer-Encoding other than chunked"};
  if (encodings == 1 && h.content_length >= 0)
    return {400, "both Content-Length and Transfer-Encoding"};  // llhttp refuses it already
  return {0, nullptr};
}

HttpVerdict http_parse_error_verdict(llhttp_errno_t err, const char* reason) {
  if (reason == nullptr) reason = "malformed request";
  switch (err) {
    case HPE_INVALID_VERSION:
      // A well-formed version llhttp does not support (HTTP/1.2, HTTP/3.0), not garbage
      // (HTTP/1.x, "Invalid minor version"), which is a plain 400 as nginx answers it.
      return {strcmp(reason, "Invalid HTTP version") == 0 ? 505 : 400, reason};
    case HPE_INVALID_TRANSFER_ENCODING:
      return {501, reason};
    default:
      return {400, reason};
  }
}

bool http_head_origin_form(HttpHead* h) {
  std::string_view url = http_head_url(*h);
  size_t prefix = absolute_prefix(url);
  if (prefix == 0) return false;
  size_t end = url.find_first_of("/?#", prefix);
  if (end == std::string_view::npos) end = url.size();
  h->authority_off = h->url_off + static_cast<uint32_t>(prefix);
  h->authority_len = static_cast<uint32_t>(end - prefix);
  h->url_off += static_cast<uint32_t>(end);
  h->url_len -= static_cast<uint32_t>(end);
  return true;
}
