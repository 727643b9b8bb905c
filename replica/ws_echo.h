// ws_echo: the WebSocket echo of ringlb-replica's /ws endpoint (RFC 6455), as pure byte work: the
// opening handshake's answer, and a frame decoder that turns what a client sends into what the
// server writes back. No I/O: replica.cc reads, writes and closes.
//
// What it does: text and binary messages are echoed as one unmasked frame of the same type
// (fragmented ones once complete); a ping is answered by a pong with its payload; a pong is
// ignored; a close is answered by a close with the same code, and then the server closes. What it
// refuses, with a close frame carrying the code RFC 6455 §7.4.1 names, then the close: an unmasked
// client frame, reserved bits or opcodes (no extension is negotiated), a fragmented or oversized
// (> 125 bytes) control frame, a continuation without a message or a new message inside one
// (1002), a text message that is not UTF-8 (1007), and a message over kWsMessageMax (1009). The
// memory one connection takes is bounded by that limit: a frame is refused on its header, before
// its payload is buffered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "lb/http/http_head.h"

constexpr uint64_t kWsMessageMax = 16u << 20;  // largest message echoed (bytes)

struct WsEcho {
  std::string in;         // bytes read and not yet decoded (at most one frame header + payload)
  std::string msg;        // the fragmented message being assembled
  uint8_t msg_op = 0;     // its opcode (1 text, 2 binary); 0: none in progress
  bool close_sent = false;  // a close frame was queued: nothing more is written
};

// Checks that request h opens a WebSocket (GET, HTTP/1.1, Upgrade: websocket, Connection: upgrade,
// Sec-WebSocket-Version: 13, a Sec-WebSocket-Key of 16 bytes in base64). Returns 101 and the whole
// response head in *out, or the status to refuse it with (400; 426 with the version wanted in
// *out's header lines for another version) and *out empty or holding extra header lines.
int ws_handshake(const HttpHead& h, std::string* out);

// Decodes len bytes from the client, appending to *out the frames to write back. Returns false
// when the connection is to close once *out is written (a close handshake, or a refusal).
bool ws_feed(WsEcho* ws, const char* data, size_t len, std::string* out);

// Appends to *out one unmasked frame (FIN set) of opcode op with the payload.
void ws_frame(std::string* out, uint8_t op, const char* data, size_t len);
