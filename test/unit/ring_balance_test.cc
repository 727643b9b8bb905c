// Balance: the busiest member's share of 10^6 random keys over the mean share (max/mean), for
// ketama (K = 160, nginx's) and maglev (table 65537) with xxh3, N = 3, 10 and 100; and the default
// ring's exact shares at every N from 3 to 64.
//
// Measured on 2026-11-22 with three key seeds (the rings themselves are fixed, so only the keys
// vary):
//   ketama N=3   1.102-1.103    N=10  1.168-1.171    N=100 1.177-1.201
//   maglev N=3   1.001          N=10  1.006-1.009    N=100 1.021-1.032
// ketama's spread comes from its points (160 per member); maglev's from sampling alone: with 10^4
// keys per member at N = 100 the busiest of 100 is about 2.5 standard deviations (1% each) above
// the mean.
#include <gtest/gtest.h>

#include <algorithm>

#include "test/unit/ring_testing.h"

namespace {

// Keys are random 64-bit numbers in decimal, so xxh3 sees bytes of varying length.
const std::vector<std::string>& million_keys() {
  static const std::vector<std::string> keys = [] {
    std::mt19937_64 rng(2026);
    std::vector<std::string> k;
    k.reserve(1000000);
    for (int n = 0; n < 1000000; n++) k.push_back(std::to_string(rng()));
    return k;
  }();
  return keys;
}

double max_over_mean(RingMode mode, uint32_t n, uint32_t vnodes = 0) {
  RingConfig config;
  config.mode = mode;
  config.hash = HashFn::xxh3;
  config.vnodes = vnodes;
  RingPtr r = build_ring(config, members_with_ids(ids_up_to(n)));
  if (!r) return 0;
  std::vector<uint32_t> count(n, 0);
  for (const std::string& key : million_keys()) count[ring_lookup_key(r.get(), key)]++;
  double mean = static_cast<double>(million_keys().size()) / n;
  return *std::max_element(count.begin(), count.end()) / mean;
}

TEST(RingBalance, KetamaWith160PointsPerMember) {
  EXPECT_LE(max_over_mean(RingMode::ketama, 3, 160), 1.15);
  EXPECT_LE(max_over_mean(RingMode::ketama, 10, 160), 1.20);
  EXPECT_LE(max_over_mean(RingMode::ketama, 100, 160), 1.25);
}

// The default ring (ketama, K = 8000; issue 16): at every N from 3 to 64 the busiest member's exact
// share (ring_shares: no sampling noise) is at most 1.03 x the mean, and so is the share that
// moves when one member joins or leaves (ketama moves only that member's keys: at most
// 1.03 x the ideal 1/N). Measured worst: 1.028 at N = 52. With 160 points (nginx's K) it is
// 1.10 at N = 3 and 1.19 at N = 64: this test fails with the old default.
TEST(RingBalance, DefaultRingIsWithin3PercentAtEveryNFrom3To64) {
  RingConfig config;  // the defaults
  EXPECT_EQ(config.mode, RingMode::ketama);
  double worst = 0;
  uint32_t worst_n = 0;
  for (uint32_t n = 3; n <= 64; n++) {
    RingPtr r = build_ring(config, members_with_ids(ids_up_to(n)));
    ASSERT_TRUE(r);
    std::vector<double> share = ring_shares(r.get());
    double mom = *std::max_element(share.begin(), share.end()) * n;
    if (mom > worst) {
      worst = mom;
      worst_n = n;
    }
  }
  EXPECT_LE(worst, 1.03) << "at N = " << worst_n;
}

TEST(RingBalance, MaglevIsNearPerfect) {
  EXPECT_LE(max_over_mean(RingMode::maglev, 3), 1.02);
  EXPECT_LE(max_over_mean(RingMode::maglev, 10), 1.02);
  EXPECT_LE(max_over_mean(RingMode::maglev, 100), 1.05);
}

}  // namespace
