#include "bench/loadgen/zipf.h"

#include <algorithm>
#include <cmath>

namespace {

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// 7919 is prime and divides neither 2, 3 nor 5, the prime factors of 900000: k -> 7919 k mod
// 900000 is a bijection.
constexpr uint64_t kKeyMultiplier = 7919;
constexpr uint64_t kKeyOffset = 12345;

}  // namespace

void zipf_init(Zipf* z, uint32_t keys, double s, uint64_t seed) {
  z->cdf.assign(keys, 0.0);
  double sum = 0;
  for (uint32_t k = 1; k <= keys; k++) {
    sum += std::pow(static_cast<double>(k), -s);
    z->cdf[k - 1] = sum;
  }
  for (double& c : z->cdf) c /= sum;
  z->cdf[keys - 1] = 1.0;
  z->state = seed;
}

uint32_t zipf_next(Zipf* z) {
  // 53 random bits: u uniform in [0, 1).
  double u = static_cast<double>(splitmix64(&z->state) >> 11) * 0x1.0p-53;
  auto it = std::upper_bound(z->cdf.begin(), z->cdf.end(), u);
  if (it == z->cdf.end()) --it;
  return static_cast<uint32_t>(it - z->cdf.begin()) + 1;
}

double zipf_probability(const Zipf* z, uint32_t k) {
  return k == 1 ? z->cdf[0] : z->cdf[k - 1] - z->cdf[k - 2];
}

void zipf_key(uint32_t k, char out[6]) {
  uint32_t id = 100000 + static_cast<uint32_t>((kKeyMultiplier * k + kKeyOffset) % 900000);
  for (int i = 5; i >= 0; i--, id /= 10) out[i] = static_cast<char>('0' + id % 10);
}
