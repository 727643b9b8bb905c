// ring_internal: the Ring struct and the per-mode build and lookup functions. Private to ring/;
// callers use ring.h.
//
// ring.cc owns validation, the build dispatch and the shared clockwise walk; ring_slots.cc,
// ring_ketama.cc and ring_maglev.cc each build one mode's arrays. The lookup fast paths are inline
// here so that ring_lookup's dispatch compiles to one switch and a few loads, without a call per
// mode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ring/ring.h"

// The largest slot count, ketama point count (K × members) and maglev table size ring_build
// accepts: 2^24 entries keeps every array well under a gigabyte and every index in 32 bits.
constexpr uint64_t kRingMaxEntries = uint64_t{1} << 24;
// ketama's points (K × the total weight) are bounded lower: the ring is built on the control loop at
// every /add and /rm (and for every /add?dry_run=1), and 2^20 points (about 10 MB, ~110 ms to build
// here) is what a change may cost without stalling it. The default K shrinks to fit --max-replicas
// (config.cc); /add refuses weights that would pass it.
constexpr uint64_t kKetamaMaxPoints = uint64_t{1} << 20;

// A point on the ring and the index of the member it belongs to. slots mode: point is a slot;
// ketama: a 32-bit point. Kept in ascending order of point.
struct RingPoint {
  uint32_t point;
  uint32_t member;
};

// slots mode: what a lookup needs for one slot. member is the owner of the nearest occupied slot at
// or clockwise of this one (-1 when the ring has no points); point is that slot's index in
// Ring::slot_points, where a skipped owner's walk starts.
struct RingSlotOwner {
  int32_t member;
  uint32_t point;
};

struct Ring {
  RingConfig config;  // as given, with vnodes resolved to the effective K
  std::vector<RingMember> members;

  // slots mode.
  std::vector<RingSlotOwner> slot_owner;  // M entries: the precomputed clockwise owner of each slot
  std::vector<RingPoint> slot_points;     // the occupied slots, in slot order
  std::vector<uint32_t> slot_member_slots;  // member index × K + j → slot of virtual server j

  // ketama mode: the sorted points (K × weight per member), and an index over them: ketama_bucket[b] is the first point
  // >= b << ketama_shift, for 2^(32 - ketama_shift) + 1 buckets (the last one is the point count).
  // About one point per bucket, so a lookup reads one bucket and searches one or two points instead
  // of binary searching the whole array (a cache miss and a branch mispredict per level).
  std::vector<RingPoint> ketama_points;
  std::vector<uint32_t> ketama_bucket;
  uint32_t ketama_shift = 32;

  // maglev mode: table_size entries, each a member index (-1 only when there are no members).
  std::vector<int32_t> maglev_table;
};

// Per-mode builders, called by ring_build after the shared validation (ids distinct and >= 1). Each
// checks its own parameters, fills its arrays in r (members and config are already set) and returns
// true, or sets *err to one sentence and returns false. err is never nullptr here.
bool ring_slots_build(Ring* r, std::string* err);
bool ring_ketama_build(Ring* r, std::string* err);
bool ring_maglev_build(Ring* r, std::string* err);

// Per-mode size checks (ring_fits): whether the mode's build accepts `members` members of
// total_weight in all (weights already known to be within 1..kRingMaxWeight). Each build calls its
// own, so the two cannot disagree.
bool ring_slots_fits(const RingConfig& config, uint64_t members, uint64_t total_weight,
                     std::string* err);
bool ring_ketama_fits(const RingConfig& config, uint64_t members, uint64_t total_weight,
                      std::string* err);
bool ring_maglev_fits(const RingConfig& config, uint64_t members, uint64_t total_weight,
                      std::string* err);

// The sum of the members' weights.
uint64_t ring_total_weight(const std::vector<RingMember>& members);

// Member indexes in ascending id order: the order in which every mode places members, so that the
// result does not depend on the order given to ring_build.
std::vector<uint32_t> ring_members_by_id(const Ring* r);

// Walks points[start], points[start + 1], ... (wrapping, n points at most) and returns the first
// member index that skip does not mark, or -1 when every point's member is skipped. Shared by the
// slots and ketama walks.
int ring_walk(const RingPoint* points, size_t n, size_t start, const uint8_t* skip);

// slots mode lookup: one index into the clockwise-owner array; the walk only when the owner is
// skipped.
inline int ring_slots_lookup(const Ring* r, uint64_t pos, const uint8_t* skip) {
  uint64_t m = r->config.slots;
  if (pos >= m) pos %= m;
  const RingSlotOwner& o = r->slot_owner[pos];
  if (o.member < 0 || skip == nullptr || !skip[o.member]) return o.member;
  return ring_walk(r->slot_points.data(), r->slot_points.size(), o.point, skip);
}

// ketama mode lookup: the first point >= the low 32 bits of pos, wrapping to the first point.
int ring_ketama_lookup(const Ring* r, uint64_t pos, const uint8_t* skip);

// maglev mode lookup: one index; when that member is skipped, the table is walked forward.
int ring_maglev_walk(const Ring* r, uint64_t pos, const uint8_t* skip);
inline int ring_maglev_lookup(const Ring* r, uint64_t pos, const uint8_t* skip) {
  uint64_t m = r->config.table_size;
  if (pos >= m) pos %= m;
  int member = r->maglev_table[pos];
  if (member < 0 || skip == nullptr || !skip[member]) return member;
  return ring_maglev_walk(r, pos, skip);
}
