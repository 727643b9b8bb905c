// ring_arcs: the arcs of a ring, read from the arrays each mode built (ring_internal.h), so they
// are exactly what ring_lookup uses and follow any change of how a mode places its points.
#include "ring/ring_arcs.h"

#include "ring/ring_internal.h"

namespace {

// Appends positions first..last of member to arcs, merged with the previous arc when it is the
// same member's and ends just before first.
void add_arc(std::vector<RingArc>* arcs, uint64_t first, uint64_t last, uint32_t member) {
  if (!arcs->empty() && arcs->back().member == member && arcs->back().last + 1 == first) {
    arcs->back().last = last;
    return;
  }
  arcs->push_back(RingArc{first, last, member});
}

}  // namespace

uint64_t ring_space(const Ring* r) {
  switch (r->config.mode) {
    case RingMode::slots:
      return r->config.slots;
    case RingMode::ketama:
      return uint64_t{1} << 32;
    case RingMode::maglev:
      return r->config.table_size;
  }
  return 0;
}

std::vector<RingArc> ring_arcs(const Ring* r) {
  std::vector<RingArc> arcs;
  if (r->members.empty()) return arcs;
  switch (r->config.mode) {
    case RingMode::slots:
      for (uint64_t s = 0; s < r->slot_owner.size(); s++)
        add_arc(&arcs, s, s, static_cast<uint32_t>(r->slot_owner[s].member));
      break;
    case RingMode::ketama: {
      // Positions up to and including point p (after the previous point) go to p's member; those
      // after the last point wrap to the first point's member.
      const std::vector<RingPoint>& points = r->ketama_points;
      uint64_t next = 0;  // the first position not yet in an arc
      for (const RingPoint& p : points) {
        if (p.point < next) continue;  // a second point at the same value: the first one wins
        add_arc(&arcs, next, p.point, p.member);
        next = uint64_t{p.point} + 1;
      }
      if (next < (uint64_t{1} << 32))
        add_arc(&arcs, next, (uint64_t{1} << 32) - 1, points[0].member);
      break;
    }
    case RingMode::maglev:
      for (uint64_t e = 0; e < r->maglev_table.size(); e++)
        add_arc(&arcs, e, e, static_cast<uint32_t>(r->maglev_table[e]));
      break;
  }
  return arcs;
}

std::vector<int32_t> ring_arcs_serving(const Ring* r, const std::vector<RingArc>& arcs,
                                       const uint8_t* skip) {
  (void)r;
  size_t n = arcs.size();
  std::vector<int32_t> out(n, -1);
  // The walk from an arc meets the rest of its own run first, then the next arcs in order (ketama:
  // their points; slots: the next occupied slots; maglev: the next table entries), wrapping. So an
  // arc's server is its own member when not skipped, else the next arc's server: one sweep
  // backwards from an arc whose member is not skipped.
  size_t start = n;
  for (size_t i = 0; i < n; i++) {
    if (!skip[arcs[i].member]) {
      start = i;
      break;
    }
  }
  if (start == n) return out;
  int32_t next = static_cast<int32_t>(arcs[start].member);
  for (size_t k = 0; k < n; k++) {
    size_t i = (start + n - k) % n;  // start, start - 1, ..., start + 1 (wrapping)
    if (!skip[arcs[i].member]) next = static_cast<int32_t>(arcs[i].member);
    out[i] = next;
  }
  return out;
}

uint64_t ring_member_points(const Ring* r, size_t index) {
  if (r->config.mode != RingMode::maglev) return r->config.vnodes;
  uint64_t n = 0;
  for (int32_t m : r->maglev_table) n += m == static_cast<int32_t>(index) ? 1 : 0;
  return n;
}
