// control: the control plane, on the main thread's loop. It owns the registry (and through it health
// checks, healing and the provisioner), the admin API and the metrics, and it runs the data-plane
// workers (lb/data/worker.h): it opens their listening sockets, starts them, publishes the routing
// snapshot to them whenever the registry's routing generation moves, answers the admin requests they
// hand over, sums their reports, and stops them.
//
// Nothing here runs on a worker's stack or a worker on ours: every exchange is a message (lb/plane.h).
// Snapshots are published from a zero-delay timer, so a registry change made inside a callback is
// published after that callback returned, once per loop turn however many changes it made.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

#include "lb/access_log.h"
#include "lb/config.h"
#include "lb/control/metrics.h"
#include "lb/data/spread.h"
#include "lb/control/registry.h"
#include "lb/plane.h"

struct Worker;

// An admin request in progress on a worker: where its answer goes.
struct AdminCallRef {
  uint32_t worker = 0;
  uint64_t call = 0;
};

struct WorkerSlot {
  Worker* worker = nullptr;
  bool running = false;   // started, and its `stopped` has not arrived
  uint64_t gen = 0;       // the routing generation it routes by (as of its last report)
  uint64_t synced = 0;    // the last sync it answered
  uint32_t open_conns = 0;
  // uid -> exchanges in flight, as of its last report (a uid it left out has none).
  std::vector<std::pair<uint64_t, uint32_t>> inflight;
};

struct Control {
  uv_loop_t* loop = nullptr;
  const Config* cfg = nullptr;
  Registry* reg = nullptr;
  std::vector<WorkerSlot> workers;
  std::unique_ptr<WorkerGroup> group;  // when there are several workers (lb/data/spread.h)
  std::string listen_bound, admin_bound;  // the addresses bound (a port 0 resolved)
  // --access-log's file (null when off), set before control_start; the workers hold it too.
  AccessLogSinkPtr access_log;
  Mailbox<FromWorker> inbox;
  uv_timer_t publish;  // zero-delay: publishes a dirty snapshot and sends pending syncs
  bool dirty = false;  // the registry's routing generation moved since the last publication
  SnapshotPtr current;
  // control_after_sync: callbacks waiting until every running worker answered sync `seq` (0: the
  // sync is not posted yet; the publish timer posts it after publishing).
  struct PendingSync {
    uint64_t seq;
    std::function<void(const Snapshot&)> fn;
    SnapshotPtr snapshot;  // current when the sync was posted
    int rounds = 0;        // syncs it took: a registry that moved on meanwhile asks for another
  };
  std::vector<PendingSync> syncs;
  uint64_t sync_seq = 0;
  PlaneCounters totals;  // every worker's counters, summed
  MetricsState metrics;  // per ring id totals and ring changes (lb/control/metrics.h)
  std::mt19937_64 rng;
  // --balance-factor: the summed in-flight counts go out at most every kLoadIntervalMs; a change
  // inside that interval arms load_timer for its end, so the last change always goes out.
  uv_timer_t load_timer;
  uint64_t load_sent_at = 0;
  // Stopping.
  bool stopping = false;
  bool loops_clean = true;  // every worker's uv_loop_close returned 0
  int open_handles = 0;
  std::function<void()> on_stopped;
};

// Opens cfg->workers listening sockets on cfg->listen (SO_REUSEPORT) and one on cfg->admin_listen,
// and starts the workers routing by the registry's current snapshot. Returns 0, or a libuv code
// with *err naming what failed.
int control_start(Control* ctl, uv_loop_t* loop, const Config* cfg, Registry* reg, std::string* err);

// Graceful stop: every worker stops accepting, finishes its in-flight exchanges and closes its loop;
// then the control plane's own handles close and on_stopped runs (the registry is the caller's).
void control_stop(Control* ctl, std::function<void()> on_stopped);

// Answers admin call ref with a complete response (posted to its worker; a worker or client that is
// gone drops it). extra: complete header lines, each ending in \r\n, or empty.
void control_answer(Control* ctl, AdminCallRef ref, int status, std::string body,
                    std::string_view content_type = "application/json", std::string_view extra = {});

// A reload changed *ctl->cfg (the caller's, on this loop): every running worker gets a copy of it
// and access_log (null: the access log is off) and uses them from its next request on.
void control_reconfigure(Control* ctl, AccessLogSinkPtr access_log);

// Runs fn once every running worker routes by the routing generation of now (or a later one) and has
// reported its counters since: how /add and /rm answer only once every worker has their result, and
// /metrics counts every request answered before it. When the registry's routing moved on while the
// sync went round, another round follows (up to 8), so fn normally sees a registry that every worker
// routes by; fn gets that snapshot (an answer about routing, /readyz, reads it). Never runs fn
// before returning.
void control_after_sync(Control* ctl, std::function<void(const Snapshot&)> fn);

// Client connections open over every worker (as of their last reports).
uint64_t control_open_conns(const Control* ctl);
