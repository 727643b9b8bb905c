// ring_slots: the assignment's ring. M slots; member id i places virtual server j = 0..K-1 at
// Φ(i, j) mod M, probing (linear or quadratic) when the slot is taken; a request at slot s is
// served by the member at the nearest occupied slot clockwise from s, s itself included.
//
// Members are placed in ascending id order, each with all its virtual servers in order of j, so the
// ring does not depend on the order members were given in. A consequence of probing: adding a
// member with a higher id than every other never moves an existing virtual server, but removing a
// member can let a higher-id virtual server that had probed past it fall back to its home slot.
#include "ring/ring_internal.h"

namespace {

// floor(log2(m)) for m >= 1; 0 for m = 0.
uint32_t floor_log2(uint32_t m) {
  uint32_t k = 0;
  while (m > 1) {
    m >>= 1;
    k++;
  }
  return k;
}

// Returns a free slot for a virtual server whose home slot is h. occupied[s] is the member index at
// slot s, or -1 when s is free; at least one slot must be free. Linear probing tries h, h + 1,
// h + 2, ... Quadratic tries h, h + 1², h + 2², ... mod M for M attempts and then falls back to
// linear, because quadratic probing mod M need not reach every slot.
uint32_t probe_free_slot(const std::vector<int32_t>& occupied, uint32_t home, RingProbe probe) {
  uint64_t m = occupied.size();
  if (occupied[home] < 0) return home;
  if (probe == RingProbe::quadratic) {
    for (uint64_t k = 1; k <= m; k++) {
      uint64_t s = (home + k * k) % m;
      if (occupied[s] < 0) return static_cast<uint32_t>(s);
    }
  }
  uint64_t s = home;
  for (;;) {
    if (++s == m) s = 0;
    if (occupied[s] < 0) return static_cast<uint32_t>(s);
  }
}

}  // namespace

bool ring_slots_fits(const RingConfig& config, uint64_t n, uint64_t total_weight,
                     std::string* err) {
  uint64_t m = config.slots;
  if (m == 0) {
    *err = "slots mode needs at least one slot, but slots = 0.";
    return false;
  }
  if (m > kRingMaxEntries) {
    *err = "slots = " + std::to_string(m) + " exceeds the limit of " +
           std::to_string(kRingMaxEntries) + " slots.";
    return false;
  }
  uint64_t k = config.vnodes == 0 ? floor_log2(config.slots) : config.vnodes;
  if (k == 0) {
    *err = "slots mode needs at least one virtual server per member, but K = 0 (log2 of " +
           std::to_string(m) + " slot); set vnodes.";
    return false;
  }
  // The assignment's ring places K virtual servers per member, no more, no fewer: a weight would
  // change what the assignment specifies, so slots mode refuses any weight but 1.
  if (total_weight != n) {
    *err = "slots mode (the assignment's ring) has no weights: every replica has weight 1; use "
           "--ring maglev or ketama for weights.";
    return false;
  }
  if (k * n > m) {
    *err = "slots mode cannot place " + std::to_string(n) + " members x " + std::to_string(k) +
           " virtual servers = " + std::to_string(k * n) + " points in " + std::to_string(m) +
           " slots.";
    return false;
  }
  return true;
}

bool ring_slots_build(Ring* r, std::string* err) {
  RingConfig& config = r->config;
  uint64_t n = r->members.size();
  if (!ring_slots_fits(config, n, ring_total_weight(r->members), err)) return false;
  uint64_t m = config.slots;
  if (config.vnodes == 0) config.vnodes = floor_log2(config.slots);
  uint64_t k = config.vnodes;

  // Place every virtual server: occupied[s] is the member index at slot s, or -1.
  std::vector<int32_t> occupied(m, -1);
  r->slot_member_slots.assign(n * k, 0);
  for (uint32_t index : ring_members_by_id(r)) {
    uint64_t id = r->members[index].id;
    for (uint64_t j = 0; j < k; j++) {
      uint32_t home = static_cast<uint32_t>(hash_vnode(config.hash, id, j) % m);
      uint32_t s = probe_free_slot(occupied, home, config.probe);
      occupied[s] = static_cast<int32_t>(index);
      r->slot_member_slots[index * k + j] = s;
    }
  }

  // The occupied slots in slot order, then each slot's nearest occupied slot clockwise: scanning
  // down from M-1, the owner is the last occupied slot seen, or before any is seen, the first one
  // (wrap).
  for (uint64_t s = 0; s < m; s++) {
    if (occupied[s] >= 0) {
      r->slot_points.push_back(
          RingPoint{static_cast<uint32_t>(s), static_cast<uint32_t>(occupied[s])});
    }
  }
  uint32_t points = static_cast<uint32_t>(r->slot_points.size());
  r->slot_owner.assign(m, RingSlotOwner{-1, 0});
  if (points == 0) return true;
  uint32_t next = points;  // index of the nearest occupied slot at or after s; points = "wrap to 0"
  for (uint64_t s = m; s-- > 0;) {
    if (occupied[s] >= 0) next--;
    uint32_t p = next == points ? 0 : next;
    r->slot_owner[s] = RingSlotOwner{static_cast<int32_t>(r->slot_points[p].member), p};
  }
  return true;
}
