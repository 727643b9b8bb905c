// Hash functions for the ring, pluggable for experiment A-4.
//
// Each function family provides the assignment's two roles:
//   key hash     H(i):    the position of a request whose key folded to the integer i;
//   vnode hash   Φ(i, j): the point of virtual server j of member id i.
// In slots mode both are taken mod M by the ring. ketama and maglev use the 64-bit values directly
// (ketama keeps the low 32 bits of each point, as nginx and libketama do).
#pragma once

#include <cstdint>
#include <string_view>

enum class HashFn : uint8_t {
  assignment,  // H(i) = i² + 2i + 17, Φ(i, j) = i² + j² + 2j + 25 (the assignment's formulas)
  xxh3,        // XXH3 64-bit (Debian libxxhash) of the little-endian integers
  murmur,      // MurmurHash3's 64-bit finalizer (fmix64), a cheap well-mixing integer hash
  fibonacci,   // multiplicative (Fibonacci) hashing: i × 2^64/φ; fast, mixes the high bits only
};

// H(i) and Φ(i, j) for the given family.
uint64_t hash_key(HashFn fn, uint64_t i);
uint64_t hash_vnode(HashFn fn, uint64_t i, uint64_t j);

// Folds a routing key to the integer i that H takes. A key of 1 to 18 ASCII decimal digits is its value
// (the assignment's 6-digit request ids hash exactly as written); any other key is the XXH3 64-bit hash
// of its bytes with the top bit cleared.
uint64_t hash_fold(std::string_view key);

// Hashes key bytes directly (ketama and maglev positions): XXH3 for xxh3, and for the integer families
// their key hash of hash_fold(key).
uint64_t hash_bytes(HashFn fn, std::string_view key);

// Names for flags: "assignment", "xxh3", "murmur", "fibonacci"; parse returns false on an unknown name.
const char* hash_name(HashFn fn);
bool hash_parse(std::string_view name, HashFn* out);
