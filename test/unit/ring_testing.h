// Helpers shared by the ring tests: member lists, request ids and owner ids.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ring/ring.h"

// Members with the given ids, named "s<id>", in the given order.
inline std::vector<RingMember> members_with_ids(const std::vector<uint32_t>& ids) {
  std::vector<RingMember> members;
  for (uint32_t id : ids) members.push_back(RingMember{id, "s" + std::to_string(id)});
  return members;
}

// Ids 1..n.
inline std::vector<uint32_t> ids_up_to(uint32_t n) {
  std::vector<uint32_t> ids;
  for (uint32_t id = 1; id <= n; id++) ids.push_back(id);
  return ids;
}

// n random 6-digit request ids (the assignment's keys), reproducible from seed.
inline std::vector<std::string> random_request_ids(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> keys;
  keys.reserve(n);
  for (size_t k = 0; k < n; k++) keys.push_back(std::to_string(100000 + rng() % 900000));
  return keys;
}

// The id of the member that serves key, or 0 when the lookup returns -1. Comparing ids rather than
// member indexes compares rings built from differently ordered member lists.
inline uint32_t owner_id(const Ring* r, std::string_view key, const uint8_t* skip = nullptr) {
  int index = ring_lookup_key(r, key, skip);
  return index < 0 ? 0 : ring_member(r, index).id;
}

// Builds a ring the test expects to be valid. On failure records the builder's message and returns
// nullptr; callers ASSERT_TRUE on the result.
inline RingPtr build_ring(const RingConfig& config, const std::vector<RingMember>& members) {
  std::string err;
  RingPtr r = ring_build(config, members, &err);
  EXPECT_NE(r, nullptr) << err;
  return r;
}
