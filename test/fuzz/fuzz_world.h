// fuzz_world: one load balancer and its surroundings on a fresh libuv loop, for one fuzz input.
//
// The world is the real thing in one process: the real control plane (lb/control) with one
// data-plane worker thread (lb/data) over a real Registry with the static provisioner, a recording
// upstream that the static pool points at, and one client, the last two on the world's loop (with
// the control plane) and all talking over real loopback sockets. The recording upstream parses what the LB
// sends with a fresh llhttp parser per connection (never the LB's HttpConn) and answers each request
// through the target's answer function; a byte it cannot parse as a request is a breach at once.
//
// The world may also terminate TLS on the LB's listener (world_set_tls, for every world started
// after it), and its upstream may switch a connection to a raw tunnel after answering a request with
// a 101 (World::up_switch): from then on that connection's bytes are recorded unparsed
// (up_tunnel_in) and the target writes to it with world_up_write.
//
// Every input gets a new world (world_start ... world_stop): the LB's state cannot leak from one input
// into the next, the upstream's bytes belong to this input alone, and world_stop proves every handle
// was closed (uv_loop_close == 0) or aborts. A breach of an oracle aborts too, so libFuzzer reports it
// as a crash and keeps the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <llhttp.h>
#include <uv.h>

#include "lb/config.h"
#include "lb/provision/provisioner.h"
#include "lb/control/control.h"
#include "lb/control/registry.h"

struct TlsContext;

// One request the upstream parsed (or began to parse) on a recorded connection.
struct UpRequest {
  int conn = 0;            // the upstream connection, numbered from 0 in accept order
  llhttp_method_t method = HTTP_GET;
  std::string url;
  std::string body;        // decoded (chunk framing removed)
  bool complete = false;   // on_message_complete was reached
  int seq = -1;            // complete requests, numbered in completion order
};

struct World;

// How the upstream answers a complete request: bytes to write, and whether to half-close after them.
using AnswerFn = void (*)(World* w, const UpRequest& req, std::string* out, bool* shutdown_after);

struct World {
  uv_loop_t loop;
  // The recording upstream.
  uv_tcp_t up_listener;
  uint16_t up_port = 0;
  bool recording = false;  // connections accepted from now on are recorded (earlier ones: heartbeats)
  int up_conns = 0;        // recorded connections accepted
  int up_open = 0;         // upstream connections not yet closed (recorded or not)
  std::vector<UpRequest> up_reqs;
  std::vector<std::string> up_raw;  // every byte each recorded connection received, by connection
  AnswerFn answer = nullptr;
  void* ctx = nullptr;     // the target's state
  // Upgrade tunnels: the answer sets up_switch (with a 101 in out) to make its connection raw after
  // it; the bytes after the request's head then go to up_tunnel_in. on_up_tunnel_data runs once
  // right after the switch (the 101 written), after up_tunnel_in grew, and when up_tunnel_eof is
  // set (the LB half-closed, or closed, that connection).
  bool up_switch = false;
  void* up_tunnel = nullptr;  // the switched connection (internal)
  bool up_tunnel_eof = false;
  bool up_tunnel_shut = false;  // world_up_shutdown was called
  std::string up_tunnel_in;
  void (*on_up_tunnel_data)(World* w) = nullptr;
  // The load balancer.
  Config cfg;
  Provisioner* prov = nullptr;
  Registry reg;
  Control control;
  uint16_t lb_port = 0;
  bool lb_stopped = false;
  // The client.
  uv_tcp_t client;
  uv_connect_t client_connect;
  bool client_open = false;
  bool client_eof = false;  // the LB closed (EOF or reset)
  bool client_failed = false;  // the client could not connect (no local port): skip the oracle
  std::string client_in;    // every byte the client received
  void (*on_client_connected)(World* w) = nullptr;
  void (*on_client_data)(World* w) = nullptr;  // after client_in grew
  // Progress: bumped by every byte and close anywhere in the world (stall detection).
  uint64_t progress = 0;
};

// Prints a breach of an oracle with the input and what the upstream received, and aborts.
[[noreturn]] void fuzz_breach(const World* w, const uint8_t* input, size_t len, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

// The input being run, printed by fuzz_breach when it is called without one (inside the world).
void fuzz_set_input(const uint8_t* data, size_t len);

// Bytes as a C-escaped string, for reports.
std::string fuzz_escape(const std::string& s, size_t max = 600);

// Creates the world: the upstream listens, the LB starts over it, and the loop runs until the LB's
// heartbeat found the upstream healthy. Aborts if that does not happen within 5 s (a broken
// environment, not a finding).
World* world_start(AnswerFn answer, void* ctx);

// Makes every world started from now on terminate TLS on its listener with ctx (null: plain).
void world_set_tls(std::shared_ptr<TlsContext> ctx);

// The switched upstream connection (up_switch): writes bytes to the LB, and half-closes once they
// are written. The connection closes once the LB has ended its side too.
void world_up_write(World* w, const char* data, size_t len);
void world_up_shutdown(World* w);

// Connects the client to the LB; on_client_connected runs once connected.
void world_client_connect(World* w);
void world_client_write(World* w, const char* data, size_t len);
void world_client_shutdown(World* w);  // half-close: the LB sees EOF after the bytes written
void world_client_close(World* w);

// Runs the loop until the client connection is closed. Returns false when the world stalled first:
// nothing moved anywhere for stall_ms of loop time (checked again without waiting before giving up)
// while the client was still open.
bool world_run_client(World* w, uint64_t stall_ms);

// Runs the loop until nothing moved in the world for quiet_ms, the client closed, or max_ms passed
// (a client that lets the LB finish what it started before closing).
void world_run_quiet(World* w, uint64_t quiet_ms, uint64_t max_ms);

// Waits (running the loop, at most 5 s) until the worker has reported everything it counted so far
// (control_after_sync): the control plane's totals and Replica::requests are then complete.
void world_sync(World* w);

// Requests the LB completed with its one replica (Replica::requests), after a world_sync; read
// before world_stop.
uint64_t world_replica_requests(World* w);

// Stops the LB (control_stop, registry_close), lets the upstream see every connection's end, closes
// everything and checks uv_loop_close == 0 (aborts otherwise, listing the open handles). Frees w.
void world_stop(World* w);
