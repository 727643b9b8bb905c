// worker: one data-plane thread. It owns a libuv loop, its listener (its own SO_REUSEPORT socket
// on the shared address; worker 0 also takes the --admin-listen socket), the client connections it
// accepted and its own upstream keep-alive pools. Nothing it touches on the request path is shared
// with another thread: it routes by the snapshot it installed last and talks to the control plane
// only through mailboxes (lb/plane.h).
#pragma once

#include <cstdint>

#include <memory>

#include "lb/access_log.h"
#include "lb/config.h"
#include "lb/plane.h"

struct Worker;
struct WorkerGroup;

struct WorkerSetup {
  uint32_t index = 0;
  // What the worker reads of the configuration: immutable, the worker holds it until a reload
  // (ToWorker::config) brings the next one.
  std::shared_ptr<const Config> cfg;
  AccessLogSinkPtr access_log;  // null when --access-log is off
  int listen_fd = -1;           // a bound, listening socket; the worker owns it from worker_start on
  int admin_fd = -1;            // --admin-listen's socket (worker 0 only), or -1
  Mailbox<FromWorker>* control = nullptr;  // where reports, admin calls and `stopped` go
  SnapshotPtr snapshot;         // the first snapshot to route by
  // nullptr: the worker runs a loop of its own on a thread of its own. Otherwise it runs on this
  // loop, which the caller runs on its thread (the control loop, when there is one worker: no
  // second thread, so no cross-thread hop and none of glibc's multi-threaded syscall costs).
  // Messages still go through the mailboxes, so no completion re-enters its cause.
  uv_loop_t* loop = nullptr;
  // The workers, when there are several (lb/data/spread.h): clients are spread over them.
  WorkerGroup* group = nullptr;
};

// Starts the worker: its thread, or its handles on setup.loop. Returns 0 and *out, or a libuv code
// (nothing started, the sockets closed).
int worker_start(const WorkerSetup& setup, Worker** out);

// Posts a message to the worker from the control loop. False once the worker closed its mailbox
// (it stopped): the message is dropped.
bool worker_post(Worker* w, ToWorker&& msg);

// Joins the worker's thread (if it has one) and frees it. Call once its `stopped` message arrived
// (the thread is then ending, so this does not block the control loop for long; a worker on the
// caller's loop has closed every handle it had by then).
void worker_join(Worker* w);
