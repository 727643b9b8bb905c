// The hash families of ring/hash.h: the assignment's formulas as golden vectors worked out by hand,
// the integer families' definitions, key folding, and names.
#include <gtest/gtest.h>
#include <xxhash.h>

#include "ring/hash.h"

namespace {

// Φ(i, j) = i² + j² + 2j + 25 = i² + (j + 1)² + 24, for i = 1..3, j = 0..8, mod 512 (all below
// 512).
TEST(AssignmentHash, VnodeSlotsForThreeServers) {
  const uint64_t expected[3][9] = {
      {26, 29, 34, 41, 50, 61, 74, 89, 106},  // i = 1: (j + 1)² + 25
      {29, 32, 37, 44, 53, 64, 77, 92, 109},  // i = 2: (j + 1)² + 28
      {34, 37, 42, 49, 58, 69, 82, 97, 114},  // i = 3: (j + 1)² + 33
  };
  for (uint64_t i = 1; i <= 3; i++) {
    for (uint64_t j = 0; j < 9; j++) {
      EXPECT_EQ(hash_vnode(HashFn::assignment, i, j) % 512, expected[i - 1][j])
          << "i=" << i << " j=" << j;
    }
  }
  EXPECT_EQ(hash_vnode(HashFn::assignment, 1, 0), 26u);
}

// H(i) = i² + 2i + 17 = (i + 1)² + 16, mod 512, for 6-digit request ids.
TEST(AssignmentHash, RequestSlotsOfSixDigitIds) {
  // 132575 = 258 × 512 + 479; 479² = 229441 = 448 × 512 + 65; 65 + 16 = 81.
  EXPECT_EQ(hash_key(HashFn::assignment, 132574) % 512, 81u);
  // 100000² = 10^10 is a multiple of 512; 200017 = 390 × 512 + 337.
  EXPECT_EQ(hash_key(HashFn::assignment, 100000) % 512, 337u);
  // (999999 + 1)² = 10^12 is a multiple of 512, leaving 16.
  EXPECT_EQ(hash_key(HashFn::assignment, 999999) % 512, 16u);
  // 100100 = 195 × 512 + 260; 260² = 67600 = 132 × 512 + 16; 16 + 16 = 32.
  EXPECT_EQ(hash_key(HashFn::assignment, 100099) % 512, 32u);
  EXPECT_EQ(hash_key(HashFn::assignment, 132574), 132574ull * 132574 + 2 * 132574 + 17);
}

// The formulas are uint64 arithmetic that wraps; wrapping keeps the value mod 512 because 512
// divides 2^64. (10^18 + 1)² + 16 ≡ 16 (mod 512) since 10^36 is a multiple of 2^36.
TEST(AssignmentHash, WrapsLikeUint64) {
  uint64_t i = 999999999999999999ull;
  EXPECT_EQ(hash_key(HashFn::assignment, i), i * i + 2 * i + 17);
  EXPECT_EQ(hash_key(HashFn::assignment, i) % 512, 16u);
}

TEST(Xxh3Hash, HashesLittleEndianIntegers) {
  const unsigned char one[8] = {1, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(hash_key(HashFn::xxh3, 1), XXH3_64bits(one, 8));
  const unsigned char pair[16] = {0x34, 0x12, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(hash_vnode(HashFn::xxh3, 0x1234, 7), XXH3_64bits(pair, 16));
}

TEST(MurmurHash, IsTheFmix64Finalizer) {
  EXPECT_EQ(hash_key(HashFn::murmur, 0), 0u);  // fmix64 maps 0 to 0
  // fmix64(1), from MurmurHash3's reference finalizer.
  EXPECT_EQ(hash_key(HashFn::murmur, 1), 0xb456bcfc34c2cb2cull);
  EXPECT_NE(hash_vnode(HashFn::murmur, 1, 0), hash_vnode(HashFn::murmur, 1, 1));
  EXPECT_NE(hash_vnode(HashFn::murmur, 1, 0), hash_vnode(HashFn::murmur, 2, 0));
}

TEST(FibonacciHash, MultipliesByTwoToTheSixtyFourOverPhi) {
  EXPECT_EQ(hash_key(HashFn::fibonacci, 1), 11400714819323198485ull);
  EXPECT_EQ(hash_key(HashFn::fibonacci, 3), 3 * 11400714819323198485ull);
  EXPECT_NE(hash_vnode(HashFn::fibonacci, 1, 0), hash_vnode(HashFn::fibonacci, 1, 1));
  EXPECT_NE(hash_vnode(HashFn::fibonacci, 1, 0), hash_vnode(HashFn::fibonacci, 2, 0));
}

TEST(HashFold, DecimalKeysOfUpTo18DigitsAreTheirValue) {
  EXPECT_EQ(hash_fold("132574"), 132574u);
  EXPECT_EQ(hash_fold("0"), 0u);
  EXPECT_EQ(hash_fold("007"), 7u);
  EXPECT_EQ(hash_fold("999999999999999999"), 999999999999999999ull);
}

TEST(HashFold, OtherKeysAreXxh3WithTheTopBitCleared) {
  for (std::string_view key : {"", "1234567890123456789", "12a", "-5", "/home", " 1"}) {
    EXPECT_EQ(hash_fold(key), XXH3_64bits(key.data(), key.size()) & 0x7fffffffffffffffull) << key;
  }
}

TEST(HashBytes, Xxh3HashesBytesOthersHashTheFoldedKey) {
  EXPECT_EQ(hash_bytes(HashFn::xxh3, "132574"), XXH3_64bits("132574", 6));
  EXPECT_EQ(hash_bytes(HashFn::assignment, "132574"), hash_key(HashFn::assignment, 132574));
  EXPECT_EQ(hash_bytes(HashFn::murmur, "/home"), hash_key(HashFn::murmur, hash_fold("/home")));
  EXPECT_EQ(hash_bytes(HashFn::fibonacci, "42"), hash_key(HashFn::fibonacci, 42));
}

TEST(HashNames, RoundTripAndRejectUnknown) {
  for (HashFn fn : {HashFn::assignment, HashFn::xxh3, HashFn::murmur, HashFn::fibonacci}) {
    HashFn parsed = HashFn::assignment;
    EXPECT_TRUE(hash_parse(hash_name(fn), &parsed)) << hash_name(fn);
    EXPECT_EQ(parsed, fn);
  }
  EXPECT_STREQ(hash_name(HashFn::assignment), "assignment");
  EXPECT_STREQ(hash_name(HashFn::xxh3), "xxh3");
  HashFn out = HashFn::murmur;
  EXPECT_FALSE(hash_parse("md5", &out));
  EXPECT_FALSE(hash_parse("", &out));
  EXPECT_EQ(out, HashFn::murmur);
}

}  // namespace
