// upstream: one worker's connections to the replicas, and its keep-alive pool per replica.
//
// A Pool stands for one replica as this worker knows it from its installed snapshot (by uid: a
// replacement under the same ring id is another pool). It holds the replica's address, its idle
// keep-alive connections, the exchanges in flight on it, and what the worker tells the control
// plane about it in its next report (requests, blamed failures, passive health). Pools are the
// worker's alone: nothing here is shared with another thread.
//
// A connection is either in use by one client exchange (client != nullptr), idle in its pool
// (reading, so a close by the replica is noticed at once), or closing. Connections hold a
// reference on their pool (Pool::conns), so a pool whose replica left the snapshot (retired) lives
// until its last connection is closed, its last exchange is done, and a report has said so.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <uv.h>

#include "lb/http/http_conn.h"
#include "lb/plane.h"

struct ClientConn;
struct Pool;
struct Pools;

struct UpstreamConn {
  HttpConn conn;
  Pool* pool = nullptr;
  ClientConn* client = nullptr;  // the exchange using it, nullptr while idle
  UpstreamConn* pool_next = nullptr;
  uv_connect_t connect_req;
  void (*on_connected)(UpstreamConn* u, int status) = nullptr;
  bool connected = false;
  bool in_pool = false;
  uint32_t served = 0;  // exchanges completed on this connection
  uint64_t idle_since = 0;
};

// What the worker may do with a pool: the member's state in the installed snapshot, or retired
// once the member left the snapshot (removed, or replaced under its ring id).
enum class PoolState : uint8_t { usable, starting, dead, retired };

struct Pool {
  Pools* pools = nullptr;
  uint64_t uid = 0;
  uint32_t ring_id = 0;
  uint32_t weight = 1;  // the member's ring weight (bounded load)
  std::string name;
  struct sockaddr_storage addr {};
  PoolState state = PoolState::starting;
  int index = -1;  // ring index in the installed snapshot; -1 once retired
  bool was_dead = false;  // dead in the last snapshot that held it (kept once retired)
  // Keep-alive pool.
  UpstreamConn* idle = nullptr;  // idle connections (UpstreamConn::pool_next)
  uint32_t idle_count = 0;
  uint32_t inflight = 0;  // exchanges on it now
  uint32_t conns = 0;     // connections that point here (the pool lives while > 0)
  // For the next report: deltas since the last one (MemberReport says what they mean).
  uint64_t requests = 0;
  uint64_t failures = 0;
  uint64_t retries = 0;
  uint64_t responses[6] = {};
  DurationHist duration;
  bool ok_seen = false;
  uint32_t strikes = 0;
  std::string cause;
  uint32_t reported_inflight = 0;  // inflight as the last report said it
  // Bounded load: the other workers' exchanges on it, as the last ToWorker::load counted them.
  uint32_t others = 0;
};

struct Pools {
  uv_loop_t* loop = nullptr;
  uint32_t idle_max = 64;  // --pool-idle-max: idle connections kept per replica
  bool closing = false;    // the worker stops: connections are closed, never pooled
  uint32_t conns = 0;      // upstream connections not yet freed, over every pool
  // Called when conns drops to 0 while closing (a worker on the control loop waits for it before
  // it says it stopped: its pools are freed then, and a connection's close callback uses them).
  void (*on_empty)(Pools* ps) = nullptr;
  std::unordered_map<uint64_t, Pool*> by_uid;  // every pool, retired ones included
  std::vector<Pool*> by_index;                 // ring index of the installed snapshot -> pool
  uint64_t last_reap = 0;
};

// Makes the pools match snapshot s: a pool per member (created for a new uid, else updated with the
// member's state, address and ring index); pools of uids absent from s are retired. A pool that is
// not usable any more (dead, starting, retired) closes its idle connections at once.
// A pool whose replica a member replaces (SnapMember::replaces_uid) counts as dead
// (pool_marked_dead) even when no snapshot showed it dead before the replacement.
void pools_install(Pools* ps, const Snapshot& s);

// Closes pooled connections idle for more than 30 s; does the work at most once a second (call it
// from a periodic timer with the loop time).
void pools_reap(Pools* ps, uint64_t now);

// The worker stops: every idle connection is closed, and from now on none is pooled.
void pools_close(Pools* ps);

// Appends to out the report line of every pool with something to say: a non-zero delta, strikes,
// exchanges in flight, in-flight that went to 0 since the last report, or retired. Resets the deltas
// and notes the in-flight counts reported. A retired pool that reported 0 in flight and has no
// connection left is freed. Returns true when anything changed since the last report.
bool pools_report(Pools* ps, std::vector<MemberReport>* out);
// True when pools_report would have something new to say.
bool pools_changed(const Pools* ps);

// Frees every pool (after the worker's loop has ended: no connection is left).
void pools_free(Pools* ps);

// Passive health, counted for the next report: a blamed failure (strike, with its cause), and a
// request the replica answered (clears the strikes so far).
void pool_strike(Pool* p, const std::string& cause);
inline void pool_success(Pool* p) {
  p->ok_seen = true;
  p->strikes = 0;
}

// True when exchanges waiting for p's first response byte should go elsewhere now: the snapshot
// says the replica is dead, or said so last before the replica left it, or a replacement names it.
inline bool pool_marked_dead(const Pool* p) {
  return p->state == PoolState::dead || (p->state == PoolState::retired && p->was_dead);
}

// Returns a connection to pool p's replica for the caller's exchange: an idle pooled one (connected,
// served > 0) or a new one whose on_connected(u, status) runs once the TCP connect finishes.
// handlers are the caller's HTTP callbacks. Returns nullptr on immediate failure (*err set to a
// libuv code); on_connected is then never called.
UpstreamConn* upstream_acquire(Pool* p, const HttpConnHandlers* handlers, size_t read_buffer,
                               void (*on_connected)(UpstreamConn*, int), int* err);

// Gives back a connection whose exchange completed cleanly with a kept-alive response: pooled
// when its pool is usable (not retired), the worker is not stopping and the pool has room; else
// closed. A connection that carried a tunnel (raw, after a 101) is always closed.
void upstream_release(UpstreamConn* u);

// Closes a connection (in use or idle); it leaves the pool at once.
void upstream_close(UpstreamConn* u);

// Called by the owner's on_close handler for every upstream connection: drops the pool reference
// and frees the connection.
void upstream_free(UpstreamConn* u);
