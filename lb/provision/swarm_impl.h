// swarm_impl: the swarm provisioner's internals, shared by its three files (not an interface):
//   swarm_pool.cc   labels, the pool as the engine lists it (ring id claims), service updates,
//   helpers swarm_start.cc  start(): create without a task, claim the ring id, give it its task,
//   wait for it swarm.cc        stop, release_name, list, re-lists and events (other LBs), close,
//   creation
// Everything runs on the loop thread (lb/provision/swarm.h has the contracts).
#pragma once

#include <jansson.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "lb/http/container_of.h"
#include "lb/provision/docker_api.h"
#include "lb/provision/engine_pool.h"
#include "lb/provision/swarm.h"

namespace swarm_impl {

constexpr char kLabelPool[] = "ringlb.pool";
constexpr char kLabelName[] = "ringlb.name";
constexpr char kLabelRingId[] = "ringlb.ring-id";
constexpr char kLabelPort[] = "ringlb.port";
constexpr char kLabelWeight[] = "ringlb.weight";
// Set by release_name when /rm drains the replica: every LB of the pool takes it out (on_gone), and
// an LB that starts adopts no service that carries it (its LB stopped in the middle of a drain).
constexpr char kLabelDraining[] = "ringlb.draining";
// Task containers carry the service's id as this label (set by the engine).
constexpr char kLabelServiceId[] = "com.docker.swarm.service.id";
constexpr uint16_t kOverlayPort = 5000;
constexpr int kTaskPollMs = 100;      // between task lists while a start waits for its task
constexpr int kProbeIntervalMs = 20;  // between connects while a host-network task comes up
constexpr int kResyncDelayMs = 50;    // service events within this are one re-list
// A re-list this long after the last, whatever the events said: the engine drops events for a slow
// reader, and a stream that reconnects may have missed some.
constexpr int kResyncPeriodMs = 10000;

struct ProvSwarm;

// One start(): create the service, wait until its task runs, and on the host network until it
// accepts connections. Owned by its chain of callbacks; freed once its timer is closed.
struct StartOp {
  ProvSwarm* p = nullptr;
  ReplicaSpec spec;
  ProvStartCb cb;
  ReplicaInstance inst;
  std::string service;  // the service's name (prefix + replica name)
  uint64_t t0 = 0, t_created = 0, t_running = 0;
  uint64_t deadline = 0;  // loop time
  uv_timer_t timer;       // between task polls and probes; closing it ends the op
  EngineProbe probe;      // host network: one connection attempt at a time
  bool waiting = false;   // the timer runs (nothing else is in flight)
  bool ending = false;
  std::string task_error;  // the last failure of one of its tasks, for the timeout's message
  int port_claims = 0;     // ports this start lost to other LBs' services (host network)
  int status = 0;
  std::string error;
};

struct ProvSwarm final : Provisioner {
  // The client, quiet ids (services we remove ourselves: their task deaths are ours), calls in
  // flight (eng.ops: start, stop, list and resync calls whose callback has not run), the close
  // sequence; eng.events_retry reopens a stream that ended, eng.resync re-lists the pool's
  // services after service events (data = this for both).
  EnginePool eng;
  ProvSwarmConfig cfg;
  bool host_mode = true;
  std::string node_id;  // the LB's own node (host mode constrains tasks to it)
  DockerStream* container_events = nullptr;
  DockerStream* service_events = nullptr;
  bool resync_running = false;
  bool resync_again = false;
  // list() has answered: re-lists compare with what the registry adopted. Before it, a re-list
  // would report the pool's services as other LBs' (on_appear) instead of letting list adopt them.
  bool listed = false;
  std::set<uint16_t> ports_used;
  std::map<std::string, StartOp*> starting;  // by service id
  // Replica names of starts not yet answered, also before the create's answer gave their service
  // id: a re-list in that moment must not report our own new service as another LB's.
  std::map<std::string, int> starting_names;
  // The pool's services this LB's registry knows (started, adopted, or reported by on_appear),
  // by service id: what a re-list is compared with.
  std::map<std::string, ReplicaInstance> members;

  const char* kind() const override { return "swarm"; }
  bool heals_itself() const override { return true; }
  void start(const ReplicaSpec& spec, ProvStartCb cb) override;
  void stop(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void list(ProvListCb cb) override;
  void close(std::function<void()> cb) override;
  bool release_name(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void set_template(const ReplicaTemplate& t) override { engine_template_apply(&cfg, t); }
};

// ---- swarm_pool.cc ----

bool replica_name_ok(const std::string& n);
uint16_t port_reserve(ProvSwarm* p, uint32_t ring_id);
std::string pool_label(const ProvSwarm* p);
void remove_service(ProvSwarm* p, const std::string& id, DockerCallCb cb);
std::string created_key(json_t* svc);
json_int_t task_count(json_t* svc);
bool stale_claim(json_t* svc);
bool draining(json_t* svc);
bool service_instance(const ProvSwarm* p, json_t* svc, ReplicaInstance* inst);
using SpecMutate = std::function<void(json_t* spec)>;
using SpecDone = std::function<void(const std::string& err)>;
void spec_update(ProvSwarm* p, const std::string& id, SpecMutate mutate, int tries, SpecDone done);
std::string services_path(const ProvSwarm* p);
std::string port_holder(const ProvSwarm* p, json_t* arr, const std::string& mine, uint16_t port);
std::vector<ReplicaInstance> pool_winners(const ProvSwarm* p, json_t* arr, bool with_unscaled,
                                          std::vector<std::string>* bad,
                                          std::vector<std::string>* drained);

// ---- swarm_start.cc ----

// Ends start op with status (0: up); a failed one removes its service first. Only when nothing of
// op is in flight (close() calls it for starts waiting on their timer).
void op_end(StartOp* op, int status, const std::string& error);

}  // namespace swarm_impl
