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
