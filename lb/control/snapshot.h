// snapshot: the routing snapshot the control plane builds from the registry and publishes to the
// workers (lb/plane.h says what one holds and how it is shared).
#pragma once

#include "lb/control/registry.h"
#include "lb/plane.h"

// A whole snapshot of what the workers route by now: the registry's ring, and for each ring index
// the replica's uid, ring id, name, address and state (usable only when healthy with a known
// address). gen is reg->routing_gen. Runs on the control loop; the result is immutable.
SnapshotPtr snapshot_build(const Registry* reg);

// The MemberState a worker sees for replica r.
MemberState snapshot_member_state(const Replica* r);
