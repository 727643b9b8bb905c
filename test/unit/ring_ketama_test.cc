// ketama mode: sorted 32-bit points, the first point at or after the position serves it, wrapping
// to the first point. With the assignment's Φ the points are small numbers that can be worked out
// by hand: Φ(i, j) = i² + (j + 1)² + 24.
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

#include "test/unit/ring_testing.h"

namespace {

// Ids 1 and 2 with K = 3: member 1 at 26, 29, 34; member 2 at 29, 32, 37. The tie at 29 goes to the
// lower id.
RingConfig small_config() {
  RingConfig config;
  config.mode = RingMode::ketama;
  config.hash = HashFn::assignment;
  config.vnodes = 3;
  return config;
}

TEST(KetamaRing, ServesTheFirstPointAtOrAfterThePosition) {
  RingPtr r = build_ring(small_config(), members_with_ids({2, 1}));
  ASSERT_TRUE(r);
  auto id_at = [&](uint64_t pos) { return ring_member(r.get(), ring_lookup(r.get(), pos)).id; };
  EXPECT_EQ(id_at(0), 1u);   // first point: 26
  EXPECT_EQ(id_at(26), 1u);  // a point at exactly the position counts
  EXPECT_EQ(id_at(27), 1u);  // 29: the tie, lower id first
  EXPECT_EQ(id_at(29), 1u);
  EXPECT_EQ(id_at(30), 2u);  // 32
  EXPECT_EQ(id_at(33), 1u);  // 34
  EXPECT_EQ(id_at(37), 2u);
}

TEST(KetamaRing, WrapsPastTheLastPoint) {
  RingPtr r = build_ring(small_config(), members_with_ids({1, 2}));
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_member(r.get(), ring_lookup(r.get(), 38)).id, 1u);  // past 37: 26
  EXPECT_EQ(ring_member(r.get(), ring_lookup(r.get(), 0xffffffffu)).id, 1u);
}

TEST(KetamaRing, SkipWalksPastPointsOfSkippedMembers) {
  RingPtr r = build_ring(small_config(), members_with_ids({1, 2}));
  ASSERT_TRUE(r);
  const uint8_t skip_1[2] = {1, 0}, skip_2[2] = {0, 1};
  auto id_at = [&](uint64_t pos, const uint8_t* skip) {
    return ring_member(r.get(), ring_lookup(r.get(), pos, skip)).id;
  };
  EXPECT_EQ(id_at(29, skip_1), 2u);  // the other point at 29
  EXPECT_EQ(id_at(30, skip_2), 1u);  // 32 skipped: 34
  EXPECT_EQ(id_at(35, skip_2), 1u);  // 37 skipped: wraps to 26
  EXPECT_EQ(id_at(20, skip_1), 2u);  // 26, 29 skipped: 29 of member 2
}

// The same rule against a model built in the test: every (point, id, j) sorted, for 10 members,
// checked at each point, one past it, and at both ends of the 32-bit space. For every hash family:
// the assignment's Φ puts all points below 2^20 (one bucket of the index) with many ties (Φ(1, 6) =
// Φ(5, 4) = 74), fibonacci spreads them evenly, xxh3 and murmur at random.
TEST(KetamaRing, MatchesASortedModelOfItsPoints) {
  for (HashFn fn : {HashFn::xxh3, HashFn::murmur, HashFn::fibonacci, HashFn::assignment}) {
    RingConfig config;
    config.mode = RingMode::ketama;
    config.hash = fn;
    config.vnodes = 160;
    RingPtr r = build_ring(config, members_with_ids({4, 9, 1, 7, 2, 10, 3, 8, 6, 5}));
    ASSERT_TRUE(r);
    std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> model;  // point, id, j
    for (uint32_t id = 1; id <= 10; id++) {
      for (uint32_t j = 0; j < 160; j++) {
        model.emplace_back(static_cast<uint32_t>(hash_vnode(fn, id, j)), id, j);
      }
    }
    std::sort(model.begin(), model.end());
    auto model_owner = [&](uint32_t pos) {
      auto it = std::lower_bound(model.begin(), model.end(), std::make_tuple(pos, 0u, 0u));
      return std::get<1>(it == model.end() ? model.front() : *it);
    };
    auto ring_owner = [&](uint32_t pos) {
      return ring_member(r.get(), ring_lookup(r.get(), pos)).id;
    };
    for (const auto& point : model) {
      uint32_t p = std::get<0>(point);
      ASSERT_EQ(ring_owner(p), model_owner(p)) << hash_name(fn) << " " << p;
      ASSERT_EQ(ring_owner(p + 1), model_owner(p + 1)) << hash_name(fn) << " " << p + 1;
    }
    EXPECT_EQ(ring_owner(0xffffffffu), std::get<1>(model.front())) << hash_name(fn);
    EXPECT_EQ(ring_owner(0), std::get<1>(model.front())) << hash_name(fn);
  }
}

// A point exactly at 0, the lower edge of the first bucket of the index. Member 114196118 has
// i² ≡ -28 (mod 2^32), so with the assignment's Φ its points are Φ(i, 1) = i² + 28 ≡ 0 and
// Φ(i, 0) = i² + 25 ≡ 2^32 - 3. Member 1 sits at 26 and 29.
TEST(KetamaRing, APointAtZeroServesZeroAndTheWrap) {
  const uint32_t edge = 114196118;
  ASSERT_EQ(static_cast<uint32_t>(hash_vnode(HashFn::assignment, edge, 1)), 0u);
  ASSERT_EQ(static_cast<uint32_t>(hash_vnode(HashFn::assignment, edge, 0)), 0xfffffffdu);
  RingConfig config = small_config();
  config.vnodes = 2;
  RingPtr r = build_ring(config, members_with_ids({1, edge}));
  ASSERT_TRUE(r);
  auto id_at = [&](uint64_t pos) { return ring_member(r.get(), ring_lookup(r.get(), pos)).id; };
  EXPECT_EQ(id_at(0), edge);
  EXPECT_EQ(id_at(1), 1u);
  EXPECT_EQ(id_at(0xfffffffdu), edge);
  EXPECT_EQ(id_at(0xfffffffeu), edge);  // wraps to 0
}

TEST(KetamaRing, ASinglePointServesEveryPosition) {
  RingConfig config;
  config.mode = RingMode::ketama;
  config.vnodes = 1;
  RingPtr r = build_ring(config, members_with_ids({5}));
  ASSERT_TRUE(r);
  for (uint64_t pos : {0ull, 1ull, 0x7fffffffull, 0xffffffffull})
    EXPECT_EQ(ring_lookup(r.get(), pos), 0);
}

}  // namespace
