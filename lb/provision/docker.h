// prov_docker: the docker provisioner. Replicas are containers created through the Docker Engine
// API (lb/provision/docker_api.h), named after the replica and labelled with the pool they belong to, so an
// LB that restarts finds and adopts them with list().
//
// Several LBs on one pool: the engine is the membership. Its labels hold each replica's ring id
// and weight; its event stream (start, die, destroy, rename of the pool's containers) tells every
// LB of replicas the others started (on_appear), of their /rm (on_gone: the rename that frees the
// name of a draining replica) and of deaths (on_exit); a resync every resync_ms lists the pool to
// catch what the stream missed, and the stream reconnects with ?since= the last event it saw.
// Ring id and port claim: after the create and before the start, start() lists the pool's
// containers, leaving out dead ones and abandoned creates (state "created" for over a minute). Its
// rivals are those labelled with its ring id (not draining ones, nor spec.replaces) and, in host
// mode, those labelled with its port (draining ones too: they still listen). It loses to a rival
// that has started (that one won its own claim) and to one created earlier (the engine's Created
// in ns, ties by Id): its container, which never ran, is removed; lost to a rival of its ring id it
// fails with -EBUSY, lost only to one of its port it is created again on the next free port of the
// range (at most 20 times, then -EADDRINUSE). A later rival still "created" may not have seen
// this one (the engine stamps Created when a create begins but lists the container only once it
// is made), so the claim lists again until that rival has started (lost) or is gone (won). Two
// racers never both start: the later-listed one sees the other. Healing uses the same claim
// (the engine is the lock): every LB that saw the death tries, one replacement starts, the others
// get -EBUSY and follow it through on_appear.
//
// Each container gets:
//   name    name_prefix + spec.name (the engine's name; /rep and the logs show spec.name)
//           spec.name is SERVER_ID and the hostname; on a bridge network the alias (and the
//           address the LB connects to) is the engine name
//   labels  ringlb.pool=<pool>, ringlb.ring-id=<ring id>, ringlb.port=<port>
//   env     SERVER_ID=<name>, PORT=<port>, and in host mode ADDRESS=127.0.0.1, then cfg.env
//   cmd     cfg.cmd when not empty (the arguments of the image's entrypoint), else the image's
//   limits  HostConfig.NanoCpus = cfg.nano_cpus, HostConfig.Memory = cfg.memory (0: none)
// Network "host": the replica listens on 127.0.0.1 on its own port, picked from [port_min,
// port_max] (skipping ports of owned containers and ports that cannot be bound) and claimed as
// above, so that the LBs of one pool may share one range. Any other network
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
  std::string pool = "ringlb";  // value of the ringlb.pool label; any number of LBs per pool
  // Engine name of a replica: name_prefix + name (config_parse validated it: empty, or a valid name
  // itself). Every LB of one pool must use the same prefix.
  std::string name_prefix;
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
  bool watch_events = true;  // subscribe to the pool's events: on_exit, on_appear, on_gone
  // Events are triggers; every resync_ms the provisioner also lists the pool (without removing
  // anything) and reports what the events missed (the engine drops events for slow readers).
  int resync_ms = 10000;
};

// Creates the docker provisioner on loop. Pings the engine synchronously (call it before the loop
// runs). Returns nullptr with *err set to one sentence naming the socket when the engine is
// missing, unreachable or older than API 1.41, or when the configuration is invalid. The caller
// owns the result: call close() and delete it once close's callback has run (not before).
Provisioner* prov_docker_create(uv_loop_t* loop, const ProvDockerConfig& cfg, std::string* err);
