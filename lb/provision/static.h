// prov_static: a fixed list of HOST:PORT backends (--provisioner static). Nothing is started or
// stopped; health checks still apply, and /add and /rm are refused with a clear 4xx.
#pragma once

#include <string>
#include <vector>

#include <uv.h>

#include "lb/provision/provisioner.h"

Provisioner* prov_static_create(uv_loop_t* loop, const std::vector<std::string>& backends);
