// ring: the consistent-hash ring. Pure: no I/O, no libuv, no allocation on lookup.
//
// A Ring is immutable once built. Membership changes build a new ring off to the side (ring_build) and
// the owner swaps one pointer. Health never rebuilds it: lookups walk clockwise past members the caller
// marks as skipped (down, draining, or already tried for this request).
//
// Members have a stable integer id (1-based) and a name. Every point on the ring derives from the id only,
// so a replacement that takes over a dead member's id keeps every key where it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ring/hash.h"

enum class RingMode : uint8_t {
  slots,   // the assignment's ring: M slots, K virtual servers per member, H and Φ taken mod M
  ketama,  // 32-bit points, K per member, sorted flat array, binary search (nginx, libketama); the
           // default, with K = 8000 (nginx's 160 is --vnodes 160)
  maglev,  // Maglev lookup table of prime size, O(1) lookup, near-perfect balance
};

enum class RingProbe : uint8_t { linear, quadratic };

struct RingConfig {
  RingMode mode = RingMode::ketama;
  HashFn hash = HashFn::xxh3;     // slots mode: H and Φ; ketama/maglev: key and point hashing
  uint32_t slots = 512;           // slots mode: M
  uint32_t vnodes = 0;            // K; 0 = the mode's default (slots: log2(M) = 9, ketama: 8000)
  RingProbe probe = RingProbe::linear;  // slots mode: resolving virtual-server collisions
  uint32_t table_size = 65537;    // maglev: prime table size
};

struct RingMember {
  uint32_t id;       // stable, >= 1; points derive from it
  std::string name;  // for diagnostics only
  // Relative share of keys, 1..kRingMaxWeight (default 1). ketama: K × weight points (the first K
  // are the unweighted ones, so a weight change moves only the keys the extra points take); maglev:
  // table entries in proportion to weight; slots: only 1 (the assignment's ring has no weights).
  uint32_t weight = 1;
};

// The largest weight a member may have. The sum of the weights is bounded too: ketama holds K × the
// sum points, at most 2^20 (with the default K = 8000, a total weight of 131); ring_fits says so.
constexpr uint32_t kRingMaxWeight = 100;

struct Ring;
struct RingDeleter {
  void operator()(Ring* r) const;
};
using RingPtr = std::unique_ptr<Ring, RingDeleter>;

// Builds an immutable ring from config and members (any order; ids must be distinct and >= 1).
// Returns nullptr and sets *err to one clear sentence when the configuration is invalid: M or K = 0,
// K × members > M in slots mode, maglev table size not prime or smaller than the member count, duplicate
// or zero ids. Zero members is valid: every lookup then returns -1. Slot counts, ketama point
// counts (K × members) and maglev table sizes above 2^24 are refused too. err may be nullptr.
// Every mode places members in ascending id order (ketama ties: lower id, then lower j), so the
// owner of every position does not depend on the order the members are given in.
// Weights: 1..kRingMaxWeight, and only 1 in slots mode; ketama's point count is K × the sum of the
// weights.
RingPtr ring_build(const RingConfig& config, const std::vector<RingMember>& members, std::string* err);

// Whether ring_build would accept `members` members whose weights sum to total_weight (each weight
// within 1..kRingMaxWeight, and 1 in slots mode): the size checks of ring_build without building.
// Returns true, or false with one sentence in *err. Lets the admin API refuse an /add the ring
// could not hold before anything starts.
bool ring_fits(const RingConfig& config, uint64_t members, uint64_t total_weight, std::string* err);

// Number of members; member indexes are 0..ring_size()-1 in the order given to ring_build.
size_t ring_size(const Ring* r);
const RingMember& ring_member(const Ring* r, size_t index);
// The configuration the ring was built with, vnodes resolved to the effective K (slots:
// floor(log2 M) when 0; ketama: 8000 when 0).
const RingConfig& ring_config(const Ring* r);

// The position of a key on the ring. Computing it once lets a caller retry clockwise cheaply.
// slots mode: the key is folded to an integer i (hash_fold) and the position is H(i) mod M.
// ketama/maglev: a 64-bit hash of the key bytes with the configured function (hash_bytes),
// reduced to the ring's range: ketama keeps the low 32 bits, maglev takes it mod the table size.
// ring_lookup accepts any value and reduces it the same way (slots: mod M).
uint64_t ring_position(const Ring* r, std::string_view key);

// Returns the index of the member that owns position pos: the member at the nearest point clockwise
// (a point at exactly pos counts), wrapping past the end. Members with skip[index] != 0 are walked past;
// skip may be nullptr. Returns -1 when there are no members or every member is skipped. Never allocates.
// Walking visits each distinct member at most once, so it is bounded by the number of points.
// (Precisely: the walk checks skip once per point it passes, passing each point at most once; in
// maglev mode each table entry. It stops at the first member not skipped.)
int ring_lookup(const Ring* r, uint64_t pos, const uint8_t* skip = nullptr);

// Convenience: ring_lookup(r, ring_position(r, key), skip).
inline int ring_lookup_key(const Ring* r, std::string_view key, const uint8_t* skip = nullptr) {
  return ring_lookup(r, ring_position(r, key), skip);
}

// Introspection for tests, benchmarks and experiment A-4.
// slots mode: the slot of every virtual server of member index (after probing), K entries in
// order of j. Empty in the other modes.
std::vector<uint32_t> ring_member_slots(const Ring* r, size_t index);
// Each member's exact share of the position space, by member index (sums to 1; empty without
// members): slots mode the slots it owns / M, ketama the arcs ending at its points / 2^32, maglev
// its table entries / table size. What a uniform key distribution converges to, without sampling
// noise.
std::vector<double> ring_shares(const Ring* r);
// Bytes the ring's arrays take (what each snapshot shares; member names not counted).
size_t ring_bytes(const Ring* r);
// Mode names for flags and logs: "slots", "ketama", "maglev"; parse returns false on an unknown name.
const char* ring_mode_name(RingMode mode);
bool ring_mode_parse(std::string_view name, RingMode* out);
const char* ring_probe_name(RingProbe probe);
bool ring_probe_parse(std::string_view name, RingProbe* out);
