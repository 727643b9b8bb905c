#include "lb/data/forward.h"

#include "lb/http/http_response.h"

void forward_request_head(std::string* out, const HttpHead& h, const std::string& peer_ip,
                          const std::string& xff_line, std::string_view generated_rid,
                          bool https) {
  out->clear();
  std::string_view url = http_head_url(h);
  out->append(llhttp_method_name(h.method));
  out->push_back(' ');
  // Was absolute-form without a path ("http://a", "http://a?q", "http://a#f"): the path is "/".
  if (h.authority_len > 0 && (url.empty() || url.front() != '/')) out->push_back('/');
  out->append(url);
  out->append(" HTTP/1.1\r\n");
  bool has_xff = false, has_host = false;
  bool absolute = h.authority_len > 0;  // its authority replaces Host (RFC 9112 §3.2.2)
  http_append_forwarded(out, h, [&](std::string_view name, const HttpHeader&) {
    if (http_iequals(name, "x-forwarded-for")) {  // re-sent below with the client's address
      has_xff = true;
      return true;
    }
    if (https && http_iequals(name, "x-forwarded-proto")) return true;  // replaced below
    if (http_iequals(name, "host")) {
      has_host = true;
      return absolute;
    }
    return false;
  });
  if (absolute) {
    out->append("Host: ");
    out->append(http_head_authority(h));
    out->append("\r\n");
  } else if (!has_host) {
    out->append("Host: ringlb\r\n");
  }
  if (has_xff) {
    // Every X-Forwarded-For the client sent, in order, then the client's address: one list, as
    // several header lines of one field mean (RFC 9110 §5.3).
    out->append("X-Forwarded-For: ");
    for (const HttpHeader& hd : h.headers) {
      if (!http_iequals(http_head_name(h, hd), "x-forwarded-for")) continue;
      std::string_view v = http_head_value(h, hd);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      if (v.empty()) continue;
      out->append(v);
      out->append(", ");
    }
    out->append(peer_ip);
    out->append("\r\n");
  } else {
    out->append(xff_line);
  }
  if (https) out->append("X-Forwarded-Proto: https\r\n");
  if (!generated_rid.empty()) {
    out->append("X-Request-Id: ");
    out->append(generated_rid);
    out->append("\r\n");
  }
  out->append("\r\n");
}

ForwardFraming forward_response_head(std::string* out, const HttpHead& req, const HttpHead& h,
                                     bool keep_alive) {
  ForwardFraming f;
  bool no_body = req.method == HTTP_HEAD || h.status == 204 || h.status == 304;
  bool client_10 = req.major == 1 && req.minor == 0;
  f.dechunk = h.chunked && client_10 && !no_body;
  bool delimited = no_body || h.content_length >= 0 || (h.chunked && !client_10);
  f.keep_alive = keep_alive && delimited && h.keep_alive;

  out->clear();
  http_append_status_line(out, h.status);
  // A 204 has no body whatever its framing headers say (RFC 9112 §6.3), and its sender must not
  // send them (RFC 9110 §8.6, RFC 9112 §6.1): they are not passed on, so that nothing after the LB
  // reads the next response as this one's body. (HEAD and 304 keep theirs: there they describe
  // the representation.)
  bool no_framing = h.status == 204;
  bool dechunk = f.dechunk;
  http_append_forwarded(out, h, [dechunk, no_framing](std::string_view name, const HttpHeader&) {
    if (no_framing) return http_is_framing(name);
    return dechunk && http_iequals(name, "transfer-encoding");
  });
  if (!f.keep_alive) out->append("Connection: close\r\n");
  else if (client_10) out->append("Connection: keep-alive\r\n");
  out->append("\r\n");
  return f;
}

bool forward_interim_wanted(const HttpHead& req) { return req.major == 1 && req.minor != 0; }

void forward_interim(std::string* out, const HttpHead& h) {
  out->clear();
  http_append_status_line(out, h.status);
  http_append_forwarded(out, h, [](std::string_view name, const HttpHeader&) {
    return http_is_framing(name);
  });
  out->append("\r\n");
}

namespace {

// Appends "Connection: Upgrade" and every Upgrade header line of h, as received.
void append_upgrade(std::string* out, const HttpHead& h) {
  out->append("Connection: Upgrade\r\n");
  for (const HttpHeader& hd : h.headers)
    if (http_iequals(http_head_name(h, hd), "upgrade")) out->append(http_head_line(h, hd));
}

}  // namespace

bool forward_has_upgrade(const HttpHead& h) {
  std::string_view v;
  return http_head_get(h, "upgrade", &v) && !v.empty();
}

bool forward_upgrade_wanted(const HttpHead& h) {
  if (h.major != 1 || h.minor != 1 || h.method == HTTP_CONNECT) return false;
  if (h.chunked || h.content_length > 0) return false;
  // One pass over the headers, names told apart by length first: this runs for every request.
  bool upgrade_seen = false, upgrade = false, connection_upgrade = false;
  for (const HttpHeader& hd : h.headers) {
    std::string_view name = http_head_name(h, hd);
    if (name.size() == 7 && http_iequals(name, "upgrade")) {
      if (!upgrade_seen) upgrade = !http_head_value(h, hd).empty();  // the first, as http_head_get
      upgrade_seen = true;
    } else if (name.size() == 10 && http_iequals(name, "connection")) {
      if (http_list_has(http_head_value(h, hd), "upgrade")) connection_upgrade = true;
    } else if (name.size() == 17 && http_iequals(name, "transfer-encoding")) {
      return false;
    }
  }
  return upgrade && connection_upgrade;
}

void forward_request_upgrade(std::string* out, const HttpHead& h) {
  out->resize(out->size() - 2);  // the blank line comes again after the Upgrade lines
  append_upgrade(out, h);
  out->append("\r\n");
}

void forward_switching_head(std::string* out, const HttpHead& h) {
  out->clear();
  http_append_status_line(out, h.status);
  http_append_forwarded(out, h, [](std::string_view name, const HttpHeader&) {
    return http_is_framing(name);
  });
  append_upgrade(out, h);
  out->append("\r\n");
}
