// fuzz_h2: arbitrary HTTP/2 frames from a client through the LB's HTTP/2 session (libFuzzer).
//
// A client opens h2c with prior knowledge on a fresh LB (fuzz_world.h): the connection preface, then
// the input's bytes after its first (frames, as the seeds in corpus/fuzz_h2 are), then a half-close.
// The LB speaks HTTP/2 to it (lb/data/h2_client.cc, nghttp2) and HTTP/1.1 to the recording upstream,
// which answers every request it parses 200 with a small body naming it. The input's first byte:
//   bit 0   the client lets the LB finish (waits until nothing moved for 20 ms, at most 2 s) before
//           it half-closes, so responses come back on the streams; else it half-closes at once.
// The oracle, checked on every input:
//  - the upstream can parse every byte it receives as requests (fuzz_world: smuggling, at once);
//  - the LB's bytes to the client are HTTP/2 frames: its SETTINGS first, then frames of a known
//    type with a length within the default SETTINGS_MAX_FRAME_SIZE (the LB's frames are nghttp2's,
//    which never goes over it), on stream 0 exactly for connection frames;
//  - the LB completed no more exchanges with its replica than the upstream parsed requests;
//  - the LB closes the half-closed client without stalling, and leaves no handle open.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "test/fuzz/fuzz_world.h"

namespace {

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kMaxFrame = 16384;  // SETTINGS_MAX_FRAME_SIZE's initial value (RFC 9113 §6.5.2)

struct Run {
  std::string bytes;  // the preface and the frames
  bool linger = false;
};

void answer(World*, const UpRequest& req, std::string* out, bool* shutdown_after) {
  std::string body = "seq " + std::to_string(req.seq);
  *out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nX-Fuzz-Seq: " + std::to_string(req.seq) + "\r\n\r\n";
  if (req.method != HTTP_HEAD) out->append(body);
  *shutdown_after = false;
}

void on_connected(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  world_client_write(w, r->bytes.data(), r->bytes.size());
  if (!r->linger) world_client_shutdown(w);
}

// Frames whose stream identifier is 0 (connection frames) and those that are never on stream 0.
bool connection_frame(uint8_t type) { return type == 0x4 || type == 0x6 || type == 0x7; }
bool stream_frame(uint8_t type) { return type <= 0x3 || type == 0x5 || type == 0x9; }

// Checks the LB's frames (only whole ones: a close may cut the last write short when the client
// has gone, which is allowed). Returns an empty string or what is wrong.
std::string check_frames(const std::string& in) {
  size_t pos = 0;
  int n = 0;
  while (in.size() - pos >= 9) {
    const uint8_t* f = reinterpret_cast<const uint8_t*>(in.data() + pos);
    size_t len = static_cast<size_t>(f[0]) << 16 | static_cast<size_t>(f[1]) << 8 | f[2];
    uint8_t type = f[3];
    uint32_t stream = (static_cast<uint32_t>(f[5]) << 24 | static_cast<uint32_t>(f[6]) << 16 |
                       static_cast<uint32_t>(f[7]) << 8 | f[8]);
    char what[160];
    if (stream & 0x80000000u) {
      snprintf(what, sizeof what, "frame %d (type %u) has the reserved bit set", n, type);
      return what;
    }
    if (n == 0 && (type != 0x4 || stream != 0 || (f[4] & 1) != 0)) {
      snprintf(what, sizeof what, "the first frame is type %u on stream %u, not the server's SETTINGS",
               type, stream);
      return what;
    }
    if (len > kMaxFrame) {
      snprintf(what, sizeof what, "frame %d (type %u) is %zu bytes long, over %zu", n, type, len, kMaxFrame);
      return what;
    }
    if (type > 0x9) {
      snprintf(what, sizeof what, "frame %d has unknown type %u", n, type);
      return what;
    }
    if ((connection_frame(type) && stream != 0) || (stream_frame(type) && stream == 0)) {
      snprintf(what, sizeof what, "frame %d (type %u) is on stream %u", n, type, stream);
      return what;
    }
    if (in.size() - pos - 9 < len) break;  // cut short by the close
    pos += 9 + len;
    n++;
  }
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  fuzz_set_input(data, len);
  Run run;
  run.bytes = kPreface;
  if (len > 0) {
    run.linger = data[0] & 1;
    run.bytes.append(reinterpret_cast<const char*>(data) + 1, len - 1);
  }
  World* w = world_start(answer, &run);
  w->on_client_connected = on_connected;
  world_client_connect(w);
  if (run.linger) {
    world_run_quiet(w, 20, 2000);
    world_client_shutdown(w);
  }
  bool finished = world_run_client(w, 1500);
  if (w->client_failed) {
    world_stop(w);
    return 0;
  }
  if (!finished)
    fuzz_breach(w, data, len, "the LB left the half-closed HTTP/2 client open with nothing moving for 1.5 s");
  std::string wrong = check_frames(w->client_in);
  if (!wrong.empty()) fuzz_breach(w, data, len, "the client cannot read the LB's HTTP/2: %s", wrong.c_str());
  uint64_t completed = world_replica_requests(w);
  size_t up_complete = 0;
  for (const UpRequest& u : w->up_reqs) up_complete += u.complete ? 1 : 0;
  if (completed > up_complete)
    fuzz_breach(w, data, len, "the LB completed %llu exchanges with its replica, which answered %zu requests",
                static_cast<unsigned long long>(completed), up_complete);
  world_stop(w);
  fuzz_set_input(nullptr, 0);
  return 0;
}
