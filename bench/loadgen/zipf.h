// zipf: a seeded Zipf(s) sampler over a fixed key space, for the hot-key runs (issue 16).
//
// Rank k in 1..K is drawn with probability k^-s / H(K, s). Ranks map to fixed 6-digit request ids
// (zipf_key): the same K gives the same ids whatever the seed, so every load balancer under test
// meets the same keys, and the same seed gives the same sequence of draws. The table (one double
// per rank, the cumulative distribution) is built once; a draw is one splitmix64 step and a binary
// search, with no allocation.
#pragma once

#include <cstdint>
#include <vector>

constexpr uint32_t kZipfMaxKeys = 900000;  // as many distinct 6-digit ids as there are

struct Zipf {
  std::vector<double> cdf;  // cdf[k-1] = P(rank <= k); the last entry is 1
  uint64_t state = 0;       // splitmix64
};

// Sizes z for `keys` ranks (1..kZipfMaxKeys) of exponent s (s >= 0; 0 is uniform) and seeds it.
void zipf_init(Zipf* z, uint32_t keys, double s, uint64_t seed);

// The next rank, 1..keys.
uint32_t zipf_next(Zipf* z);

// The probability of rank k (1..keys) under z's distribution.
double zipf_probability(const Zipf* z, uint32_t k);

// The fixed 6-digit id of rank k (1..kZipfMaxKeys), written to out[0..5]: 100000 + a permutation of
// the ranks (an affine map mod 900000 whose multiplier is coprime with it), so distinct ranks
// have distinct ids and neighbouring ranks land far apart on any ring.
void zipf_key(uint32_t k, char out[6]);
