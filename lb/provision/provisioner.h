// Provisioner: the small asynchronous interface through which the registry starts and stops replicas.
//
// Implementations: process (local ringlb-replica processes, prov_process.cc), docker (containers through
// the Docker Engine API, prov_docker.cc), static (a fixed list of backends, prov_static.cc).
// Provisioners know nothing of routing or rings. Every callback runs later on the loop thread, exactly
// once, also on failure; no method calls its callback synchronously.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

// What the registry asks for.
struct ReplicaSpec {
  std::string name;  // container name / SERVER_ID: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}
  uint32_t ring_id;  // stable ring id; the docker provisioner records it as a label
  uint32_t weight = 1;  // its weight in the ring (/add); the docker provisioner records it too
  // Healing: the provisioner's id (ReplicaInstance::id) of the dead replica this one replaces under
  // the same ring_id; "" for an /add and the initial replicas. The ring id claim (see start) does
  // not count that one against this start.
  std::string replaces;
};

// A running replica as the provisioner knows it.
struct ReplicaInstance {
  std::string name;
  uint32_t ring_id = 0;
  std::string host;   // address the LB connects to: "127.0.0.1", or a container alias on a bridge
  uint16_t port = 0;
  std::string id;     // provisioner's handle: container id, or the process id as text
  uint32_t weight = 1;  // as recorded when it was started (docker: a label), for adoption
};

// status is 0 on success, else negative (a libuv/errno code or -EIO); error is one sentence for the
// operator and the admin API (for Docker failures it quotes the engine's message).
using ProvStartCb = std::function<void(int status, const std::string& error, const ReplicaInstance& inst)>;
using ProvDoneCb = std::function<void(int status, const std::string& error)>;
using ProvListCb = std::function<void(int status, const std::string& error,
                                      const std::vector<ReplicaInstance>& running)>;
// A replica ended on its own (process exit, container die event). Optional signal for fast detection.
using ProvExitCb = std::function<void(const std::string& id, const std::string& cause)>;

// Several LBs on one pool (docker, swarm: the engine is shared, its labels are the membership).
// Both fire later on the loop thread, from the engine's event stream, never inside a call of this
// interface; a provisioner that cannot see other LBs' replicas (process, static) never fires them.
// How fresh: as fresh as the engine's events (milliseconds); while the event stream is cut (a
// partition from the engine) nothing fires, and on reconnect the provisioner replays what it
// missed (docker: /events?since=) before new events, so every LB converges on the engine's view.
//
// on_appear(inst): a replica of this pool is running that this provisioner neither started
// (start) nor returned from list(): another LB's /add or replacement (healing). inst is complete,
// as list() would give it (name without --name-prefix, ring id, weight, address, id). Fires once
// per instance id, and only for one that won its ring id claim (see start): at most one running
// replica of the pool holds a ring id.
using ProvAppearCb = std::function<void(const ReplicaInstance& inst)>;
// on_gone(id, cause): a replica of this pool that this LB knows (started, listed or appeared) was
// taken out of the pool by someone else: another LB's /rm (it released the name to drain it). The
// instance may keep serving until that LB has drained and stopped it: the registry takes it out of
// its ring, drains it and does not stop it itself. A replica that died fires on_exit, not this.
using ProvGoneCb = std::function<void(const std::string& id, const std::string& cause)>;


// What the docker provisioner makes a replica from (lb/config.h has the options).
struct ReplicaTemplate {
  std::string image;
  std::vector<std::string> env;  // K=V
  std::vector<std::string> cmd;  // the entrypoint's arguments (empty: the image's)
  uint64_t nano_cpus = 0;        // billionths of a CPU (0: no limit)
  uint64_t memory = 0;           // bytes (0: no limit)
};

struct Provisioner {
  virtual ~Provisioner() = default;
  virtual const char* kind() const = 0;
  // false for the static pool: /add and /rm are refused with a clear 4xx.
  virtual bool can_scale() const { return true; }
  // true when the engine restarts a dead replica itself, under the same instance id (swarm: a
  // service's restart policy): the registry then never replaces it, but routes around it while it
  // is dead and takes it back, same ring id, once it answers heartbeats again.
  virtual bool heals_itself() const { return false; }
  // Starts replica spec. The instance is reachable (listening) or failed when cb runs. Readiness by
  // heartbeat is the registry's business.
  // Shared pools (docker, swarm) claim spec.ring_id through the engine before the replica runs, so
  // two LBs never run two replicas of one ring id, also when their starts race:
  //   -EBUSY   another replica of the pool holds or won that ring id (another LB's /add, or its
  //            replacement of the same dead replica: spec.replaces). Nothing of this start is left.
  //            The registry retries an /add on another id; a replacement waits for the winner's
  //            on_appear and routes to it under the same ring id (one LB heals, the others follow).
  //   -EEXIST  the name is taken (another pool's container, or this pool's replica of another LB
  //            that won the name): /add answers 409.
  virtual void start(const ReplicaSpec& spec, ProvStartCb cb) = 0;
  // Stops the replica gracefully (SIGTERM, short grace, then kill) and removes what start created.
  virtual void stop(const ReplicaInstance& inst, ProvDoneCb cb) = 0;
  // Replicas that already exist and belong to this LB (adoption after a restart; static: the list).
  // Ones that exist but are not running are removed by the provisioner before cb.
  virtual void list(ProvListCb cb) = 0;
  // Frees the replica's name while it drains after /rm, so a new replica of that name can start:
  // returns false when instances do not hold names (processes; cb is never called), else true and
  // cb(0) once the name is free (docker renames the container) or cb(<0, why) when it is not.
  virtual bool release_name(const ReplicaInstance& inst, ProvDoneCb cb) {
    (void)inst;
    (void)cb;
    return false;
  }
  // A reload (SIGHUP) changed what new replicas are made from (docker: the image and the spec of
  // --replica-env, --replica-cmd, --replica-cpus, --replica-memory): replicas already running are
  // left as they are, the next start (an /add, a replacement) uses it. Default: the provisioner has
  // no image or spec.
  virtual void set_template(const ReplicaTemplate& t) { (void)t; }
  // Stops watching, releases handles; replicas are left as they are. cb once everything is closed.
  virtual void close(std::function<void()> cb) = 0;

  ProvExitCb on_exit;  // set by the registry before any start
  ProvAppearCb on_appear;  // set by the registry before list(); optional (see above)
  ProvGoneCb on_gone;      // set by the registry before list(); optional (see above)
};
