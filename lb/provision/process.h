// prov_process: replicas as local ringlb-replica processes on 127.0.0.1 (the embedded default).
//
// Each replica gets a listening socket the provisioner bound itself on 127.0.0.1 port 0 and hands down
// as fd 3 (LISTEN_FDS=1), so it is reachable the moment it is spawned and no port can be taken in
// between. Replicas run with --die-with-parent, so none outlives the load balancer, even a SIGKILLed
// one; their stdout and stderr come through a pipe the loop reads, each line logged on the load
// balancer's stderr as "replica NAME: ..." (never mixed mid-line with its own lines). An exit the
// provisioner did not ask for is reported through on_exit at once.
#pragma once

#include <string>

#include <uv.h>

#include "lb/provision/provisioner.h"

Provisioner* prov_process_create(uv_loop_t* loop, const std::string& replica_bin);
// The replica binary next to the running executable (argv0's folder), or "" when absent.
std::string prov_process_default_bin(const char* argv0);
