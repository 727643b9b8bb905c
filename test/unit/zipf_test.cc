// The load generator's Zipf key sampler (bench/loadgen/zipf.h): the frequencies of the hottest
// ranks match k^-s / H(K, s) within sampling error, the tail does too in aggregate, a seed gives
// one sequence, s = 0 is uniform, and ranks map to distinct fixed 6-digit ids.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "bench/loadgen/zipf.h"

namespace {

// Draws n ranks from z and counts them by rank (index 0 unused).
std::vector<uint64_t> Draw(Zipf* z, uint32_t keys, uint64_t n) {
  std::vector<uint64_t> counts(keys + 1, 0);
  for (uint64_t i = 0; i < n; i++) {
    uint32_t k = zipf_next(z);
    EXPECT_GE(k, 1u);
    EXPECT_LE(k, keys);
    if (k >= 1 && k <= keys) counts[k]++;
  }
  return counts;
}

// Within 5 standard deviations of the binomial count (false alarms about 1 in 3 million per check).
void ExpectFrequency(uint64_t seen, uint64_t n, double p, const std::string& what) {
  double mean = p * static_cast<double>(n);
  double sd = std::sqrt(static_cast<double>(n) * p * (1 - p));
  EXPECT_NEAR(static_cast<double>(seen), mean, 5 * sd + 1) << what;
}

TEST(Zipf, ProbabilitiesFollowThePowerLaw) {
  Zipf z;
  zipf_init(&z, 10000, 1.1, 1);
  double h = 0;
  for (uint32_t k = 1; k <= 10000; k++) h += std::pow(k, -1.1);
  for (uint32_t k : {1u, 2u, 3u, 10u, 100u, 10000u})
    EXPECT_NEAR(zipf_probability(&z, k), std::pow(k, -1.1) / h, 1e-12) << "rank " << k;
  // The hottest key of Zipf(1.1) over 10,000 keys takes about 15% of the requests.
  EXPECT_NEAR(zipf_probability(&z, 1), 0.1514, 0.0005);
}

TEST(Zipf, DrawnFrequenciesMatchForTheHotRanksAndTheTail) {
  constexpr uint32_t kKeys = 10000;
  constexpr uint64_t kN = 2000000;
  Zipf z;
  zipf_init(&z, kKeys, 1.1, 42);
  std::vector<uint64_t> counts = Draw(&z, kKeys, kN);
  for (uint32_t k = 1; k <= 20; k++)
    ExpectFrequency(counts[k], kN, zipf_probability(&z, k), "rank " + std::to_string(k));
  // The ranks above 1000 together, and ranks 101..1000 together.
  uint64_t mid = 0, tail = 0;
  double p_mid = 0, p_tail = 0;
  for (uint32_t k = 101; k <= kKeys; k++) {
    (k <= 1000 ? mid : tail) += counts[k];
    (k <= 1000 ? p_mid : p_tail) += zipf_probability(&z, k);
  }
  ExpectFrequency(mid, kN, p_mid, "ranks 101..1000");
  ExpectFrequency(tail, kN, p_tail, "ranks 1001..10000");
  // Hotter ranks are drawn more often among the first ten.
  for (uint32_t k = 1; k < 10; k++) EXPECT_GT(counts[k], counts[k + 1]) << "rank " << k;
}

TEST(Zipf, ExponentZeroIsUniform) {
  constexpr uint32_t kKeys = 50;
  constexpr uint64_t kN = 500000;
  Zipf z;
  zipf_init(&z, kKeys, 0, 7);
  std::vector<uint64_t> counts = Draw(&z, kKeys, kN);
  for (uint32_t k = 1; k <= kKeys; k++)
    ExpectFrequency(counts[k], kN, 1.0 / kKeys, "rank " + std::to_string(k));
}

TEST(Zipf, OneSeedOneSequenceAnotherSeedAnother) {
  Zipf a, b, c;
  zipf_init(&a, 10000, 1.1, 99);
  zipf_init(&b, 10000, 1.1, 99);
  zipf_init(&c, 10000, 1.1, 100);
  int same = 0;
  for (int i = 0; i < 1000; i++) {
    uint32_t ka = zipf_next(&a), kc = zipf_next(&c);
    EXPECT_EQ(ka, zipf_next(&b));
    same += ka == kc;
  }
  EXPECT_LT(same, 900);  // rank 1 is ~15%: two sequences agree often, never almost always
}

TEST(Zipf, RanksMapToDistinctFixedSixDigitIds) {
  std::set<std::string> seen;
  for (uint32_t k = 1; k <= kZipfMaxKeys; k++) {
    char id[6];
    zipf_key(k, id);
    std::string s(id, 6);
    ASSERT_GE(s[0], '1') << s;
    for (char ch : s) ASSERT_TRUE(ch >= '0' && ch <= '9') << s;
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), kZipfMaxKeys);
  char id[6];
  zipf_key(1, id);
  EXPECT_EQ(std::string(id, 6), "120264");  // fixed: 100000 + (7919 + 12345) mod 900000
}

}  // namespace
