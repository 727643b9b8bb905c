// ring_arcs (ring/ring_arcs.h): in every mode the arcs cover the key space exactly, each arc's
// owner is ring_lookup's at every position of it, with and without skipped members, and the sizes
// add up to the shares a sample of keys finds.
#include "ring/ring_arcs.h"

#include <cmath>
#include <random>

#include "test/unit/ring_testing.h"

namespace {

struct ModeCase {
  RingMode mode;
  HashFn hash;
};

class RingArcsTest : public ::testing::TestWithParam<ModeCase> {};

RingConfig config_for(const ModeCase& c) {
  RingConfig config;
  config.mode = c.mode;
  config.hash = c.hash;
  return config;
}

// The arcs are in order, contiguous from 0 to ring_space - 1, and adjacent arcs belong to different
// members (merged), except across the wrap.
TEST_P(RingArcsTest, CoverTheSpaceInOrder) {
  RingPtr r = build_ring(config_for(GetParam()), members_with_ids({3, 1, 7, 2, 5}));
  ASSERT_TRUE(r);
  std::vector<RingArc> arcs = ring_arcs(r.get());
  ASSERT_FALSE(arcs.empty());
  EXPECT_EQ(arcs.front().first, 0u);
  EXPECT_EQ(arcs.back().last, ring_space(r.get()) - 1);
  for (size_t i = 0; i < arcs.size(); i++) {
    EXPECT_LE(arcs[i].first, arcs[i].last);
    if (i > 0) {
      EXPECT_EQ(arcs[i].first, arcs[i - 1].last + 1);
      EXPECT_NE(arcs[i].member, arcs[i - 1].member);
    }
  }
}

// Every arc's first, last and a few positions inside it are owned by the arc's member, and under
// random skip masks they all walk to the same member (ring_arcs.h's promise).
TEST_P(RingArcsTest, OwnerIsLookupsUnderAnySkip) {
  RingPtr r = build_ring(config_for(GetParam()), members_with_ids(ids_up_to(6)));
  ASSERT_TRUE(r);
  std::vector<RingArc> arcs = ring_arcs(r.get());
  std::mt19937_64 rng(42);
  std::vector<std::vector<uint8_t>> skips = {{0, 0, 0, 0, 0, 0}};
  for (int s = 0; s < 8; s++) {
    std::vector<uint8_t> skip(6);
    for (uint8_t& b : skip) b = rng() % 2;
    skip[rng() % 6] = 0;  // at least one member left
    skips.push_back(skip);
  }
  // ring_arcs_serving's sweep gives every arc the member ring_lookup's walk finds from it.
  for (const auto& skip : skips) {
    std::vector<int32_t> serving = ring_arcs_serving(r.get(), arcs, skip.data());
    for (size_t i = 0; i < arcs.size(); i++)
      ASSERT_EQ(serving[i], ring_lookup(r.get(), arcs[i].first, skip.data())) << "arc " << i;
  }
  for (const RingArc& a : arcs) {
    std::vector<uint64_t> positions = {a.first, a.last, a.first + (a.last - a.first) / 2,
                                       a.first + rng() % (a.last - a.first + 1)};
    for (uint64_t pos : positions) {
      EXPECT_EQ(ring_lookup(r.get(), pos), static_cast<int>(a.member)) << "position " << pos;
      for (const auto& skip : skips)
        EXPECT_EQ(ring_lookup(r.get(), pos, skip.data()),
                  ring_lookup(r.get(), a.first, skip.data()))
            << "position " << pos;
    }
  }
}

// The share of the space each member's arcs hold is the share of 100,000 keys it gets, within
// sampling error (5 standard deviations), and the point counts are the mode's. (Not with the
// assignment's H, whose positions of 6-digit ids are far from uniform over the slots.)
TEST_P(RingArcsTest, SharesMatchKeys) {
  RingPtr r = build_ring(config_for(GetParam()), members_with_ids(ids_up_to(4)));
  ASSERT_TRUE(r);
  std::vector<double> share(4, 0.0), seen(4, 0.0);
  double space = static_cast<double>(ring_space(r.get()));
  for (const RingArc& a : ring_arcs(r.get())) share[a.member] += (a.last - a.first + 1) / space;
  const size_t n = 100000;
  for (const std::string& key : random_request_ids(n, 7))
    seen[ring_lookup_key(r.get(), key)] += 1.0 / n;
  uint64_t points = 0;
  for (size_t m = 0; m < 4; m++) {
    double sd = std::sqrt(share[m] * (1 - share[m]) / n);
    if (GetParam().hash != HashFn::assignment) {
      EXPECT_NEAR(seen[m], share[m], 5 * sd + 1e-9) << "member " << m;
    }
    points += ring_member_points(r.get(), m);
  }
  if (GetParam().mode == RingMode::maglev)
    EXPECT_EQ(points, ring_space(r.get()));
  else
    EXPECT_EQ(points, 4u * ring_config(r.get()).vnodes);
}

// Every member skipped: nobody serves any arc.
TEST_P(RingArcsTest, AllSkippedServesNothing) {
  RingPtr r = build_ring(config_for(GetParam()), members_with_ids(ids_up_to(3)));
  ASSERT_TRUE(r);
  std::vector<RingArc> arcs = ring_arcs(r.get());
  std::vector<uint8_t> skip(3, 1);
  for (int32_t m : ring_arcs_serving(r.get(), arcs, skip.data())) EXPECT_EQ(m, -1);
}

TEST(RingArcs, EmptyRingHasNoArcs) {
  RingConfig config;
  RingPtr r = build_ring(config, {});
  ASSERT_TRUE(r);
  EXPECT_TRUE(ring_arcs(r.get()).empty());
}

INSTANTIATE_TEST_SUITE_P(Modes, RingArcsTest,
                         ::testing::Values(ModeCase{RingMode::slots, HashFn::assignment},
                                           ModeCase{RingMode::slots, HashFn::xxh3},
                                           ModeCase{RingMode::ketama, HashFn::xxh3},
                                           ModeCase{RingMode::maglev, HashFn::xxh3}),
                         [](const auto& info) {
                           return std::string(ring_mode_name(info.param.mode)) + "_" +
                                  hash_name(info.param.hash);
                         });

}  // namespace
