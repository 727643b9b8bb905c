// prov_docker: the docker provisioner. Replicas are containers created through the Docker Engine
// API (lb/provision/docker_api.h), named after the replica and labelled with the pool they belong to, so an
// LB that restarts finds and adopts them with list().
//
// Each container gets:
//   name    spec.name (also SERVER_ID, the hostname and, on a bridge network, its network alias)
//   labels  ringlb.pool=<pool>, ringlb.ring-id=<ring id>, ringlb.port=<port>
//   env     SERVER_ID=<name>, PORT=<port>, and in host mode ADDRESS=127.0.0.1, then cfg.env
//   cmd     cfg.cmd when not empty (the arguments of the image's entrypoint), else the image's
//   limits  HostConfig.NanoCpus = cfg.nano_cpus, HostConfig.Memory = cfg.memory (0: none)
// Network "host": the replica listens on 127.0.0.1 on its own port, picked from [port_min,
// port_max] (skipping ports of owned containers and ports that cannot be bound). Any other network
// NAME is a user-defined bridge: the container joins NAME with alias = name and listens on 5000;
// host = name.
//
// Failures carry a negative errno and one sentence that quotes the engine:
//   -ENOENT  the image (or network) does not exist ("No such image: ringlb-replica:latest")
//   -EEXIST  the name is taken by a container this pool does not own (named in the message)
//   -EIO     the engine cannot be reached, or answered an unexpected error
//   -EINVAL  the engine rejected the name or a parameter; -EADDRINUSE no free port in the range
// close() lets every start, stop and list in flight call back first; a start that has not called
// back by then is cancelled (-ECANCELED) and the container it created is removed, so a LB that
// stops while replicas are starting leaves no container behind. Replicas already started are left
// as they are (the registry stops them before it closes the provisioner).
// All methods and callbacks run on the loop thread.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lb/provision/provisioner.h"

struct ProvDockerConfig {
  std::string socket;  // "" = $DOCKER_HOST (unix://) or /var/run/docker.sock
  std::string image = "ringlb-replica:latest";  // never pulled: it must exist on the engine
  std::string pool = "ringlb";                  // value of the ringlb.pool label; one LB per pool
  std::string network = "host";  // "host" or the name of a user-defined bridge network
  uint16_t port_min = 20000;     // host mode: the replicas' port range
  uint16_t port_max = 20999;
  int stop_grace_s = 5;         // SIGTERM, then SIGKILL after this many seconds
  // The replica spec (--replica-env, --replica-cmd, --replica-cpus, --replica-memory), validated by
  // config_parse: K=V entries, the command's words, billionths of a CPU and bytes (0: no limit).
  std::vector<std::string> env;
  std::vector<std::string> cmd;
  uint64_t nano_cpus = 0;
  uint64_t memory = 0;
  int ready_timeout_ms = 5000;  // host mode: start waits this long for the replica to listen
  // Create, start, inspect, list, remove, rename: an engine call without an answer within this
  // fails. A create that timed out is looked up by name and removed if the engine made it anyway.
  long call_timeout_ms = 15000;
  bool watch_events =
      true;  // subscribe to die/destroy events of the pool and report them via on_exit
};

// Creates the docker provisioner on loop. Pings the engine synchronously (call it before the loop
// runs). Returns nullptr with *err set to one sentence naming the socket when the engine is
// missing, unreachable or older than API 1.41, or when the configuration is invalid. The caller
// owns the result: call close() and delete it once close's callback has run (not before).
Provisioner* prov_docker_create(uv_loop_t* loop, const ProvDockerConfig& cfg, std::string* err);
