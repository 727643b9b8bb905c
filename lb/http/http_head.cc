#include "lb/http/http_head.h"

// HttpHead::part: what the last piece added belongs to. A header's line is complete (CRLF included)
// once a value piece arrived, so the lines of trailer fields, which come after http_head_finish,
// are complete too.
enum : uint8_t { PART_NONE = 0, PART_NAME = 1, PART_VALUE = 2 };

void http_head_reset(HttpHead* h) {
  h->buf.clear();
  h->headers.clear();
  h->url_off = h->url_len = 0;
  h->authority_off = h->authority_len = 0;
  h->method = HTTP_GET;
  h->status = 0;
  h->major = h->minor = 1;
  h->keep_alive = true;
  h->chunked = false;
  h->content_length = -1;
  h->length_over_range = false;
  h->text_bytes = 0;
  h->part = PART_NONE;
  h->over_limit = false;
}

static int head_append(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len) {
  if (h->over_limit || h->text_bytes + len > lim.max_bytes) {
    h->over_limit = true;
    return -1;
  }
  h->text_bytes += static_cast<uint32_t>(len);
  h->buf.append(at, len);
  return 0;
}

// The separators go in with push_back, which is inlined, where append is a call: the head of every
// message a proxy forwards passes through here.
static void end_line(HttpHead* h) {
  h->buf.push_back('\r');
  h->buf.push_back('\n');
}

// After the last name piece: the separator, and where the value starts.
static void begin_value(HttpHead* h) {
  h->buf.push_back(':');
  h->buf.push_back(' ');
  h->headers.back().value_off = static_cast<uint32_t>(h->buf.size());
  h->part = PART_VALUE;
}

int http_head_add_url(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len) {
  if (h->url_len == 0) h->url_off = static_cast<uint32_t>(h->buf.size());
  if (head_append(h, lim, at, len) != 0) return -1;
  h->url_len += static_cast<uint32_t>(len);
  return 0;
}

int http_head_add_field(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len) {
  if (h->part != PART_NAME) {  // a new header (a name may arrive in several pieces)
    if (h->headers.size() >= lim.max_headers) {
      h->over_limit = true;
      return -1;
    }
    uint32_t off = static_cast<uint32_t>(h->buf.size());
    h->headers.push_back(HttpHeader{off, 0, off, 0});
    h->part = PART_NAME;
  }
  if (head_append(h, lim, at, len) != 0) return -1;
  h->headers.back().name_len += static_cast<uint32_t>(len);
  return 0;
}

int http_head_add_value(HttpHead* h, const HttpHeadLimits& lim, const char* at, size_t len) {
  if (h->headers.empty()) return -1;  // llhttp never sends a value before a field
  if (h->part == PART_NAME) {
    begin_value(h);
  } else if (h->part == PART_VALUE) {
    h->buf.resize(h->buf.size() - 2);  // a further piece of the value: it goes before the CRLF
  } else {
    return -1;  // a value after the head was finished, without a field first
  }
  if (head_append(h, lim, at, len) != 0) return -1;
  h->headers.back().value_len += static_cast<uint32_t>(len);
  end_line(h);
  return 0;
}

void http_head_finish(HttpHead* h, const llhttp_t* p) {
  if (h->part == PART_NAME) {  // a header without a value piece
    begin_value(h);
    end_line(h);
  }
  h->part = PART_NONE;
  h->method = static_cast<llhttp_method_t>(p->method);
  h->status = p->status_code;
  h->major = p->http_major;
  h->minor = p->http_minor;
  h->keep_alive = llhttp_should_keep_alive(p) != 0;
  h->chunked = (p->flags & F_CHUNKED) != 0;
  // llhttp takes any Content-Length up to 2^64-1; one over 2^63-1 is not kept as a negative
  // length (which reads as "none"), but flagged for http_validate_request to refuse, as nginx does.
  bool has_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h->length_over_range = has_length && p->content_length > static_cast<uint64_t>(INT64_MAX);
  h->content_length = has_length && !h->length_over_range ? static_cast<int64_t>(p->content_length) : -1;
}

static std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool http_head_get(const HttpHead& h, std::string_view name, std::string_view* value) {
  for (const HttpHeader& hd : h.headers) {
    if (http_iequals(http_head_name(h, hd), name)) {
      *value = trim(http_head_value(h, hd));
      return true;
    }
  }
  return false;
}

std::string_view http_url_path(std::string_view url) {
  size_t end = url.find_first_of("?#");
  return end == std::string_view::npos ? url : url.substr(0, end);
}

bool http_url_query(std::string_view url, std::string_view key, std::string_view* value) {
  size_t q = url.find('?');
  if (q == std::string_view::npos) return false;
  std::string_view rest = url.substr(q + 1);
  size_t hash = rest.find('#');
  if (hash != std::string_view::npos) rest = rest.substr(0, hash);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    std::string_view k = pair.substr(0, eq);
    if (k == key) {
      *value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      return true;
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return false;
}

bool http_is_hop_by_hop(std::string_view name) {
  // Called for every forwarded header: one comparison at most, chosen by length.
  switch (name.size()) {
    case 2: return http_iequals(name, "te");
    case 7: return http_iequals(name, "upgrade");  // not Trailer: end to end (RFC 9110 §6.6.2)
    case 10: return http_iequals(name, "connection") || http_iequals(name, "keep-alive");
    case 16: return http_iequals(name, "proxy-connection");
    case 18: return http_iequals(name, "proxy-authenticate");
    case 19: return http_iequals(name, "proxy-authorization");
    default: return false;
  }
}

bool http_trailer_forbidden(std::string_view name) {
  return http_is_hop_by_hop(name) || http_is_framing(name) || http_iequals(name, "host") ||
         http_iequals(name, "trailer");
}

namespace {

// Calls fn with each comma-separated token of list, blanks around it trimmed, empty ones skipped.
template <typename Fn>
void for_each_token(std::string_view list, Fn fn) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view token = trim(list.substr(0, comma));
    if (!token.empty()) fn(token);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// True for the headers a Connection header can never make hop-by-hop: the message's framing
// (Content-Length, Transfer-Encoding) and Host. Dropping one of them while forwarding the bytes it
// framed would let the next hop frame them otherwise: a client's `Connection: content-length`
// turned its body into a second request on the pooled upstream connection (request smuggling),
// and a replica's turned a kept-alive response into a close-delimited one. HAProxy and nginx keep
// them too.
bool never_connection_option(std::string_view token) {
  switch (token.size()) {
    case 4: return http_iequals(token, "host");
    case 14: return http_iequals(token, "content-length");
    case 17: return http_iequals(token, "transfer-encoding");
    default: return false;
  }
}

// Calls fn with each token of a Connection header's value other than close, keep-alive, upgrade
// and the headers no Connection header removes (never_connection_option).
template <typename Fn>
void for_each_connection_option(std::string_view value, Fn fn) {
  for_each_token(value, [&](std::string_view token) {
    if (!http_iequals(token, "close") && !http_iequals(token, "keep-alive") &&
        !http_iequals(token, "upgrade") && !never_connection_option(token))
      fn(token);
  });
}

}  // namespace

std::string http_connection_options(const HttpHead& h) {
  std::string names;
  for (const HttpHeader& hd : h.headers) {
    if (!http_iequals(http_head_name(h, hd), "connection")) continue;
    for_each_connection_option(http_head_value(h, hd), [&](std::string_view token) {
      if (!names.empty()) names.push_back(',');
      names.append(token);
    });
  }
  return names;
}

bool http_connection_value_has_options(std::string_view value) {
  value = trim(value);
  if (http_iequals(value, "keep-alive") || http_iequals(value, "close")) return false;  // usual
  bool found = false;
  for_each_connection_option(value, [&](std::string_view) { found = true; });
  return found;
}

bool http_list_has(std::string_view list, std::string_view name) {
  bool found = false;
  for_each_token(list, [&](std::string_view token) { found = found || http_iequals(token, name); });
  return found;
}
