// maglev mode: members take turns, in id order, claiming the next free entry of their permutation
// offset + t × skip (mod M), offset = Φ(i, 0) mod M, skip = Φ(i, 1) mod (M - 1) + 1.
#include <gtest/gtest.h>

#include <algorithm>

#include "test/unit/ring_testing.h"

namespace {

// M = 7 with the assignment's Φ, worked out by hand.
//   id 1: offset 26 mod 7 = 5, skip 29 mod 6 + 1 = 6: permutation 5 4 3 2 1 0 6
//   id 2: offset 29 mod 7 = 1, skip 32 mod 6 + 1 = 3: permutation 1 4 0 3 6 2 5
// Turns: 1 takes 5; 2 takes 1; 1 takes 4; 2 finds 4 taken, takes 0; 1 takes 3; 2 finds 3 taken,
// takes 6; 1 takes 2 and the table is full.
RingConfig small_config() {
  RingConfig config;
  config.mode = RingMode::maglev;
  config.hash = HashFn::assignment;
  config.table_size = 7;
  return config;
}

TEST(MaglevRing, PopulatesTheTableByTurnsInIdOrder) {
  RingPtr r = build_ring(small_config(), members_with_ids({2, 1}));
  ASSERT_TRUE(r);
  const uint32_t expected[7] = {2, 2, 1, 1, 1, 1, 2};
  for (uint64_t pos = 0; pos < 7; pos++) {
    EXPECT_EQ(ring_member(r.get(), ring_lookup(r.get(), pos)).id, expected[pos]) << pos;
  }
}

TEST(MaglevRing, SkipWalksTheTableForward) {
  RingPtr r = build_ring(small_config(), members_with_ids({1, 2}));
  ASSERT_TRUE(r);
  const uint8_t skip_1[2] = {1, 0}, skip_2[2] = {0, 1};
  auto id_at = [&](uint64_t pos, const uint8_t* skip) {
    return ring_member(r.get(), ring_lookup(r.get(), pos, skip)).id;
  };
  EXPECT_EQ(id_at(2, skip_1), 2u);  // 2..5 are member 1's: 6
  EXPECT_EQ(id_at(6, skip_2), 1u);  // 6, 0, 1 are member 2's: wraps to 2
  EXPECT_EQ(id_at(1, skip_2), 1u);  // 2
}

// Every turn claims exactly one entry, so shares differ by at most one entry.
TEST(MaglevRing, EveryMemberOwnsFloorOrCeilOfMOverNEntries) {
  RingConfig config;
  config.mode = RingMode::maglev;
  for (uint32_t n : {3u, 10u, 100u}) {
    RingPtr r = build_ring(config, members_with_ids(ids_up_to(n)));
    ASSERT_TRUE(r);
    std::vector<uint32_t> entries(n, 0);
    for (uint64_t pos = 0; pos < config.table_size; pos++) entries[ring_lookup(r.get(), pos)]++;
    uint32_t floor = config.table_size / n;
    for (uint32_t count : entries) {
      EXPECT_TRUE(count == floor || count == floor + 1) << "n=" << n << " count=" << count;
    }
  }
}

}  // namespace
