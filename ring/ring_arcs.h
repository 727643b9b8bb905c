// ring_arcs: the ring as a list of arcs, for people and tools that want to see it (the admin's
// /ring and /add?dry_run=1, tests, experiments). Not for the request path: it allocates.
//
// An arc is a run of consecutive positions that ring_lookup (without skip) gives to one member:
// slots mode, slots first..last served by the nearest occupied slot clockwise; ketama, the 32-bit
// positions after one point up to and including the next (ending at a point of the member); maglev,
// a run of table entries of one member. Every position in an arc walks the same way when members
// are skipped too (the walk starts from the same point, or in maglev passes the rest of the run),
// so ring_lookup(r, arc.first, skip) is the owner of the whole arc under any skip.
#pragma once

#include <cstdint>
#include <vector>

#include "ring/ring.h"

struct RingArc {
  uint64_t first;   // first position, inclusive
  uint64_t last;    // last position, inclusive
  uint32_t member;  // member index (ring_member)
};

// The number of positions: slots mode M, ketama 2^32, maglev the table size. ring_position's values
// are below it.
uint64_t ring_space(const Ring* r);

// Every arc of r in ascending order of position, covering 0..ring_space(r)-1 without gap or
// overlap, with adjacent arcs of one member merged (also across the wrap: the arc that ends at the
// top and the one that starts at 0 are kept apart, so first <= last always). Empty when the ring
// has no members. Costs O(points) in ketama mode and O(M) in the other two.
std::vector<RingArc> ring_arcs(const Ring* r);

// For every arc of arcs (ring_arcs(r)), the member that serves it when the members with skip[index]
// != 0 are walked past: ring_lookup(r, arc.first, skip), or -1 when every member is skipped.
// Computed in one sweep over the arcs instead of one walk each (a walk past a dead member's run is
// the next arc's answer), so it costs O(arcs) even when most members are skipped.
std::vector<int32_t> ring_arcs_serving(const Ring* r, const std::vector<RingArc>& arcs,
                                       const uint8_t* skip);

// The number of points of member index: ketama K (its points), slots K (its virtual servers),
// maglev its table entries.
uint64_t ring_member_points(const Ring* r, size_t index);
