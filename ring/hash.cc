// Hash families for the ring (see hash.h). All arithmetic is on uint64_t and wraps mod 2^64, which
// is what the assignment's formulas mean once they are taken mod M: 2^64 is a multiple of every
// power-of-two M, so wrapping never changes H(i) mod M or Φ(i, j) mod M for such M.
#include "ring/hash.h"

#include <xxhash.h>

namespace {

// 2^64 / φ, rounded to odd: Knuth's multiplicative (Fibonacci) hashing constant.
constexpr uint64_t kFibonacci = 11400714819323198485ull;

// MurmurHash3's 64-bit finalizer: a bijection on uint64_t in which every input bit affects every
// output bit.
uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

// Stores v little-endian at p, so xxh3 hashes the same bytes on every host.
void store_le64(unsigned char* p, uint64_t v) {
  for (int b = 0; b < 8; b++) p[b] = static_cast<unsigned char>(v >> (8 * b));
}

}  // namespace

// assignment: H(i) = i² + 2i + 17.
// xxh3:       XXH3_64bits of the 8 little-endian bytes of i.
// murmur:     fmix64(i).
// fibonacci:  i × 11400714819323198485 (2^64/φ).
uint64_t hash_key(HashFn fn, uint64_t i) {
  switch (fn) {
    case HashFn::assignment:
      return i * i + 2 * i + 17;
    case HashFn::xxh3: {
      unsigned char buf[8];
      store_le64(buf, i);
      return XXH3_64bits(buf, sizeof buf);
    }
    case HashFn::murmur:
      return fmix64(i);
    case HashFn::fibonacci:
      return i * kFibonacci;
  }
  return 0;
}

// assignment: Φ(i, j) = i² + j² + 2j + 25.
// xxh3:       XXH3_64bits of the 16 bytes i, j, each little-endian.
// murmur:     fmix64(i × 0x9E3779B97F4A7C15 ^ fmix64(j + 1)); j + 1 so that j = 0 still perturbs i.
// fibonacci:  (i + (j + 1) × C) × C with C = 2^64/φ: one multiplicative step over a combination
// that
//             keeps i and j distinct in the low bits; like the key hash it mixes the high bits
//             only.
uint64_t hash_vnode(HashFn fn, uint64_t i, uint64_t j) {
  switch (fn) {
    case HashFn::assignment:
      return i * i + j * j + 2 * j + 25;
    case HashFn::xxh3: {
      unsigned char buf[16];
      store_le64(buf, i);
      store_le64(buf + 8, j);
      return XXH3_64bits(buf, sizeof buf);
    }
    case HashFn::murmur:
      return fmix64(i * 0x9E3779B97F4A7C15ull ^ fmix64(j + 1));
    case HashFn::fibonacci:
      return (i + (j + 1) * kFibonacci) * kFibonacci;
  }
  return 0;
}

uint64_t hash_fold(std::string_view key) {
  if (!key.empty() && key.size() <= 18) {
    uint64_t v = 0;
    size_t n = 0;
    for (; n < key.size(); n++) {
      unsigned char c = static_cast<unsigned char>(key[n]);
      if (c < '0' || c > '9') break;
      v = v * 10 + (c - '0');
    }
    if (n == key.size()) return v;
  }
  return XXH3_64bits(key.data(), key.size()) & ~(uint64_t{1} << 63);
}

uint64_t hash_bytes(HashFn fn, std::string_view key) {
  if (fn == HashFn::xxh3) return XXH3_64bits(key.data(), key.size());
  return hash_key(fn, hash_fold(key));
}

const char* hash_name(HashFn fn) {
  switch (fn) {
    case HashFn::assignment:
      return "assignment";
    case HashFn::xxh3:
      return "xxh3";
    case HashFn::murmur:
      return "murmur";
    case HashFn::fibonacci:
      return "fibonacci";
  }
  return "unknown";
}

bool hash_parse(std::string_view name, HashFn* out) {
  for (HashFn fn : {HashFn::assignment, HashFn::xxh3, HashFn::murmur, HashFn::fibonacci}) {
    if (name == hash_name(fn)) {
      *out = fn;
      return true;
    }
  }
  return false;
}
