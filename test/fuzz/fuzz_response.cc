// fuzz_response: arbitrary upstream response bytes through the LB's response path (libFuzzer).
//
// A well-behaved client sends one GET to a fresh LB (fuzz_world.h); the upstream answers it with the
// input's bytes and half-closes. The oracle, checked on every input:
//  - the client's strict parser (a separate llhttp) accepts every byte the LB sends;
//  - the client gets at most one final response to its request (interim 1xx aside), with framing of
//    its own: a complete response, or the connection closed;
//  - when that response leaves the connection open (keep-alive), nothing follows it: the client's
//    second request gets exactly the upstream's known second answer, and nothing else;
//  - when it does not, the LB closes the connection right after it;
//  - the client is never left waiting on an open connection with nothing moving; no handle is left.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "test/fuzz/fuzz_world.h"

namespace {

constexpr char kRequest1[] = "GET /fuzz/1 HTTP/1.1\r\nHost: fuzz\r\n\r\n";
constexpr char kRequest2[] = "GET /fuzz/2 HTTP/1.1\r\nHost: fuzz\r\n\r\n";
constexpr char kSentinelBody[] = "sentinel-4f1e";

struct Run {
  const uint8_t* data;
  size_t len;
  World* w = nullptr;
  llhttp_t parser;
  int finals = 0;          // final responses the client parsed completely
  int begun = 0;           // final responses begun
  bool interim = false;    // the message being parsed is a 1xx
  bool keep_alive1 = false;
  bool sent2 = false;
  std::string body[3];
  int status[3] = {0, 0, 0};
  bool error = false;
  std::string error_reason;
  size_t consumed = 0;     // client bytes parsed so far
};

void answer(World* w, const UpRequest& req, std::string* out, bool* shutdown_after) {
  Run* run = static_cast<Run*>(w->ctx);
  if (req.url == "/fuzz/1") {
    out->assign(reinterpret_cast<const char*>(run->data), run->len);
    *shutdown_after = true;
  } else {
    *out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(sizeof kSentinelBody - 1) +
           "\r\n\r\n" + kSentinelBody;
    *shutdown_after = false;
  }
}

Run* run_of(llhttp_t* p) { return static_cast<Run*>(p->data); }

int on_headers_complete(llhttp_t* p) {
  Run* r = run_of(p);
  int st = p->status_code;
  r->interim = st >= 100 && st < 200;
  if (r->interim) return 1;
  if (r->begun < 3) r->status[r->begun] = st;
  r->begun++;
  return st == 204 || st == 304 ? 1 : 0;
}

int on_body(llhttp_t* p, const char* at, size_t len) {
  Run* r = run_of(p);
  if (!r->interim && r->begun >= 1 && r->begun <= 3) r->body[r->begun - 1].append(at, len);
  return 0;
}

int on_message_complete(llhttp_t* p) {
  Run* r = run_of(p);
  if (r->interim) {
    r->interim = false;
    return 0;
  }
  r->finals++;
  if (r->finals == 1) {
    r->keep_alive1 = llhttp_should_keep_alive(p);
    if (r->keep_alive1) {
      r->sent2 = true;
      world_client_write(r->w, kRequest2, sizeof kRequest2 - 1);
    }
  }
  if (r->finals == 2) world_client_close(r->w);  // done: anything after it is never read
  return 0;
}

const llhttp_settings_t* settings() {
  static llhttp_settings_t s;
  static bool init = false;
  if (!init) {
    llhttp_settings_init(&s);
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    init = true;
  }
  return &s;
}

void on_connected(World* w) { world_client_write(w, kRequest1, sizeof kRequest1 - 1); }

void on_data(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  if (r->error || r->finals >= 2) return;
  const char* at = w->client_in.data() + r->consumed;
  size_t len = w->client_in.size() - r->consumed;
  r->consumed = w->client_in.size();
  llhttp_errno_t e = llhttp_execute(&r->parser, at, len);
  if (e != HPE_OK) {
    r->error = true;
    r->error_reason = llhttp_get_error_reason(&r->parser);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  fuzz_set_input(data, len);
  Run run;
  run.data = data;
  run.len = len;
  World* w = world_start(answer, &run);
  run.w = w;
  llhttp_init(&run.parser, HTTP_RESPONSE, settings());
  run.parser.data = &run;
  w->on_client_connected = on_connected;
  w->on_client_data = on_data;
  world_client_connect(w);
  bool finished = world_run_client(w, 1500);
  if (w->client_failed) {
    world_stop(w);
    return 0;
  }
  // The LB's close completes a close-delimited response; a response it cut short stays incomplete.
  if (!run.error && w->client_eof && run.finals < 2) llhttp_finish(&run.parser);
  if (run.error && run.finals >= 1 && !run.keep_alive1)
    fuzz_breach(w, data, len, "bytes after a response that closes the connection (%s)",
                run.error_reason.c_str());
  if (run.error)
    fuzz_breach(w, data, len, "the client cannot parse what the LB sent (%s)", run.error_reason.c_str());
  if (!finished)
    fuzz_breach(w, data, len, "the client has %d complete responses (%d begun) and the LB keeps the "
                "connection open with nothing moving for 1.5 s: a response without framing of its own",
                run.finals, run.begun);
  if (run.sent2) {
    if (run.finals < 2)
      fuzz_breach(w, data, len, "the LB closed the connection after a keep-alive response without a "
                  "complete answer to the next request (%d begun)", run.begun);
    if (run.status[1] != 200 || run.body[1] != kSentinelBody)
      fuzz_breach(w, data, len, "the second request got status %d with body \"%s\", not the upstream's "
                  "answer to it: bytes of the first response leaked into the next exchange",
                  run.status[1], fuzz_escape(run.body[1], 120).c_str());
  }
  world_stop(w);
  fuzz_set_input(nullptr, 0);
  return 0;
}
