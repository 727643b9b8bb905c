// spread: keeps the client connections even over the workers. The kernel spreads new clients over
// the workers' SO_REUSEPORT sockets by a hash of their addresses, not by load: 64 keep-alive
// clients over 2 workers often split 38/26, and the busier worker's clients wait longer (its p99
// sets the LB's). A worker that holds 2 or more clients more than the least loaded worker hands a
// client to that one, through its mailbox (ToWorker::adopt), at the client's first idle moment:
// after its first response, with nothing of a next request read (HAProxy moves every client at
// accept; a client that sends one request and closes, as HTTP/1.0 and ab do, is gone before it
// would move, so it never pays the hand-off). A TLS client is moved at accept or never: its TLS
// state stays where its handshake ran. Only accepts, hand-offs and closes touch the shared counts:
// never a request.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "lb/http/http_conn.h"
#include "lb/plane.h"

struct Worker;

// The workers of one daemon, as each of them sees the others. Made by the control plane before the
// workers start, freed after every one of them was joined.
struct WorkerGroup {
  explicit WorkerGroup(uint32_t n) : members(n, nullptr), conns(new std::atomic<uint32_t>[n]) {
    for (uint32_t i = 0; i < n; i++) conns[i].store(0, std::memory_order_relaxed);
  }
  std::vector<Worker*> members;  // by index; written before `complete`, read after it
  // Per worker: main-listener clients it serves or that are on their way to it.
  std::unique_ptr<std::atomic<uint32_t>[]> conns;
  std::atomic<bool> complete{false};  // every worker started: hand-offs may begin
};

// HttpServer::should_hand_off of w's main listener: true (and the target chosen) when the client
// should go to a less loaded worker.
bool spread_should_hand_off(Worker* w);
// HttpServer::on_handed_off: posts fd to the chosen worker (idle: between requests). False when
// the client stays here: no descriptor to hand (fd -1), or the chosen worker stopped taking
// messages (fd closed).
bool spread_hand_off(Worker* w, HttpConn* c, int fd, bool idle);
// ToWorker::adopt: serves the client on w's main listener.
void spread_adopt(Worker* w, ToWorker& msg);
// A main-listener client of w was accepted here / closed.
void spread_opened(Worker* w);
void spread_closed(Worker* w);
