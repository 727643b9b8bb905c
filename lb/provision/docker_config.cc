// Creates the Docker provisioner from the daemon's configuration (--provisioner docker).
#include <string>

#include <uv.h>

#include "lb/config.h"
#include "lb/provision/docker.h"

Provisioner* make_docker_provisioner(uv_loop_t* loop, const Config& cfg, std::string* err) {
  ProvDockerConfig dc;
  dc.socket = cfg.docker_socket;
  dc.image = cfg.replica_image;
  dc.pool = cfg.pool;
  dc.name_prefix = cfg.name_prefix;
  dc.network = cfg.docker_network;
  dc.port_min = cfg.port_min;
  dc.port_max = cfg.port_max;
  dc.env = cfg.replica_env;
  dc.cmd = cfg.replica_cmd;
  dc.nano_cpus = cfg.replica_nano_cpus;
  dc.memory = cfg.replica_memory;
  return prov_docker_create(loop, dc, err);
}

#include "lb/provision/swarm.h"

// Creates the swarm provisioner (--provisioner swarm): the docker provisioner's options, plus the
// placement of the replica services.
Provisioner* make_swarm_provisioner(uv_loop_t* loop, const Config& cfg, std::string* err) {
  ProvSwarmConfig sc;
  sc.socket = cfg.docker_socket;
  sc.image = cfg.replica_image;
  sc.pool = cfg.pool;
  sc.name_prefix = cfg.name_prefix;
  sc.network = cfg.docker_network;
  sc.port_min = cfg.port_min;
  sc.port_max = cfg.port_max;
  sc.env = cfg.replica_env;
  sc.cmd = cfg.replica_cmd;
  sc.nano_cpus = cfg.replica_nano_cpus;
  sc.memory = cfg.replica_memory;
  sc.constraints = cfg.swarm_constraints;
  sc.spread = cfg.swarm_spread;
  // The registry gives up on a replica without a heartbeat after --start-timeout; the provisioner
  // waits for its task no longer than that.
  sc.ready_timeout_ms = static_cast<int>(cfg.start_timeout_ms);
  return prov_swarm_create(loop, sc, err);
}
