#include "lb/http/http_response.h"

#include <cstring>

const char* http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";  // the reason phrase is optional (RFC 9112 §4)
  }
}

void http_append_status_line(std::string* out, int status) {
  char line[64] = "HTTP/1.1 ";
  size_t n = 9;
  line[n++] = static_cast<char>('0' + status / 100 % 10);
  line[n++] = static_cast<char>('0' + status / 10 % 10);
  line[n++] = static_cast<char>('0' + status % 10);
  line[n++] = ' ';
  const char* reason = http_reason(status);
  size_t len = strlen(reason);  // at most 31 ("Request Header Fields Too Large")
  memcpy(line + n, reason, len);
  n += len;
  line[n++] = '\r';
  line[n++] = '\n';
  out->append(line, n);
}

void http_append_response(std::string* out, int status, std::string_view content_type,
                          std::string_view body, bool keep_alive, std::string_view extra) {
  http_append_status_line(out, status);
  if (!content_type.empty()) {
    out->append("Content-Type: ");
    out->append(content_type);
    out->append("\r\n");
  }
  out->append("Content-Length: ");
  out->append(std::to_string(body.size()));
  out->append(keep_alive ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n");
  out->append(extra);
  out->append("\r\n");
  out->append(body);
}

void http_append_json_escaped(std::string* out, std::string_view text) {
  static const char hex[] = "0123456789abcdef";
  for (char ch : text) {
    unsigned char u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (u < 0x20) {
      out->append("\\u00");
      out->push_back(hex[u >> 4]);
      out->push_back(hex[u & 15]);
    } else {
      out->push_back(ch);
    }
  }
}

std::string http_error_json(std::string_view text) {
  std::string out = "{\"message\": \"<Error> ";
  http_append_json_escaped(&out, text);
  out.append("\", \"status\": \"failure\"}");
  return out;
}
