// docker_impl: what docker.cc (start, probe, stop, release_name, close, create) and docker_pool.cc
// (list and adoption, the pool's event stream, resync) share: the provisioner's state, its operations and
// the helpers both use. Internal to the docker provisioner; lb/provision/docker.h is its interface.
#pragma once

#include "lb/provision/docker.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <set>

#include "lb/provision/docker_api.h"
#include "lb/http/container_of.h"
#include "lb/provision/engine_pool.h"
#include "lb/log.h"
#include "ring/ring.h"  // kRingMaxWeight

static const char kLabelPool[] = "ringlb.pool";
static const char kLabelRingId[] = "ringlb.ring-id";
static const char kLabelPort[] = "ringlb.port";
// The replica's ring weight (/add), so that the next LB adopts it with the same share of keys.
// Absent on containers of older LBs: weight 1.
static const char kLabelWeight[] = "ringlb.weight";
static const uint16_t kBridgePort = 5000;
static const int kProbeIntervalMs = 20;    // between connect attempts while a replica comes up
// A removed replica's container is renamed NAME + kDrainingMark + its short id while it drains, so
// its name is free for a new replica at once; list() removes such containers instead of adopting
// them (an LB that stopped mid-drain left them).
static const char kDrainingMark[] = ".draining-";
// A created container that has not started for this long was abandoned (its LB died between
// create and start): it claims nothing, and list() removes it.
static const int64_t kAbandonedCreateS = 60;

struct ProvDocker;

// What a rival of a start's claim contends for: its ring id, its port (host mode), or both.
static const int kRivalRingId = 1;
static const int kRivalPort = 2;

// One start(): create, start, and in host mode wait until the replica accepts connections. Owned by
// the chain of callbacks that carries it; freed in start_finish once every handle it has is closed.
struct StartOp {
  ProvDocker* p = nullptr;
  ReplicaSpec spec;
  ProvStartCb cb;
  ReplicaInstance inst;
  bool conflict_retried = false;
  int name_busy_tries = 0;  // 409 on create, then 404 on the name: another create holds it
  uint64_t t0 = 0, t_created = 0, t_started = 0;
  // readiness probe (host mode): one attempt in probe, the next after timer
  EngineProbe probe;
  uv_timer_t timer;
  bool probing = false;
  uint64_t deadline = 0;
  bool died = false;
  std::string died_cause;
  // ring id claim: the engine's creation time (ns) of this start's container and of its rivals
  std::map<std::string, int64_t> created_ns;
  std::map<std::string, std::string> rival_state;  // the list's State of each rival
  std::map<std::string, int> rival_kind;  // kRivalRingId | kRivalPort: what each rival contends for
  int port_claims = 0;                    // ports this start lost to other LBs' replicas
  int claim_pending = 0;
  int claim_rounds = 0;
  bool claim_failed = false;
  // outcome, kept while handles close
  int status = 0;
  std::string error;
};

struct ListOp {
  ProvDocker* p = nullptr;
  ProvListCb cb;
  std::vector<ReplicaInstance> running;
  int pending = 0;  // removals still in flight
};

struct ProvDocker final : Provisioner {
  // The client, quiet ids (containers we stop or remove ourselves: no on_exit for them), calls in
  // flight (eng.ops: start, stop and list calls whose callback has not run; eng.busy: StartOps
  // whose probe has handles open), the close sequence; eng.events_retry reconnects the events
  // stream after it ended, eng.resync lists the pool every cfg.resync_ms (data = this for both).
  EnginePool eng;
  ProvDockerConfig cfg;
  bool host_mode = true;
  DockerStream* events = nullptr;
  std::set<uint16_t> ports_used;  // ports of containers we started or adopted, and reservations
  uint16_t next_port = 0;
  std::map<std::string, StartOp*> starting;  // by container id, from create until start_finish
  std::set<std::string> reported;  // ids whose exit on_exit already reported
  // Ids of the pool's replicas this LB knows: started here, returned by list(), or reported by
  // on_appear. No on_appear for them; on_gone only for them. Erased on destroy.
  std::set<std::string> known;
  std::set<std::string> gone_reported;  // known ids on_gone reported (one report per id)
  std::set<std::string> released;  // ids release_name renamed already (stop renames the others)
  int64_t last_event_ns = 0;  // timeNano of the last event seen: the reconnect's ?since=
  bool resync_running = false;

  const char* kind() const override { return "docker"; }
  void start(const ReplicaSpec& spec, ProvStartCb cb) override;
  void stop(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void list(ProvListCb cb) override;
  void close(std::function<void()> cb) override;
  bool release_name(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void set_template(const ReplicaTemplate& t) override { engine_template_apply(&cfg, t); }
};

// Helpers (docker.cc).
std::string docker_plain_name(const ProvDocker* p, const std::string& en);
std::string docker_label_filter(const ProvDocker* p);
void docker_remove_container(ProvDocker* p, const std::string& id, DockerCallCb cb);

// The pool's view (docker_pool.cc).
// One item of a container list (GET /containers/json): what list(), the resync and the ring id
// claim read of it. en is the engine's name without the leading '/'; labels is borrowed from c.
struct DockerListed {
  std::string id;
  std::string state;
  std::string en;
  int64_t created_s = 0;  // the engine's creation time, in seconds
  json_t* labels = nullptr;
};
DockerListed docker_listed(json_t* c);
bool docker_draining_name(const std::string& name, const std::string& id);
void docker_events_open(ProvDocker* p);
void docker_gone(ProvDocker* p, const std::string& id, const std::string& en);
void docker_exited(ProvDocker* p, const std::string& id, const std::string& en, const std::string& cause);
void docker_on_resync_timer(uv_timer_t* t);

