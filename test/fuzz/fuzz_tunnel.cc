// fuzz_tunnel: arbitrary bytes both ways through an Upgrade tunnel (WebSocket) of the LB (libFuzzer).
//
// A client sends a valid upgrade request to a fresh LB (fuzz_world.h); the upstream answers it
// 101 Switching Protocols and its connection becomes a raw tunnel (World::up_switch). The input
// then gives the bytes each side sends through the tunnel, and when:
//   byte 0      flags: bit 0: the client's bytes go in the same write as its request head (before
//               the 101: the LB holds them until it switched); else once the 101 arrived.
//               bit 1: the upstream's bytes go in the same write as the 101; else right after it.
//               bit 2: the upstream half-closes before the client's bytes arrived; else once the
//               LB half-closed towards it.
//   bytes 1-2   the client's share of the rest (little-endian, modulo its length + 1)
//   the rest    the client's bytes, then the upstream's.
// Each side half-closes after its bytes. The oracle, checked on every input:
//  - the upstream parsed exactly one request (the upgrade) and received, after its head, exactly the
//    client's bytes, then the LB's half-close;
//  - the client received a 101 head naming the protocol, then exactly the upstream's bytes, then
//    the LB's close, without anything stalling;
//  - the LB counted one tunnel opened and one closed; no handle is left.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "test/fuzz/fuzz_world.h"

namespace {

constexpr char kRequest[] =
    "GET /ws HTTP/1.1\r\nHost: fuzz\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
constexpr char k101[] =
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

struct Run {
  std::string client_bytes, up_bytes;
  bool client_early = false, up_with_101 = false, up_shut_first = false;
  bool client_sent = false;   // the client wrote its bytes and half-closed
  bool up_sent = false;       // the upstream wrote its bytes
  World* w = nullptr;
};

void up_send(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  if (r->up_sent) return;
  r->up_sent = true;
  if (!r->up_with_101) world_up_write(w, r->up_bytes.data(), r->up_bytes.size());
  if (r->up_shut_first) world_up_shutdown(w);
}

void answer(World* w, const UpRequest& req, std::string* out, bool* shutdown_after) {
  Run* r = static_cast<Run*>(w->ctx);
  *shutdown_after = false;
  if (req.seq != 0) {  // not reached: the LB sends nothing but the tunnel's bytes after the 101
    *out = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    return;
  }
  *out = k101;
  if (r->up_with_101) out->append(r->up_bytes);
  w->up_switch = true;
}

// The upstream's side after the switch: its bytes right away, its half-close either at once or once
// the LB passed the client's on.
void on_up_data(World* w) {
  up_send(w);
  if (w->up_tunnel_eof) world_up_shutdown(w);
}

void client_send(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  if (r->client_sent) return;
  r->client_sent = true;
  if (!r->client_early) world_client_write(w, r->client_bytes.data(), r->client_bytes.size());
  world_client_shutdown(w);
}

void on_connected(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  std::string first = kRequest;
  if (r->client_early) first += r->client_bytes;
  world_client_write(w, first.data(), first.size());
  if (r->client_early) client_send(w);
}

void on_client_data(World* w) {
  if (w->client_in.find("\r\n\r\n") != std::string::npos) client_send(w);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  fuzz_set_input(data, len);
  Run run;
  if (len >= 3) {
    run.client_early = data[0] & 1;
    run.up_with_101 = data[0] & 2;
    run.up_shut_first = data[0] & 4;
    size_t rest = len - 3;
    size_t share = (static_cast<size_t>(data[1]) | static_cast<size_t>(data[2]) << 8) % (rest + 1);
    run.client_bytes.assign(reinterpret_cast<const char*>(data) + 3, share);
    run.up_bytes.assign(reinterpret_cast<const char*>(data) + 3 + share, rest - share);
  }
  World* w = world_start(answer, &run);
  run.w = w;
  w->on_client_connected = on_connected;
  w->on_client_data = on_client_data;
  w->on_up_tunnel_data = on_up_data;
  world_client_connect(w);
  bool finished = world_run_client(w, 1500);
  if (w->client_failed) {
    world_stop(w);
    return 0;
  }
  if (!finished)
    fuzz_breach(w, data, len, "the tunnel stalled: nothing moved for 1.5 s with the client open (client "
                "sent: %d, upstream sent: %d, LB's half-close to the upstream: %d)", run.client_sent,
                run.up_sent, w->up_tunnel_eof);
  world_sync(w);
  const PlaneCounters& t = w->control.totals;
  size_t complete = 0;
  for (const UpRequest& u : w->up_reqs) complete += u.complete ? 1 : 0;
  if (w->up_conns != 1 || complete != 1)
    fuzz_breach(w, data, len, "the upstream saw %d connections and %zu complete requests, not one upgrade "
                "request", w->up_conns, complete);
  if (w->up_tunnel_in != run.client_bytes)
    fuzz_breach(w, data, len, "the upstream received %zu tunnel bytes (\"%s\"), the client sent %zu",
                w->up_tunnel_in.size(), fuzz_escape(w->up_tunnel_in, 120).c_str(),
                run.client_bytes.size());
  if (!w->up_tunnel_eof)
    fuzz_breach(w, data, len, "the LB never passed the client's half-close on to the upstream");
  size_t head_end = w->client_in.find("\r\n\r\n");
  if (w->client_in.compare(0, 13, "HTTP/1.1 101 ") != 0 || head_end == std::string::npos ||
      w->client_in.find("\r\nUpgrade: websocket\r\n") > head_end)
    fuzz_breach(w, data, len, "the client did not get a 101 naming websocket");
  std::string after = w->client_in.substr(head_end + 4);
  if (after != run.up_bytes)
    fuzz_breach(w, data, len, "the client received %zu bytes after the 101 (\"%s\"), the upstream sent %zu",
                after.size(), fuzz_escape(after, 120).c_str(), run.up_bytes.size());
  if (!w->client_eof)
    fuzz_breach(w, data, len, "the client's connection ended without the LB's close");
  if (t.tunnels_opened != 1 || t.tunnels_closed != 1)
    fuzz_breach(w, data, len, "the LB counted %llu tunnels opened and %llu closed, not one each",
                static_cast<unsigned long long>(t.tunnels_opened),
                static_cast<unsigned long long>(t.tunnels_closed));
  world_stop(w);
  fuzz_set_input(nullptr, 0);
  return 0;
}
