// slots mode, the assignment's ring: M = 512 slots, K = 9 virtual servers, Φ(i, j) mod M with
// probing, H(Rid) mod M, nearest occupied slot clockwise. Every expected slot below is worked out
// by hand from Φ(i, j) = i² + (j + 1)² + 24 and H(i) = (i + 1)² + 16.
#include <gtest/gtest.h>

#include <set>

#include "test/unit/ring_testing.h"

namespace {

RingConfig assignment_config(RingProbe probe = RingProbe::linear) {
  RingConfig config;
  config.mode = RingMode::slots;
  config.hash = HashFn::assignment;
  config.probe = probe;
  return config;
}

// A tiny ring where collisions are easy to force: M = 16, K = 1, so member i sits at
// Φ(i, 0) mod 16 = (i² + 25) mod 16. Every odd i with i² ≡ 1 (mod 16) (1, 7, 9, 15, 17, ...) has
// home slot 10: 26, 74, 106, 250 and 314 are all 10 mod 16.
RingConfig tiny_config(RingProbe probe) {
  RingConfig config = assignment_config(probe);
  config.slots = 16;
  config.vnodes = 1;
  return config;
}

TEST(SlotsRing, DefaultsAreMOf512AndKOfLog2M) {
  RingPtr r = build_ring(assignment_config(), members_with_ids({1}));
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_config(r.get()).slots, 512u);
  EXPECT_EQ(ring_config(r.get()).vnodes, 9u);

  RingConfig config = assignment_config();
  config.slots = 100;  // floor(log2(100)) = 6
  r = build_ring(config, members_with_ids({1}));
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_config(r.get()).vnodes, 6u);
}

// With ids 1, 2, 3 three virtual servers collide: Φ(2, 0) = Φ(1, 1) = 29, Φ(3, 0) = Φ(1, 2) = 34
// and Φ(3, 1) = Φ(2, 2) = 37. Members are placed in id order, so the later one moves on to s + 1,
// which is free in all three cases: linear and quadratic probing agree.
TEST(SlotsRing, PlacesThreeServersAndProbesTheirCollisions) {
  const uint32_t expected[3][9] = {
      {26, 29, 34, 41, 50, 61, 74, 89, 106},
      {30, 32, 37, 44, 53, 64, 77, 92, 109},  // 29 was taken by member 1
      {35, 38, 42, 49, 58, 69, 82, 97, 114},  // 34 by member 1, 37 by member 2
  };
  for (RingProbe probe : {RingProbe::linear, RingProbe::quadratic}) {
    // Given in reverse order: placement still follows ids.
    RingPtr r = build_ring(assignment_config(probe), members_with_ids({3, 2, 1}));
    ASSERT_TRUE(r);
    for (size_t index = 0; index < 3; index++) {
      uint32_t id = ring_member(r.get(), index).id;
      std::vector<uint32_t> want(expected[id - 1], expected[id - 1] + 9);
      EXPECT_EQ(ring_member_slots(r.get(), index), want) << ring_probe_name(probe) << " id " << id;
    }
  }
}

TEST(SlotsRing, LinearProbingTakesTheNextFreeSlot) {
  RingPtr r = build_ring(tiny_config(RingProbe::linear), members_with_ids({1, 7, 9}));
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_member_slots(r.get(), 0), std::vector<uint32_t>{10});  // home
  EXPECT_EQ(ring_member_slots(r.get(), 1), std::vector<uint32_t>{11});  // 10 taken
  EXPECT_EQ(ring_member_slots(r.get(), 2), std::vector<uint32_t>{12});  // 10, 11 taken
}

TEST(SlotsRing, QuadraticProbingStepsBySquares) {
  RingPtr r = build_ring(tiny_config(RingProbe::quadratic), members_with_ids({1, 7, 9}));
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_member_slots(r.get(), 0), std::vector<uint32_t>{10});  // home
  EXPECT_EQ(ring_member_slots(r.get(), 1), std::vector<uint32_t>{11});  // 10 + 1²
  EXPECT_EQ(ring_member_slots(r.get(), 2), std::vector<uint32_t>{14});  // 10 + 1² taken, 10 + 2²
}

// k² mod 16 takes only the values 0, 1, 4 and 9, so quadratic probing from 10 reaches only slots
// 10, 11, 14 and 3 (= 19 mod 16). The fifth member finds them all taken and falls back to
// linear: 12.
TEST(SlotsRing, QuadraticProbingFallsBackToLinearWhenItsSequenceIsFull) {
  RingPtr r = build_ring(tiny_config(RingProbe::quadratic), members_with_ids({1, 7, 9, 15, 17}));
  ASSERT_TRUE(r);
  const uint32_t expected[5] = {10, 11, 14, 3, 12};
  for (size_t index = 0; index < 5; index++) {
    EXPECT_EQ(ring_member_slots(r.get(), index), std::vector<uint32_t>{expected[index]})
        << "id " << ring_member(r.get(), index).id;
  }
}

// Occupied slots of the default ring with ids 1, 2, 3 (see above), first 26 (member 1) and last 114
// (member 3).
TEST(SlotsRing, ServesTheNearestOccupiedSlotClockwise) {
  RingPtr r = build_ring(assignment_config(), members_with_ids({1, 2, 3}));
  ASSERT_TRUE(r);
  auto id_at = [&](uint64_t pos) { return ring_member(r.get(), ring_lookup(r.get(), pos)).id; };
  EXPECT_EQ(id_at(30), 2u);  // slot 30 holds member 2
  EXPECT_EQ(id_at(26), 1u);  // slot 26 holds member 1
  EXPECT_EQ(id_at(31), 2u);  // next occupied: 32, member 2
  EXPECT_EQ(id_at(33), 1u);  // next occupied: 34, member 1
  EXPECT_EQ(id_at(36), 2u);  // next occupied: 37, member 2
  EXPECT_EQ(id_at(114), 3u);
  EXPECT_EQ(id_at(0), 1u);  // nothing below 26: 26
}

TEST(SlotsRing, WrapsPastTheLastOccupiedSlot) {
  RingPtr r = build_ring(assignment_config(), members_with_ids({1, 2, 3}));
  ASSERT_TRUE(r);
  auto id_at = [&](uint64_t pos) { return ring_member(r.get(), ring_lookup(r.get(), pos)).id; };
  EXPECT_EQ(id_at(115), 1u);  // past 114: wraps to 26
  EXPECT_EQ(id_at(511), 1u);
  EXPECT_EQ(id_at(512), 1u);       // positions are taken mod M: 512 is slot 0
  EXPECT_EQ(id_at(512 + 30), 2u);  // slot 30
}

TEST(SlotsRing, RoutesSixDigitRequestIdsByH) {
  RingPtr r = build_ring(assignment_config(), members_with_ids({1, 2, 3}));
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_position(r.get(), "132574"), 81u);
  EXPECT_EQ(owner_id(r.get(), "132574"), 3u);  // slot 81 → 82, member 3
  EXPECT_EQ(ring_position(r.get(), "100099"), 32u);
  EXPECT_EQ(owner_id(r.get(), "100099"), 2u);  // slot 32 holds member 2
  // 100107 = 195 × 512 + 267; 267² = 71289 = 139 × 512 + 121; H = 121 + 16 = 137, past 114.
  EXPECT_EQ(ring_position(r.get(), "100106"), 137u);
  EXPECT_EQ(owner_id(r.get(), "100106"), 1u);  // wraps to 26, member 1
}

// Probing makes placement depend on who was placed first. Member 3's first virtual server (home 34,
// taken by member 1) sits at 35. Without member 1 it sits at home, 34, and slot 35's requests go on
// to 37, member 2: removing member 1 moved a request that member 3 served. Keys move between
// members that stay only like this; removing the member with the highest id never does it.
TEST(SlotsRing, RemovingAMemberLetsAProbedVirtualServerFallBack) {
  RingPtr before = build_ring(assignment_config(), members_with_ids({1, 2, 3}));
  RingPtr after = build_ring(assignment_config(), members_with_ids({2, 3}));
  ASSERT_TRUE(before && after);
  EXPECT_EQ(ring_member(before.get(), ring_lookup(before.get(), 35)).id, 3u);
  EXPECT_EQ(ring_member_slots(after.get(), 1)[0], 34u);
  EXPECT_EQ(ring_member(after.get(), ring_lookup(after.get(), 35)).id, 2u);
}

// H(i) = (i + 1)² + 16, and there are only 87 squares mod 512, so the 900000 six-digit request ids
// land on 87 of the 512 slots.
TEST(SlotsRing, HReachesOnly87SlotsForSixDigitIds) {
  std::set<uint64_t> slots;
  for (uint64_t id = 100000; id <= 999999; id++)
    slots.insert(hash_key(HashFn::assignment, id) % 512);
  EXPECT_EQ(slots.size(), 87u);
}

// The finding of experiment A-1: with the default ring and N = 3, member 1 serves 84% of all
// six-digit request ids (exact counts over all 900000 of them).
TEST(SlotsRing, DefaultRingIsSkewedForThreeMembers) {
  RingPtr r = build_ring(assignment_config(), members_with_ids({1, 2, 3}));
  ASSERT_TRUE(r);
  uint32_t count[4] = {0, 0, 0, 0};
  for (uint32_t id = 100000; id <= 999999; id++) count[owner_id(r.get(), std::to_string(id))]++;
  EXPECT_EQ(count[0], 0u);
  EXPECT_EQ(count[1], 759374u);
  EXPECT_EQ(count[2], 42187u);
  EXPECT_EQ(count[3], 98439u);
}

// K × N = M is allowed: every slot holds a virtual server and a request is served at its own slot.
TEST(SlotsRing, AFullRingServesEveryRequestAtItsOwnSlot) {
  RingConfig config = assignment_config();
  config.slots = 18;
  config.vnodes = 9;
  RingPtr r = build_ring(config, members_with_ids({1, 2}));
  ASSERT_TRUE(r);
  for (size_t index = 0; index < 2; index++) {
    for (uint32_t slot : ring_member_slots(r.get(), index)) {
      EXPECT_EQ(ring_lookup(r.get(), slot), static_cast<int>(index)) << "slot " << slot;
    }
  }
}

}  // namespace
