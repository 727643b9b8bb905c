// metrics: the load balancer's counters, served as Prometheus text on /metrics: what every worker
// reported (summed by the control plane), every replica of the registry, the ring's changes, the
// build and the process.
//
// Per-replica series are labelled by ring id, not by name: a replacement takes over its dead
// replica's ring id (healing), so its series go on where the dead one's stopped instead of a new
// series per replacement. The counters of a ring id add up every replica that held it; the current
// name is in ringlb_replica_info{ring_id,name} and the state is the value of
// ringlb_replica_state{ring_id}. Everything here runs on the control loop's thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "lb/plane.h"

struct Control;
struct Ring;

// What the workers reported for one ring id, summed over every replica that held it.
struct RingIdTotals {
  uint64_t requests = 0, failures = 0, retries = 0;
  uint64_t responses[6] = {};
  DurationHist duration;
};

struct MetricsState {
  std::map<uint32_t, RingIdTotals> by_ring_id;  // bounded: ring ids are reused lowest first
  uint64_t ring_changes = 0;                    // ring rebuilds that changed the set of ring ids
  double keys_moved = 0;  // fraction of the key space whose owner the last one changed
};

// Adds one worker's report of replica ring_id (MemberReport deltas) to its totals.
void metrics_add_member(MetricsState* m, uint32_t ring_id, const MemberReport& r);

// The routing moved from ring `before` to ring `after` (either may be empty). When the set of ring
// ids differs it counts a ring change and computes the fraction of keys that move
// (metrics_keys_moved); a rebuild over the same ids (a replacement under its ring id) is no change.
void metrics_ring_published(MetricsState* m, const Ring* before, const Ring* after);

// The fraction of the key space whose owning ring id differs between the two rings, without
// health (every member counts as up). Exact for slots (every slot) and maglev (every table entry);
// ketama over 65536 positions evenly spaced over its 2^32 points. A position owned in one ring and
// by nobody in the other (an empty ring) counts as moved. Rings of different modes: 1.
double metrics_keys_moved(const Ring* before, const Ring* after);

// Prometheus text exposition (format 0.0.4) of everything above.
std::string metrics_render(const Control& ctl);
