#include "replica/ws_echo.h"

#include <cstring>

#include <openssl/evp.h>

namespace {

enum : uint8_t { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

constexpr char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// True when the comma-separated header value list holds token (case-insensitive, spaces trimmed).
bool list_has(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view t = list.substr(0, comma);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (http_iequals(t, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// True when some header called name lists token.
bool header_lists(const HttpHead& h, std::string_view name, std::string_view token) {
  for (const HttpHeader& hd : h.headers)
    if (http_iequals(http_head_name(h, hd), name) && list_has(http_head_value(h, hd), token))
      return true;
  return false;
}

// True for a Sec-WebSocket-Key that is 16 bytes in base64: 22 base64 characters and "==".
bool key_ok(std::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (size_t i = 0; i < 22; i++) {
    char ch = key[i];
    bool b64 = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
               ch == '+' || ch == '/';
    if (!b64) return false;
  }
  return true;
}

// Strict UTF-8 (RFC 3629: no overlongs, no surrogates, nothing over U+10FFFF).
bool utf8_ok(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += len;
  }
  return true;
}

// Queues a close frame with code (and nothing after it); returns false (the connection closes).
bool fail(WsEcho* ws, std::string* out, uint16_t code) {
  if (!ws->close_sent) {
    char payload[2] = {static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
    ws_frame(out, OP_CLOSE, payload, 2);
    ws->close_sent = true;
  }
  ws->in.clear();
  ws->msg.clear();
  return false;
}

// A complete message: echoed, unless it is text and not UTF-8.
bool deliver(WsEcho* ws, std::string* out, uint8_t op, const char* data, size_t len) {
  if (op == OP_TEXT && !utf8_ok(reinterpret_cast<const unsigned char*>(data), len))
    return fail(ws, out, 1007);
  ws_frame(out, op, data, len);
  return true;
}

// A close frame from the client: answered with its code (1000 when it gave none), then closed.
bool on_close_frame(WsEcho* ws, std::string* out, const char* p, size_t len) {
  if (len == 1) return fail(ws, out, 1002);
  uint16_t code = 1000;
  if (len >= 2) {
    code = static_cast<uint16_t>((static_cast<unsigned char>(p[0]) << 8) | static_cast<unsigned char>(p[1]));
    bool valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
                 (code >= 3000 && code <= 4999);
    if (!valid) return fail(ws, out, 1002);
    if (!utf8_ok(reinterpret_cast<const unsigned char*>(p + 2), len - 2)) return fail(ws, out, 1007);
  }
  return fail(ws, out, code);
}

}  // namespace

void ws_frame(std::string* out, uint8_t op, const char* data, size_t len) {
  out->push_back(static_cast<char>(0x80 | op));
  if (len < 126) {
    out->push_back(static_cast<char>(len));
  } else if (len <= 0xffff) {
    out->push_back(126);
    out->push_back(static_cast<char>(len >> 8));
    out->push_back(static_cast<char>(len & 0xff));
  } else {
    out->push_back(127);
    for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((uint64_t{len} >> shift) & 0xff));
  }
  out->append(data, len);
}

int ws_handshake(const HttpHead& h, std::string* out) {
  out->clear();
  std::string_view version, key;
  if (h.method != HTTP_GET || h.major != 1 || h.minor != 1 || !header_lists(h, "upgrade", "websocket") ||
      !header_lists(h, "connection", "upgrade") || !http_head_get(h, "sec-websocket-key", &key) ||
      !key_ok(key))
    return 400;
  if (!http_head_get(h, "sec-websocket-version", &version) || version != "13") {
    out->append("Sec-WebSocket-Version: 13\r\n");
    return 426;
  }
  std::string text(key);
  text.append(kGuid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1)
    return 500;
  unsigned char accept[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
  int accept_len = EVP_EncodeBlock(accept, digest, static_cast<int>(digest_len));
  out->append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: ");
  out->append(reinterpret_cast<const char*>(accept), static_cast<size_t>(accept_len));
  out->append("\r\n\r\n");
  return 101;
}

bool ws_feed(WsEcho* ws, const char* data, size_t len, std::string* out) {
  if (ws->close_sent) return false;  // after our close nothing more is read
  ws->in.append(data, len);
  size_t pos = 0;
  bool open = true;
  while (open) {
    size_t avail = ws->in.size() - pos;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(ws->in.data() + pos);
    if (avail < 2) break;
    bool fin = (p[0] & 0x80) != 0;
    uint8_t op = p[0] & 0x0f;
    if ((p[0] & 0x70) != 0) return fail(ws, out, 1002);   // RSV bits: no extension agreed
    if ((p[1] & 0x80) == 0) return fail(ws, out, 1002);   // a client's frames are masked
    uint64_t plen = p[1] & 0x7f;
    size_t hlen = 2;
    if (plen == 126) {
      if (avail < 4) break;
      plen = (uint64_t{p[2]} << 8) | p[3];
      hlen = 4;
    } else if (plen == 127) {
      if (avail < 10) break;
      plen = 0;
      for (int i = 0; i < 8; i++) plen = (plen << 8) | p[2 + i];
      hlen = 10;
      if (plen >> 63) return fail(ws, out, 1002);
    }
    bool control = (op & 0x08) != 0;
    if (control) {
      if (op != OP_CLOSE && op != OP_PING && op != OP_PONG) return fail(ws, out, 1002);
      if (!fin || plen > 125) return fail(ws, out, 1002);
    } else {
      if (op != OP_CONT && op != OP_TEXT && op != OP_BINARY) return fail(ws, out, 1002);
      if (op == OP_CONT && ws->msg_op == 0) return fail(ws, out, 1002);
      if (op != OP_CONT && ws->msg_op != 0) return fail(ws, out, 1002);
      // The bound is checked on the header: an oversized frame is never buffered.
      if (plen > kWsMessageMax || ws->msg.size() + plen > kWsMessageMax) return fail(ws, out, 1009);
    }
    if (avail < hlen + 4 + plen) break;  // wait for the rest of the frame
    const unsigned char* mask = p + hlen;
    char* payload = ws->in.data() + pos + hlen + 4;
    for (uint64_t i = 0; i < plen; i++) payload[i] ^= static_cast<char>(mask[i & 3]);
    pos += hlen + 4 + plen;
    size_t n = static_cast<size_t>(plen);
    switch (op) {
      case OP_PING:
        ws_frame(out, OP_PONG, payload, n);
        break;
      case OP_PONG:
        break;
      case OP_CLOSE:
        return on_close_frame(ws, out, payload, n);
      case OP_CONT:
        ws->msg.append(payload, n);
        if (fin) {
          open = deliver(ws, out, ws->msg_op, ws->msg.data(), ws->msg.size());
          ws->msg.clear();
          ws->msg.shrink_to_fit();
          ws->msg_op = 0;
        }
        break;
      default:  // text or binary
        if (fin) {
          open = deliver(ws, out, op, payload, n);
        } else {
          ws->msg_op = op;
          ws->msg.assign(payload, n);
        }
        break;
    }
  }
  if (!open) return false;
  ws->in.erase(0, pos);
  if (ws->in.empty() && ws->in.capacity() > 256 * 1024) ws->in.shrink_to_fit();
  return true;
}
