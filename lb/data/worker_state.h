// worker_state: what one data-plane worker owns, for the files of lb/data that run on its thread
// (worker.cc drives it; exchange.cc, routing.cc and upstream.cc work on its parts). Everything in
// it is touched by the worker's thread only, except the inbox (a mailbox: any thread posts) and the
// snapshot, which is immutable and shared.
#pragma once

#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include <uv.h>

#include "lb/data/routing.h"
#include "lb/data/spread.h"
#include "lb/data/upstream.h"
#include "lb/data/worker.h"
#include "lb/http/http_server.h"

struct ClientConn;

struct Worker {
  uint32_t index = 0;
  uint32_t workers = 1;  // how many there are (said in the --max-conns warning)
  const Config* cfg = nullptr;            // cfg_hold's: the configuration in force
  std::shared_ptr<const Config> cfg_hold;  // replaced by a reload (ToWorker::config)
  AccessLog access_log;                    // --access-log: this worker's lines (lb/access_log.h)
  Mailbox<FromWorker>* control = nullptr;
  // The loop the worker runs on: own_loop on a thread of its own, or the control loop (the
  // caller's) when it is the only worker (WorkerSetup::loop): one thread for the whole daemon.
  uv_loop_t* loop = nullptr;
  uv_loop_t own_loop;
  bool on_caller_loop = false;
  bool inbox_closed = false;  // on the caller's loop: its mailbox's close callback ran
  uv_thread_t thread;
  Mailbox<ToWorker> inbox;

  HttpServer server;        // clients (and admin routes unless --admin-listen)
  HttpServer admin_server;  // --admin-listen (worker 0 only)
  bool has_admin_server = false;
  bool admin_separate = false;  // --admin-listen is set: the main listener serves no admin route
  int servers_open = 0;         // servers not yet stopped

  uv_timer_t sweep;   // every 100 ms: exchange deadlines, dead replicas, idle pool reaping
  uv_timer_t report;  // the next report, armed when something changed (worker_report_soon)
  bool report_armed = false;
  uint64_t last_report_at = 0;
  // Deferred completions (the resume of a client's next pipelined request): queued from inside
  // other connections' callbacks, run from the check handle once those callbacks have returned;
  // the idle handle keeps the loop from blocking while the queue is not empty.
  uv_check_t check;
  uv_idle_t idle;
  std::vector<ClientConn*> deferred;
  std::vector<ClientConn*> deferred_run;  // the batch being run (its capacity is kept)

  WorkerGroup* group = nullptr;  // the other workers, for spreading clients (null: alone)
  uint32_t hand_to = 0;          // the worker chosen by spread_should_hand_off

  SnapshotPtr snap;  // what routing uses for the next request
  Pools pools;
  Routing routing;
  std::mt19937_64 rng;

  ClientConn* active = nullptr;  // exchanges with a deadline, for the sweep
  // Closed clients' memory for the next accepts (exchange.cc, client_recycle): bounded; those not
  // needed for a second are freed by the sweep, the rest with the worker (exchange_free_spares).
  std::vector<ClientConn*> spare_clients;
  size_t spare_low = 0;        // the fewest spares held since the last trim
  uint64_t spare_trim_at = 0;  // loop time (ms) of the next trim
  std::unordered_map<uint64_t, ClientConn*> admin_waiting;  // admin calls with the control plane
  uint64_t next_call = 0;

  // For the next report.
  PlaneCounters counters;  // deltas since the last report
  uint32_t open_conns = 0;
  uint32_t reported_conns = 0;
  uint64_t synced = 0;

  bool stopping = false;   // ToWorker::stop arrived: no new connections, exchanges finish
  bool finishing = false;  // every connection is closed: the worker's handles are closing
};

// Arms the report timer, when it is not armed, for the earliest time the next report may go
// (kReportIntervalMs after the last one). Call it whenever something a report carries changed.
void worker_report_soon(Worker* w);
