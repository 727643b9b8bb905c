#include "bench/loadgen/histogram.h"

#include <cmath>

namespace {

// 256 sub-buckets: values 0..255 exactly, then 128 linear counters per power of two.
constexpr int kSubBits = 8;
constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;  // 256
constexpr uint64_t kSubHalf = kSubCount / 2;             // 128
constexpr int kSubHalfBits = kSubBits - 1;               // 7

// The power-of-two bucket of value: 0 for values below 256, k for [2^(k+7), 2^(k+8)).
int bucket_of(uint64_t value) {
  int bits = 64 - __builtin_clzll(value | (kSubCount - 1));  // at least kSubBits
  return bits - kSubBits;
}

size_t index_of(uint64_t value) {
  int b = bucket_of(value);
  uint64_t sub = value >> b;  // 0..255 in bucket 0, 128..255 above
  return static_cast<size_t>((static_cast<uint64_t>(b) << kSubHalfBits) + sub);
}

// The lowest value of counter index, and the width of its range.
void range_of(size_t index, uint64_t* lowest, uint64_t* width) {
  if (index < kSubCount) {
    *lowest = index;
    *width = 1;
    return;
  }
  uint64_t b = (index >> kSubHalfBits) - 1;
  uint64_t sub = (index & (kSubHalf - 1)) + kSubHalf;
  *lowest = sub << b;
  *width = uint64_t{1} << b;
}

}  // namespace

void histogram_init(Histogram* h, uint64_t highest) {
  if (highest < kSubCount - 1) highest = kSubCount - 1;
  h->highest = highest;
  h->counts.assign(index_of(highest) + 1, 0);
  histogram_clear(h);
}

void histogram_clear(Histogram* h) {
  for (uint64_t& c : h->counts) c = 0;
  h->total = h->min = h->max = h->clamped = 0;
  h->sum = 0;
}

void histogram_record(Histogram* h, uint64_t value) {
  if (value > h->highest) {
    value = h->highest;
    h->clamped++;
  }
  h->counts[index_of(value)]++;
  if (h->total == 0 || value < h->min) h->min = value;
  if (value > h->max) h->max = value;
  h->total++;
  h->sum += value;
}

uint64_t histogram_percentile(const Histogram* h, double p) {
  if (h->total == 0) return 0;
  if (p > 100) p = 100;
  uint64_t target = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(h->total)));
  if (target < 1) target = 1;
  if (target > h->total) target = h->total;
  uint64_t seen = 0;
  for (size_t i = 0; i < h->counts.size(); i++) {
    seen += h->counts[i];
    if (seen >= target) {
      uint64_t lowest, width;
      range_of(i, &lowest, &width);
      uint64_t v = lowest + width - 1;
      if (v > h->max) v = h->max;
      if (v < h->min) v = h->min;
      return v;
    }
  }
  return h->max;  // not reached: the counts add up to total
}

double histogram_mean(const Histogram* h) {
  return h->total == 0 ? 0.0 : static_cast<double>(h->sum / h->total);
}

void histogram_equivalent_range(uint64_t value, uint64_t* lowest, uint64_t* highest) {
  uint64_t width;
  range_of(index_of(value), lowest, &width);
  *highest = *lowest + width - 1;
}
