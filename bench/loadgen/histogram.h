// histogram: a log-linear histogram of non-negative integer values (latencies in nanoseconds for
// the load generator), laid out as HdrHistogram does it.
//
// Values below 256 have a counter each. Above that, every power-of-two range [2^k, 2^(k+1)) is
// split into 128 equal counters, so a counter is at most 1/128 (0.78%) of its lowest value wide: a
// reported percentile is never below the true one and at most 0.78% above it. Memory is fixed at
// histogram_init (about 35 KiB for values up to 2^40 ns, 18 minutes); recording is a few shifts and
// one increment, with no allocation. Values above the highest trackable one are counted in the last
// counter and in `clamped`.
#pragma once

#include <cstdint>
#include <vector>

struct Histogram {
  std::vector<uint64_t> counts;
  uint64_t highest = 0;       // the highest value with a counter of its own
  uint64_t total = 0;         // values recorded
  uint64_t min = 0, max = 0;  // exact, of the recorded values (after clamping)
  uint64_t clamped = 0;       // values that were above highest
  long double sum = 0;        // exact while the total stays below 2^64
};

// Sizes h for values 0..highest (at least 255) and clears it. Allocates once.
void histogram_init(Histogram* h, uint64_t highest);
// Forgets every recorded value, keeping the layout.
void histogram_clear(Histogram* h);

void histogram_record(Histogram* h, uint64_t value);

// The value at percentile p (0 < p <= 100): the highest value equivalent to the counter where the
// cumulative count reaches ceil(p% of total), capped at the exact maximum. 0 for an empty
// histogram.
uint64_t histogram_percentile(const Histogram* h, double p);
// The exact mean of the recorded values, 0 for an empty histogram.
double histogram_mean(const Histogram* h);

// The range of values [*lowest, *highest] that share value's counter (tests, reports).
void histogram_equivalent_range(uint64_t value, uint64_t* lowest, uint64_t* highest);
