// plane: the contract between the control plane (lb/control, the main thread's loop) and the
// data-plane workers (lb/data, one thread and loop each). Everything they share is here: the
// immutable routing snapshot the control plane publishes, and the messages both ways (carried by
// lb/mailbox.h). Nothing else crosses the line: a worker never reads the registry, the control plane
// never touches a client or upstream connection.
//
// Ordering: a mailbox delivers in posting order, so a worker that answers a sync has installed every
// snapshot posted before it. That is how /add and /rm answer only once every worker routes by the
// new membership (control_after_sync).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lb/http/http_head.h"
#include "lb/mailbox.h"
#include "ring/ring.h"

struct Config;
struct AccessLogSink;

// --- the routing snapshot ---------------------------------------------------------------------

// What a worker may do with a member of the ring.
enum class MemberState : uint8_t {
  usable,    // healthy: takes new requests
  starting,  // not yet (or no longer) healthy, but not known dead: no new requests
  dead,      // marked dead: no new requests, and exchanges still waiting for its first response
             // byte go to the next replica now (a hung replica found by its heartbeats)
};

struct SnapMember {
  uint64_t uid = 0;  // the replica object; a replacement under the same ring id has a new uid
  uint32_t ring_id = 0;
  uint32_t weight = 1;  // its weight in the ring: bounded load scales its bound by it
  MemberState state = MemberState::starting;
  struct sockaddr_storage addr {};  // meaningful only when state is usable (the address is known)
  std::string name;
  // The dead replica this one replaced under the same ring id (0: none). A worker that never saw
  // that one marked dead (the replacement came in the same control loop turn) still learns it
  // here, and fails over the exchanges waiting on it at once instead of at their timeout.
  uint64_t replaces_uid = 0;
  // --slow-start: when it became healthy, in milliseconds of the monotonic clock (uv_hrtime / 1e6,
  // the same clock on every thread); 0 when its keys take it at once (the initial replicas). For
  // --slow-start MS after it, routing sends it a growing fraction of its keys (lb/data/routing.h).
  uint64_t usable_since_ms = 0;
};

// An immutable routing snapshot: built whole by the control plane, then shared read-only by every
// worker (std::shared_ptr: the last holder frees it, on whichever thread lets go last). Health
// changes publish a new snapshot over the same ring; membership changes over a new ring.
struct Snapshot {
  uint64_t gen = 0;                  // increases with every publication
  std::shared_ptr<const Ring> ring;  // never null (an empty ring when there are no members)
  std::vector<SnapMember> members;   // ring index -> member; same size as the ring
  std::vector<uint8_t> skip;         // ring index -> 1 unless usable (ring_lookup walks past it)
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

// --- control plane -> worker ------------------------------------------------------------------

struct AdminAnswer {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::string extra;  // complete header lines, each ending in \r\n (Allow on a 405), or empty
};

// A client socket handed from one worker to another (lb/data/spread.h). It closes itself unless
// taken, so a message dropped on the way (the receiver stopped) does not leak the descriptor.
struct HandedClient {
  int fd = -1;
  // Between requests (moved at its first idle moment, lb/data/spread.h): the idle timeout applies
  // to it at the target, not the header timeout of a new client.
  bool idle = false;
  HandedClient(int f, bool between_requests) : fd(f), idle(between_requests) {}
  HandedClient(const HandedClient&) = delete;
  HandedClient& operator=(const HandedClient&) = delete;
  ~HandedClient() {
    if (fd >= 0) close(fd);
  }
  int take() {
    int f = fd;
    fd = -1;
    return f;
  }
};

struct ToWorker {
  enum class Kind : uint8_t {
    snapshot,      // install snapshot before the next request is routed
    load,          // load: the other workers' in-flight counts by ring index of snapshot `gen`
    admin_answer,  // the answer to admin call `call`
    sync,          // report now, with synced = seq
    stop,          // stop accepting, finish in-flight exchanges, close everything, then `stopped`
    adopt,         // serve `client`, accepted by another worker (from worker to worker)
    config,        // a reload: read `config` (and log to `access_log`) from the next request on
  } kind = Kind::sync;
  SnapshotPtr snapshot;
  std::vector<uint32_t> load;
  uint64_t gen = 0;  // load: the snapshot gen load is indexed by
  uint64_t seq = 0;  // sync
  uint64_t call = 0;  // admin_answer
  AdminAnswer answer;
  std::shared_ptr<HandedClient> client;  // adopt
  std::shared_ptr<const Config> config;             // config: immutable, shared by every worker
  std::shared_ptr<const AccessLogSink> access_log;  // config: null when --access-log is off
};

// --- worker -> control plane ------------------------------------------------------------------

// Request durations as a histogram of bucket deltas (not cumulative: the control plane makes the
// Prometheus buckets cumulative when it renders them). Bounds in microseconds, 0.5 ms .. 10 s as a
// proxy's latencies spread; counts[kDurationBuckets] is the +Inf bucket. Observing is a scan of 14
// integers: cheap enough for every exchange.
constexpr int kDurationBuckets = 14;
constexpr uint64_t kDurationBoundsUs[kDurationBuckets] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
    10000000};
struct DurationHist {
  uint64_t counts[kDurationBuckets + 1] = {};
  uint64_t sum_us = 0;
};
inline void duration_observe(DurationHist* h, uint64_t us) {
  int i = 0;
  while (i < kDurationBuckets && us > kDurationBoundsUs[i]) i++;
  h->counts[i]++;
  h->sum_us += us;
}
inline void duration_add(DurationHist* to, const DurationHist& d) {
  for (int i = 0; i <= kDurationBuckets; i++) to->counts[i] += d.counts[i];
  to->sum_us += d.sum_us;
}

// Counters a worker adds up between two reports (deltas) and the control plane sums.
struct PlaneCounters {
  uint64_t requests = 0;        // client requests that reached routing or admin
  uint64_t responses[6] = {};   // by status class 1xx..5xx (index 1..5)
  uint64_t retries = 0;         // attempts on another replica after a failure
  uint64_t upstream_failures = 0;
  uint64_t upstream_timeouts = 0;
  uint64_t no_replica = 0;      // 503 answers
  uint64_t connections = 0;     // client connections accepted
  DurationHist duration;        // proxied requests answered, head received -> last byte written
  uint64_t tunnels_opened = 0;  // Upgrade tunnels opened (101 forwarded) and ended: open = the
  uint64_t tunnels_closed = 0;  // difference of the sums
  uint64_t handoffs = 0;        // client connections handed to another worker (lb/data/spread.h)
  uint64_t h2_connections = 0;  // client connections that turned HTTP/2 (the preface)
  uint64_t h2_streams = 0;      // HTTP/2 streams the clients opened (each one an exchange)
  uint64_t h2_client_resets = 0;  // RST_STREAM frames the clients sent
  uint64_t h2_calm_goaways = 0;   // GOAWAY ENHANCE_YOUR_CALM sent: a rapid reset flood
};

// One replica as one worker saw it since its last report.
struct MemberReport {
  uint64_t uid = 0;
  uint64_t requests = 0;  // delta: responses completed
  uint64_t failures = 0;  // delta: attempts the replica was blamed for
  uint64_t retries = 0;   // delta: requests sent on to the next replica after failing on this one
  uint64_t responses[6] = {};  // delta: its responses by status class 1xx..5xx (index 1..5)
  DurationHist duration;  // delta: the requests it answered, as PlaneCounters::duration
  uint32_t inflight = 0;  // now: exchanges on it
  // Passive health, in the order it happened: ok_seen says a proxied request succeeded in this
  // interval, strikes how many blamed failures came after the last success (all of them when none
  // succeeded), cause the last one's reason. The control plane clears the replica's strikes when
  // ok_seen, then counts these.
  bool ok_seen = false;
  uint32_t strikes = 0;
  std::string cause;
};

struct FromWorker {
  enum class Kind : uint8_t {
    report,      // counters, passive health, in-flight counts; the snapshot installed
    admin_call,  // an admin request, complete: answer with ToWorker::admin_answer
    stopped,     // the worker's loop is closed (loop_close_rc: uv_loop_close's result); join it
  } kind = Kind::report;
  uint32_t worker = 0;
  // report
  uint64_t gen = 0;     // the snapshot installed
  uint64_t synced = 0;  // the last sync seq received
  PlaneCounters counters;
  uint32_t open_conns = 0;  // client connections open now
  std::vector<MemberReport> members;  // every replica with something to say or in flight
  // admin_call
  uint64_t call = 0;  // the worker's id for it
  HttpHead head;
  std::string body;
  std::string peer_ip;
  // stopped
  int loop_close_rc = 0;
};

// A worker reports at most this often (and at once when asked by a sync, after installing a
// snapshot, and before it stops); only when something changed. It bounds how stale the control
// plane's counts are: passive failures reach the registry, and in-flight counts (bounded load,
// draining) the other workers, within about this long.
constexpr uint64_t kReportIntervalMs = 20;
