// registry: the replicas this load balancer owns, their states, the ring over them, and the desired
// count N that /add and /rm change and healing keeps.
//
// States: starting → healthy → dead (→ replaced when healing is on), and draining after /rm.
// A dead replica is replaced at once. When the replicas of one ring id keep dying before they have
// been healthy for 5 s (a crash loop, a replica that cannot start), the second and later
// replacements in a row wait an exponential backoff, 250 ms doubling up to --heal-backoff-max, so a
// broken replica never spins the CPU or floods the provisioner.
// Only healthy replicas receive new requests. The ring changes only with membership (/add, /rm); health
// changes publish a new routing snapshot over the same ring, whose skip table lookups walk past. A replacement takes over the dead replica's ring
// id, so its keys come back to it and no other key moves.
//
// Everything here runs on the control loop's thread. The data-plane workers never read it: they route
// by the snapshot the control plane builds from it (lb/control/control.h) whenever routing_gen moves,
// and their reports come back as inflight counts and passive health (registry_passive_report).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

#include <uv.h>

#include "lb/config.h"
#include "lb/provision/provisioner.h"
#include "ring/ring.h"

struct Registry;

enum class ReplicaState : uint8_t { starting, healthy, dead, draining };
const char* replica_state_name(ReplicaState s);

struct Replica {
  Registry* reg = nullptr;
  uint64_t uid = 0;  // unique for the registry's lifetime: a replacement under the same ring id
                     // gets a new one, so workers never mix the two replicas' pools
  uint32_t ring_id = 0;
  uint64_t replaces_uid = 0;  // the dead replica it replaced (healing), for the snapshot
  uint32_t weight = 1;  // ring weight (/add "weight"), 1..kRingMaxWeight; a replacement keeps it
  std::string name;
  ReplicaInstance inst;
  ReplicaState state = ReplicaState::starting;
  struct sockaddr_storage addr {};
  bool addr_ok = false;     // the provisioner reported where it listens
  bool counts = false;      // counts toward N (false while an /add is not committed, and once removed)
  bool removed = false;     // out of the registry; freed when refs reaches 0
  bool stop_requested = false;
  uint64_t state_since = 0;  // loop time of the last transition
  uint64_t created_at = 0;
  // --slow-start: when it last became healthy, in ms of uv_hrtime (SnapMember::usable_since_ms),
  // or 0 when its keys are its at once: the initial replicas (started or adopted with the load
  // balancer, whose keys nobody served before) the first time. ramp says whether the next
  // transition to healthy ramps; it is false only for an initial replica until then.
  uint64_t usable_since_ms = 0;
  bool ramp = true;
  // Exchanges in flight on it over every worker, as of each worker's last report (see
  // kReportIntervalMs in lb/plane.h for how fresh that is).
  uint32_t inflight = 0;
  // Draining: the routing generation that took it out of the ring. Its drain ends once every worker
  // routes by that generation or a later one and none has an exchange on it.
  uint64_t drain_gen = 0;
  // Health.
  uv_timer_t hb_timer;
  bool hb_timer_open = false;
  bool hb_probe_running = false;
  uint32_t hb_ok = 0, hb_fail = 0, strikes = 0;
  std::string last_cause;
  int start_status = 0;  // the provisioner's code when starting failed (-EEXIST: name taken)
  bool start_pending = false;  // the provisioner's start has not called back yet
  bool wait_name = false;      // not started yet: a removed replica still holds the name
  bool name_held = false;      // removed, but the provisioner's instance still holds the name
  std::function<void()> on_gone;  // once the instance is stopped (or never ran): /add rollback
  // Several LBs on one pool (see registry_init): foreign = its instance was started by another LB
  // (Provisioner::on_appear); this LB never stops it on close. await_claim = a replacement whose
  // ring id claim another LB won: it waits (starting, bounded by --start-timeout) for that LB's
  // replacement to appear and then routes to it. replaces_inst: the dead instance it replaces.
  bool foreign = false;
  bool await_claim = false;
  std::string replaces_inst;
  uint32_t claim_tries = 0;  // ring ids lost to other LBs in a row (/add): bounded
  // Metrics.
  uint64_t requests = 0, failures = 0;
  int refs = 1;  // the registry's reference + one per health probe and pending callback
};

// An /add in progress: the names to start and the answer to give.
struct AddRequest {
  std::vector<std::string> names;  // complete: generated names already filled in
  uint32_t weight = 1;             // every new replica's ring weight
  std::function<void(int http_status, const std::string& error)> done;
};

struct PendingAdd {
  std::unique_ptr<AddRequest> req;
  std::vector<Replica*> replicas;
};

struct Registry {
  uv_loop_t* loop = nullptr;
  const Config* cfg = nullptr;
  Provisioner* prov = nullptr;
  std::vector<Replica*> replicas;  // in the order /rep lists them
  std::shared_ptr<const Ring> ring;    // shared with the snapshots built over it
  std::vector<Replica*> ring_members;  // ring index → replica
  std::unordered_map<uint64_t, Replica*> by_uid;  // replicas in the registry, for worker reports
  uint64_t next_uid = 0;
  // Routing: routing_gen moves whenever what a worker routes by changes (membership, a state, an
  // address), and on_routing_changed runs then (the control plane publishes a snapshot at its next
  // safe point). routing_gen_everywhere is the oldest generation any running worker routes by, kept
  // by the control plane from the workers' reports.
  uint64_t routing_gen = 1;
  uint64_t routing_gen_everywhere = 0;
  std::function<void()> on_routing_changed;
  std::map<std::string, int> held_names;  // names removed replicas' instances still hold
  uv_timer_t tick;  // healing, start timeouts, drains, idle pool reaping
  bool closing = false;
  std::function<void()> on_closed;
  std::vector<PendingAdd> adds;  // /add requests waiting for their replicas' first heartbeat
  std::vector<uint32_t> heal_failures;  // by ring id: early deaths in a row (see schedule_heal)
  std::vector<uint64_t> heal_after;     // by ring id: loop time of the next replacement
  uint64_t heals = 0;
  // Ring ids other LBs won while this one tried them (-EBUSY), by loop time until which an /add
  // here does not try them again (their replica appears meanwhile and then holds them).
  std::map<uint32_t, uint64_t> claimed_elsewhere;
  // Instances of other LBs that appeared while this LB's own start of that ring id was still in
  // flight (its claim will lose): taken by that start's -EBUSY.
  std::map<uint32_t, ReplicaInstance> appeared;
};

// Creates the registry and starts the initial replicas (adopting existing ones first). Returns 0 or a
// negative code with *err set.
//
// Several LBs on one pool (docker, swarm): the engine is the membership, so every LB's ring holds
// the same ring ids and routes every key alike. The provisioner's on_appear adds a replica another
// LB started as an /add would (heartbeat first: it routes once healthy; a dead replica of that ring
// id is replaced by it, like a heal); on_gone takes one another LB removed by /rm out of the ring at
// once and drains it (that LB stops it); on_exit marks a death, which every LB heals: the
// provisioner's ring id claim lets one replacement run (the engine is the lock), the others get
// -EBUSY and route to it once it appears. An /add whose ring id another LB won at the same time
// takes the next free one. How fresh: as fresh as the engine's events (ms; a resync every 10 s
// covers dropped ones); during a partition from the engine an LB routes by what it last knew, its
// heartbeats still mark replicas dead or healthy, and /add fails (the engine cannot be reached).
int registry_init(Registry* reg, uv_loop_t* loop, const Config* cfg, Provisioner* prov, std::string* err);

// Replicas that count toward N, in /rep order.
std::vector<const Replica*> registry_counted(const Registry* reg);
const Replica* registry_find(const Registry* reg, const std::string& name);
// The members the ring holds or will hold once pending work settles: every replica that is not
// draining (counted ones, dead ones being replaced, and those of /add requests still in progress).
// Draining replicas hold no ring points. /add admits n more only while this plus n stays within
// --max-replicas, which config_parse proved the ring can place: rebuilding it cannot fail.
size_t registry_members(const Registry* reg);
// The sum of the weights of those members (what ring_fits checks an /add against).
uint64_t registry_total_weight(const Registry* reg);
// The replica that holds name for /add: one that is not draining. A removed (draining) replica
// keeps its work but not its name.
const Replica* registry_find_live(const Registry* reg, const std::string& name);
// Healthy members of the ring (what /readyz reports).
size_t registry_healthy(const Registry* reg);

// The replica with uid, or nullptr once it left the registry.
Replica* registry_by_uid(Registry* reg, uint64_t uid);

// /add: starts names.size() replicas, each on the lowest ring id no other member holds, so ids 1..N
// come back after removals (the assignment's ring then places them as it would from the start).
// done(200, "") once all passed a heartbeat, or done(5xx, cause) once every one it started is
// stopped again (the rollback has finished when the client hears of the failure). A name that a
// removed replica's instance still holds (a draining container) is started once it is released.
// Validation is the caller's (admin.cc): names unused by live replicas, registry_members() + n
// within --max-replicas, the weight one ring_fits accepts. Once registry_close has run: done(503) at once, nothing started.
void registry_add(Registry* reg, std::unique_ptr<AddRequest> req);
// /rm: takes the named replicas out of routing at once, drains them and stops them. Their names are
// free at once: the provisioner renames what holds them (docker) before the drain ends. Does
// nothing once registry_close has run (it stops every replica itself).
void registry_remove(Registry* reg, const std::vector<std::string>& names);

// Health inputs. A heartbeat result; the passive health one worker saw since its last report: with
// ok_seen a proxied request succeeded (the strikes start over), then `strikes` blamed failures in a
// row (connect refused, reset, timeout), the last for `cause`. --strikes in a row mark it dead.
void registry_heartbeat_result(Replica* r, bool ok, const std::string& cause);
void registry_passive_report(Replica* r, bool ok_seen, uint32_t strikes, const std::string& cause);

// Reference counting for the objects that point at a replica (health probes, pending callbacks).
inline void replica_ref(Replica* r) { r->refs++; }
void replica_unref(Replica* r);

// A fresh random replica name: "replica-" and 6 characters of [a-z0-9].
std::string registry_random_name(const Registry* reg);
// [A-Za-z0-9][A-Za-z0-9_.-]{0,62}
bool registry_valid_name(const std::string& name);

// Stops health checks and the tick, stops every replica through the provisioner (with keep_counted,
// the replicas that count toward N are left running for the next LB to adopt; draining, dead and
// not yet committed ones are still stopped), and calls on_closed. Calling it again does nothing.
void registry_close(Registry* reg, bool keep_counted, std::function<void()> on_closed);
