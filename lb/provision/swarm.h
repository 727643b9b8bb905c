// prov_swarm: the swarm provisioner (--provisioner swarm). Each replica is one Docker Swarm service
// with one task (Mode.Replicated.Replicas = 1), created through the Engine API of a swarm manager
// (lb/provision/docker_api.h). The pool IS the set of services labelled ringlb.pool=<pool>: an LB
// that restarts adopts them with list(), and every LB of the pool reads the same labels.
//
// Each service gets:
//   name    name_prefix + spec.name (the engine's unique service names keep two LBs from making two
//           replicas of one name; with an overlay network it is also the replica's DNS name)
//   labels  ringlb.pool, ringlb.name (the plain replica name), ringlb.ring-id, ringlb.weight,
//           ringlb.port; the task's containers carry the same labels (ContainerSpec.Labels)
//   env     SERVER_ID=<name>, PORT=<port>, and on the host network ADDRESS=127.0.0.1, then cfg.env
//   task    the image, cfg.cmd as its arguments, the CPU and memory limits, RestartPolicy any with
//           restart_delay_ms between attempts (healing is the engine's job, so heals_itself() is
//           true and the registry never replaces a dead swarm replica: it routes around it and
//           takes it back, same ring id, once it answers heartbeats again), Placement constraints
//           and spread preferences.
// Network "host": the task listens on 127.0.0.1:<port>, a port the LB picks from [port_min,
// port_max]; the task is constrained to the LB's own node (node.id==<it>), since 127.0.0.1 is only
// reachable there. This is the one-node mode of the tests. Any other NAME is an overlay network
// (attachable, created by the stack file or `docker network create -d overlay`): the task joins it
// and listens on 5000; the LB reaches it by the service name, which resolves to the service's
// virtual IP (EndpointSpec vip, the engine's default), stable while the service exists whichever
// task runs behind it (the kernel's IPVS forwards it to the running task).
//
// start() claims the ring id (and on the host network the port) before the replica runs: it
// creates the service without a task (Replicas 0), lists the pool's services, and when one the
// manager created earlier holds the ring id (another LB's start raced this one) removes its own
// and fails with -EBUSY; when one created earlier or already given its task holds the port, it
// removes its own and creates it again on another port (at most 20 times, then -EADDRINUSE); else
// it gives the service its task (Replicas 1). Every LB decides alike from the same list.
// start() answers once the service's task runs (Status.State running) and, on the host network,
// accepts connections; a task the engine rejects (no such image) fails the start at once. A failed
// start removes the service it created. stop() removes the service (the engine stops its task with
// the stop grace). on_exit reports a task container's death (container die event) by service id,
// so the registry routes around it at once; the restarted task comes back through heartbeats.
//
// Service events of the swarm (create/update/remove of any service) trigger a re-list of the
// pool's services; services another LB of the pool created or removed are reported through
// on_appear/on_gone when the registry set them (several LBs on one pool).
//
// Failures carry a negative errno and one sentence quoting the engine, as the docker provisioner's:
// -ENOENT no such image, -EEXIST the service name is taken, -EIO engine unreachable or unexpected,
// -EINVAL a rejected name or parameter, -EADDRINUSE no free port, -ETIMEDOUT the task did not run
// within ready_timeout_ms. All methods and callbacks run on the loop thread.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lb/provision/provisioner.h"

struct ProvSwarmConfig {
  std::string socket;  // "" = $DOCKER_HOST (unix://) or /var/run/docker.sock
  std::string image = "ringlb-replica:latest";  // never pulled by the LB; the nodes must have it
  std::string pool = "ringlb";
  std::string name_prefix;       // service name = name_prefix + replica name
  std::string network = "host";  // "host" (one node) or an overlay network's name
  uint16_t port_min = 20000;     // host network: the replicas' port range
  uint16_t port_max = 20999;
  int stop_grace_s = 5;
  std::vector<std::string> env;  // the replica spec, as the docker provisioner's
  std::vector<std::string> cmd;
  uint64_t nano_cpus = 0;
  uint64_t memory = 0;
  std::vector<std::string> constraints;  // Placement.Constraints ("node.role==worker")
  std::vector<std::string> spread;       // Placement.Preferences: spread over these node labels
  int restart_delay_ms = 100;            // RestartPolicy.Delay between the engine's restarts
  int ready_timeout_ms = 30000;          // start waits this long for the task to run (and listen)
  long call_timeout_ms = 15000;
  bool watch_events = true;
};

// Creates the swarm provisioner on loop. Pings the engine and checks synchronously that it is an
// active swarm manager (call it before the loop runs). Returns nullptr with *err set to one
// sentence when it is not (with the command that makes it one), or when the configuration is
// invalid. The caller owns the result: close() it and delete it once close's callback has run.
Provisioner* prov_swarm_create(uv_loop_t* loop, const ProvSwarmConfig& cfg, std::string* err);
