// health: active heartbeats. Every --hb-interval each replica gets one GET /heartbeat on a fresh
// connection, bounded by --hb-timeout; the result goes to registry_heartbeat_result. A probe holds a
// reference on its replica, so a replica removed meanwhile stays valid until the probe ends.
#pragma once

#include "lb/control/registry.h"

// Starts the periodic heartbeat of r (first probe at once). Idempotent.
void health_start(Replica* r);
// A reload changed --hb-interval: r's next heartbeat comes one new interval from now, and the
// ones after it at the new interval. No-op when r's heartbeat is not running.
void health_rearm(Replica* r);
// Stops the periodic heartbeat of r; a probe in flight finishes and reports nothing.
void health_stop(Replica* r);
