// The load generator's latency histogram (bench/loadgen/histogram.h): percentiles of a known
// distribution within the promised precision, exact small values, exact min, max and mean, and
// clamping above the trackable range.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "bench/loadgen/histogram.h"

namespace {

constexpr uint64_t kHighest = (uint64_t{1} << 40) - 1;

// Percentiles are upper bounds of the true value and at most 1/128 above it.
void ExpectNear(uint64_t reported, double want) {
  EXPECT_GE(static_cast<double>(reported), want * (1 - 1e-9)) << "want " << want;
  EXPECT_LE(static_cast<double>(reported), want * (1 + 1.0 / 128)) << "want " << want;
}

TEST(Histogram, UniformOneToHundredThousandMicroseconds) {
  Histogram h;
  histogram_init(&h, kHighest);
  for (uint64_t v = 1; v <= 100000; v++) histogram_record(&h, v);
  EXPECT_EQ(h.total, 100000u);
  ExpectNear(histogram_percentile(&h, 50), 50000);
  ExpectNear(histogram_percentile(&h, 90), 90000);
  ExpectNear(histogram_percentile(&h, 99), 99000);
  ExpectNear(histogram_percentile(&h, 99.9), 99900);
  EXPECT_EQ(histogram_percentile(&h, 100), 100000u);
  EXPECT_EQ(h.min, 1u);
  EXPECT_EQ(h.max, 100000u);
  EXPECT_DOUBLE_EQ(histogram_mean(&h), 50000.5);
  // Within 1% as the experiments need it.
  EXPECT_NEAR(static_cast<double>(histogram_percentile(&h, 50)), 50000, 500);
  EXPECT_NEAR(static_cast<double>(histogram_percentile(&h, 99)), 99000, 990);
}

TEST(Histogram, SmallValuesAreExact) {
  Histogram h;
  histogram_init(&h, kHighest);
  for (uint64_t v = 0; v < 256; v++) histogram_record(&h, v);
  for (int p = 1; p <= 100; p++) {
    uint64_t want = (static_cast<uint64_t>(p) * 256 + 99) / 100 - 1;  // ceil(p% of 256)-th value
    EXPECT_EQ(histogram_percentile(&h, p), want) << "p" << p;
  }
}

TEST(Histogram, EveryValueKeepsItsPrecision) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100000; i++) {
    uint64_t v = rng() >> (24 + rng() % 40);  // spread over every magnitude below 2^40
    uint64_t lo, hi;
    histogram_equivalent_range(v, &lo, &hi);
    ASSERT_LE(lo, v);
    ASSERT_GE(hi, v);
    ASSERT_LE(static_cast<double>(hi - lo), static_cast<double>(lo) / 128 + 1e-9) << v;
  }
}

TEST(Histogram, SingleValueReportsItselfAtEveryPercentile) {
  Histogram h;
  histogram_init(&h, kHighest);
  histogram_record(&h, 123456789);
  EXPECT_EQ(histogram_percentile(&h, 0.1), 123456789u);
  EXPECT_EQ(histogram_percentile(&h, 50), 123456789u);
  EXPECT_EQ(histogram_percentile(&h, 100), 123456789u);
}

TEST(Histogram, EmptyReportsZero) {
  Histogram h;
  histogram_init(&h, kHighest);
  EXPECT_EQ(histogram_percentile(&h, 50), 0u);
  EXPECT_EQ(histogram_mean(&h), 0.0);
}

TEST(Histogram, ValuesAboveTheRangeAreClampedAndCounted) {
  Histogram h;
  histogram_init(&h, 1000000);
  histogram_record(&h, 10);
  histogram_record(&h, 5000000);
  EXPECT_EQ(h.clamped, 1u);
  EXPECT_EQ(h.max, 1000000u);
  EXPECT_EQ(histogram_percentile(&h, 100), 1000000u);
  histogram_clear(&h);
  EXPECT_EQ(h.total, 0u);
  EXPECT_EQ(h.clamped, 0u);
}

TEST(Histogram, FixedMemory) {
  Histogram h;
  histogram_init(&h, kHighest);
  size_t counters = h.counts.size();
  EXPECT_LE(counters * sizeof(uint64_t), 40u * 1024);
  for (uint64_t v = 1; v < kHighest; v = v * 3 + 1) histogram_record(&h, v);
  EXPECT_EQ(h.counts.size(), counters);
}

}  // namespace
