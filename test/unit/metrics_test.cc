// metrics (lb/control/metrics.h, lb/plane.h): the duration histogram's buckets (le is inclusive, as
// Prometheus reads it) and the keys-moved fraction of a ring change.
#include <gtest/gtest.h>

#include "lb/control/metrics.h"
#include "ring/ring.h"

namespace {

RingPtr build(RingMode mode, std::vector<uint32_t> ids) {
  RingConfig cfg;
  cfg.mode = mode;
  if (mode == RingMode::slots) cfg.hash = HashFn::assignment;
  std::vector<RingMember> members;
  for (uint32_t id : ids) members.push_back({id, "r" + std::to_string(id)});
  return ring_build(cfg, members, nullptr);
}

TEST(DurationHist, BoundsAreInclusiveAndTheLastBucketIsInf) {
  DurationHist h;
  duration_observe(&h, 0);
  duration_observe(&h, 500);       // le=0.0005
  duration_observe(&h, 501);       // le=0.001
  duration_observe(&h, 10000000);  // le=10
  duration_observe(&h, 10000001);  // +Inf
  EXPECT_EQ(h.counts[0], 2u);
  EXPECT_EQ(h.counts[1], 1u);
  EXPECT_EQ(h.counts[kDurationBuckets - 1], 1u);
  EXPECT_EQ(h.counts[kDurationBuckets], 1u);
  EXPECT_EQ(h.sum_us, 500u + 501u + 10000000u + 10000001u);
  DurationHist t;
  duration_add(&t, h);
  duration_add(&t, h);
  EXPECT_EQ(t.counts[0], 4u);
  EXPECT_EQ(t.sum_us, 2 * h.sum_us);
}

// Adding a member moves exactly the keys the new member owns (consistent hashing): in slots mode
// every slot is compared, so the fraction is exact.
TEST(KeysMoved, SlotsAddMovesExactlyTheNewMembersShare) {
  RingPtr before = build(RingMode::slots, {1, 2, 3});
  RingPtr after = build(RingMode::slots, {1, 2, 3, 4});
  ASSERT_TRUE(before && after);
  uint32_t m = ring_config(after.get()).slots;
  uint32_t owned_by_4 = 0;
  for (uint32_t pos = 0; pos < m; pos++) {
    int i = ring_lookup(after.get(), pos);
    if (i >= 0 && ring_member(after.get(), static_cast<size_t>(i)).id == 4) owned_by_4++;
  }
  EXPECT_GT(owned_by_4, 0u);
  EXPECT_DOUBLE_EQ(metrics_keys_moved(before.get(), after.get()),
                   static_cast<double>(owned_by_4) / m);
  EXPECT_DOUBLE_EQ(metrics_keys_moved(after.get(), before.get()),
                   static_cast<double>(owned_by_4) / m);
}

TEST(KeysMoved, KetamaAndMaglevAddAboutAQuarter) {
  for (RingMode mode : {RingMode::ketama, RingMode::maglev}) {
    RingPtr before = build(mode, {1, 2, 3});
    RingPtr after = build(mode, {1, 2, 3, 4});
    double moved = metrics_keys_moved(before.get(), after.get());
    EXPECT_GT(moved, 0.15) << ring_mode_name(mode);
    EXPECT_LT(moved, 0.35) << ring_mode_name(mode);
    EXPECT_EQ(metrics_keys_moved(after.get(), after.get()), 0.0);
  }
}

TEST(KeysMoved, EmptyRings) {
  RingPtr empty = build(RingMode::ketama, {});
  RingPtr one = build(RingMode::ketama, {1});
  EXPECT_EQ(metrics_keys_moved(empty.get(), empty.get()), 0.0);
  EXPECT_EQ(metrics_keys_moved(empty.get(), one.get()), 1.0);
  EXPECT_EQ(metrics_keys_moved(one.get(), nullptr), 1.0);
}

// A rebuild over the same ring ids (a replacement under its ring id) is no ring change.
TEST(RingPublished, CountsOnlyChangesOfTheMembers) {
  MetricsState ms;
  RingPtr a = build(RingMode::ketama, {1, 2, 3});
  RingPtr a2 = build(RingMode::ketama, {3, 2, 1});
  RingPtr b = build(RingMode::ketama, {1, 2});
  metrics_ring_published(&ms, a.get(), a.get());
  metrics_ring_published(&ms, a.get(), a2.get());
  EXPECT_EQ(ms.ring_changes, 0u);
  metrics_ring_published(&ms, a2.get(), b.get());
  EXPECT_EQ(ms.ring_changes, 1u);
  EXPECT_GT(ms.keys_moved, 0.2);
  EXPECT_LT(ms.keys_moved, 0.5);
}

}  // namespace
