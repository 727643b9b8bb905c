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
  // Starts replica spec. The instance is reachable (listening) or failed when cb runs. Readiness by
  // heartbeat is the registry's business.
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
};
