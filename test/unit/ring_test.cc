// What every ring mode promises (ring/ring.h): adding or removing a member moves only that member's
// keys, skip walks clockwise to the next member that is not skipped, lookups do not depend on the
// order of members, a replacement that keeps an id keeps its keys, and invalid configurations are
// refused with one clear sentence.
#include <gtest/gtest.h>

#include <algorithm>

#include "test/unit/ring_testing.h"

namespace {

struct ModeCase {
  const char* name;
  RingMode mode;
  HashFn hash;
  // Fraction of keys that may move between members other than the one added or removed. Zero for
  // slots and ketama, whose points never move for another member's sake. Maglev rebuilds its table
  // and moves a few more (measured with 10 members and 100000 keys: 0.2% to 0.6%).
  double max_moved_between_others;
  // Members whose removal must move only their own keys. In slots mode removing any member but the
  // last placed (highest id) can let a probed virtual server fall back (ring_slots_test.cc).
  std::vector<uint32_t> removable;
};

void PrintTo(const ModeCase& c, std::ostream* os) {
  *os << c.name;
}

const ModeCase kModes[] = {
    {"slots_assignment", RingMode::slots, HashFn::assignment, 0.0, {10}},
    {"slots_xxh3", RingMode::slots, HashFn::xxh3, 0.0, {10}},
    {"ketama_xxh3", RingMode::ketama, HashFn::xxh3, 0.0, {1, 5, 10}},
    {"ketama_murmur", RingMode::ketama, HashFn::murmur, 0.0, {1, 5, 10}},
    {"maglev_xxh3", RingMode::maglev, HashFn::xxh3, 0.01, {1, 5, 10}},
    {"maglev_murmur", RingMode::maglev, HashFn::murmur, 0.01, {1, 5, 10}},
};

class RingEveryMode : public testing::TestWithParam<ModeCase> {
 protected:
  RingConfig config() const {
    RingConfig c;
    c.mode = GetParam().mode;
    c.hash = GetParam().hash;
    return c;
  }
  // The size of the position space a lookup reduces positions into, for the slots and maglev walks.
  uint64_t positions() const {
    return GetParam().mode == RingMode::slots ? RingConfig().slots : RingConfig().table_size;
  }
};

INSTANTIATE_TEST_SUITE_P(Modes, RingEveryMode, testing::ValuesIn(kModes),
                         [](const testing::TestParamInfo<ModeCase>& info) {
                           return std::string(info.param.name);
                         });

std::vector<uint32_t> without(std::vector<uint32_t> ids, uint32_t id) {
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  return ids;
}

TEST_P(RingEveryMode, AddingAMemberMovesOnlyKeysThatNowBelongToIt) {
  std::vector<std::string> keys = random_request_ids(100000, 1);
  RingPtr before = build_ring(config(), members_with_ids(ids_up_to(10)));
  RingPtr after = build_ring(config(), members_with_ids(ids_up_to(11)));
  ASSERT_TRUE(before && after);
  size_t to_new = 0, between_others = 0;
  for (const std::string& key : keys) {
    uint32_t was = owner_id(before.get(), key), is = owner_id(after.get(), key);
    if (was == is) continue;
    if (is == 11) {
      to_new++;
    } else {
      between_others++;
    }
  }
  EXPECT_GT(to_new, 0u);
  EXPECT_LE(between_others, GetParam().max_moved_between_others * keys.size());
}

TEST_P(RingEveryMode, RemovingAMemberMovesOnlyItsKeys) {
  std::vector<std::string> keys = random_request_ids(100000, 2);
  RingPtr before = build_ring(config(), members_with_ids(ids_up_to(10)));
  ASSERT_TRUE(before);
  for (uint32_t removed : GetParam().removable) {
    RingPtr after = build_ring(config(), members_with_ids(without(ids_up_to(10), removed)));
    ASSERT_TRUE(after);
    size_t from_removed = 0, between_others = 0;
    for (const std::string& key : keys) {
      uint32_t was = owner_id(before.get(), key), is = owner_id(after.get(), key);
      ASSERT_NE(is, removed);
      if (was == is) continue;
      if (was == removed) {
        from_removed++;
      } else {
        between_others++;
      }
    }
    EXPECT_GT(from_removed, 0u) << "removed " << removed;
    EXPECT_LE(between_others, GetParam().max_moved_between_others * keys.size())
        << "removed " << removed;
  }
}

// The reference for a skipped lookup. slots and maglev: the owner of the first position at or after
// pos, one position at a time, whose own owner is not skipped; stepping through positions visits
// the occupied slots (and the maglev table) in clockwise order. ketama: the owner in the ring built
// without the skipped members, since skipping a member is walking past its points.
uint32_t reference_skip_owner(const Ring* r, const RingConfig& config, uint64_t pos,
                              const std::vector<uint8_t>& skip) {
  if (config.mode == RingMode::ketama) {
    std::vector<RingMember> kept;
    for (size_t index = 0; index < ring_size(r); index++) {
      if (!skip[index]) kept.push_back(ring_member(r, index));
    }
    RingPtr rebuilt = ring_build(config, kept, nullptr);
    int index = ring_lookup(rebuilt.get(), pos);
    return index < 0 ? 0 : ring_member(rebuilt.get(), index).id;
  }
  uint64_t m = config.mode == RingMode::slots ? config.slots : config.table_size;
  for (uint64_t d = 0; d < m; d++) {
    int index = ring_lookup(r, (pos + d) % m);
    if (!skip[index]) return ring_member(r, index).id;
  }
  return 0;
}

TEST_P(RingEveryMode, SkipWalksClockwiseToTheNextMemberNotSkipped) {
  RingPtr r = build_ring(config(), members_with_ids(ids_up_to(10)));
  ASSERT_TRUE(r);
  std::vector<std::string> keys = random_request_ids(300, 3);
  std::mt19937_64 rng(4);
  for (const std::string& key : keys) {
    uint64_t pos = ring_position(r.get(), key);
    int owner = ring_lookup(r.get(), pos);
    ASSERT_GE(owner, 0);

    // Skipping the owner: another member, the next one clockwise.
    std::vector<uint8_t> skip(10, 0);
    skip[owner] = 1;
    int next = ring_lookup(r.get(), pos, skip.data());
    ASSERT_GE(next, 0);
    EXPECT_NE(next, owner);
    EXPECT_EQ(ring_member(r.get(), next).id, reference_skip_owner(r.get(), config(), pos, skip))
        << key;

    // A random half of the members skipped.
    for (uint8_t& s : skip) s = rng() & 1;
    uint32_t want = reference_skip_owner(r.get(), config(), pos, skip);
    EXPECT_EQ(owner_id(r.get(), key, skip.data()), want) << key;
  }
}

TEST_P(RingEveryMode, SkipReturnsMinusOneWhenEveryMemberIsSkipped) {
  RingPtr r = build_ring(config(), members_with_ids(ids_up_to(10)));
  ASSERT_TRUE(r);
  std::vector<uint8_t> all(10, 1);
  for (const std::string& key : random_request_ids(100, 5)) {
    EXPECT_EQ(ring_lookup_key(r.get(), key, all.data()), -1) << key;
  }
  // All but member index 6: every key goes to it.
  std::vector<uint8_t> all_but_one(10, 1);
  all_but_one[6] = 0;
  for (const std::string& key : random_request_ids(100, 6)) {
    EXPECT_EQ(ring_lookup_key(r.get(), key, all_but_one.data()), 6) << key;
  }
}

TEST_P(RingEveryMode, LookupDoesNotDependOnTheOrderOfMembers) {
  std::vector<uint32_t> ids = ids_up_to(10);
  RingPtr sorted = build_ring(config(), members_with_ids(ids));
  std::reverse(ids.begin(), ids.end());
  RingPtr reversed = build_ring(config(), members_with_ids(ids));
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(7));
  RingPtr shuffled = build_ring(config(), members_with_ids(ids));
  ASSERT_TRUE(sorted && reversed && shuffled);
  for (const std::string& key : random_request_ids(100000, 8)) {
    uint32_t id = owner_id(sorted.get(), key);
    ASSERT_EQ(owner_id(reversed.get(), key), id) << key;
    ASSERT_EQ(owner_id(shuffled.get(), key), id) << key;
  }
}

// A replacement takes over a dead member's id under a new name (and here a new place in the list):
// every key stays with the id.
TEST_P(RingEveryMode, AReplacementWithTheSameIdKeepsTheSameKeys) {
  std::vector<RingMember> members = members_with_ids(ids_up_to(10));
  RingPtr before = build_ring(config(), members);
  RingMember replacement{4, "replica-x7k2"};
  members.erase(members.begin() + 3);
  members.push_back(replacement);
  RingPtr after = build_ring(config(), members);
  ASSERT_TRUE(before && after);
  size_t served_by_replacement = 0;
  for (const std::string& key : random_request_ids(100000, 9)) {
    uint32_t id = owner_id(before.get(), key);
    ASSERT_EQ(owner_id(after.get(), key), id) << key;
    if (id == 4) {
      EXPECT_EQ(ring_member(after.get(), ring_lookup_key(after.get(), key)).name, "replica-x7k2");
      served_by_replacement++;
    }
  }
  EXPECT_GT(served_by_replacement, 0u);
}

TEST_P(RingEveryMode, AnEmptyRingReturnsMinusOne) {
  RingPtr r = build_ring(config(), {});
  ASSERT_TRUE(r);
  EXPECT_EQ(ring_size(r.get()), 0u);
  EXPECT_EQ(ring_lookup_key(r.get(), "132574"), -1);
  EXPECT_EQ(ring_lookup(r.get(), 0), -1);
  EXPECT_EQ(ring_lookup(r.get(), ~uint64_t{0}), -1);
}

// Any 64-bit value is a valid position: lookup reduces it into the ring's range the same way
// ring_position does.
TEST_P(RingEveryMode, PositionsOutOfRangeAreReduced) {
  RingPtr r = build_ring(config(), members_with_ids(ids_up_to(10)));
  ASSERT_TRUE(r);
  std::mt19937_64 rng(10);
  for (int n = 0; n < 1000; n++) {
    uint64_t pos = rng();
    uint64_t reduced = GetParam().mode == RingMode::ketama ? pos & 0xffffffffu : pos % positions();
    EXPECT_EQ(ring_lookup(r.get(), pos), ring_lookup(r.get(), reduced)) << pos;
  }
}

TEST(RingMembers, AreReportedInTheOrderGiven) {
  RingConfig config;
  RingPtr r = build_ring(config, {{7, "a"}, {2, "b"}, {5, "c"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(ring_size(r.get()), 3u);
  EXPECT_EQ(ring_member(r.get(), 0).id, 7u);
  EXPECT_EQ(ring_member(r.get(), 1).name, "b");
  EXPECT_EQ(ring_member(r.get(), 2).id, 5u);
  EXPECT_EQ(ring_config(r.get()).mode, RingMode::ketama);
  EXPECT_EQ(ring_config(r.get()).vnodes, 8000u);       // ketama's default K
  EXPECT_TRUE(ring_member_slots(r.get(), 0).empty());  // slots mode only
}

// One invalid configuration per case and the sentence ring_build gives for it.
struct InvalidCase {
  const char* what;
  RingConfig config;
  std::vector<RingMember> members;
  const char* message;
};

RingConfig with_mode(RingMode mode) {
  RingConfig c;
  c.mode = mode;
  return c;
}

TEST(RingBuild, RefusesInvalidConfigurationsWithOneSentence) {
  RingConfig no_slots = with_mode(RingMode::slots);
  no_slots.slots = 0;
  RingConfig one_slot = with_mode(RingMode::slots);
  one_slot.slots = 1;  // default K = floor(log2 1) = 0
  RingConfig even_table = with_mode(RingMode::maglev);
  even_table.table_size = 65536;
  RingConfig zero_table = with_mode(RingMode::maglev);
  zero_table.table_size = 0;
  RingConfig small_table = with_mode(RingMode::maglev);
  small_table.table_size = 7;
  RingConfig huge_table = with_mode(RingMode::maglev);
  huge_table.table_size = 4294967291u;  // prime, but a 16 GiB table
  RingConfig huge_ketama = with_mode(RingMode::ketama);
  huge_ketama.vnodes = 1u << 24;
  const InvalidCase cases[] = {
      {"zero slots", no_slots, members_with_ids({1}),
       "slots mode needs at least one slot, but slots = 0."},
      {"K = 0", one_slot, members_with_ids({1}),
       "slots mode needs at least one virtual server per member, but K = 0 (log2 of 1 slot); set "
       "vnodes."},
      // 57 members × 9 = 513 > 512.
      {"K × N > M", with_mode(RingMode::slots), members_with_ids(ids_up_to(57)),
       "slots mode cannot place 57 members x 9 virtual servers = 513 points in 512 slots."},
      {"table not prime", even_table, members_with_ids({1}),
       "maglev table size 65536 is not prime."},
      {"table of zero", zero_table, members_with_ids({1}), "maglev table size 0 is not prime."},
      {"table smaller than members", small_table, members_with_ids(ids_up_to(10)),
       "maglev table size 7 is smaller than the member count 10."},
      {"table too large", huge_table, members_with_ids({1}),
       "maglev table size 4294967291 exceeds the limit of 16777216."},
      {"ketama too large", huge_ketama, members_with_ids({1, 2}),
       "ketama mode cannot hold 2 members x 16777216 points = 33554432 points; the limit is "
       "1048576."},
      {"id 0",
       RingConfig(),
       {{1, "a"}, {0, "zero"}},
       "member id 0 is invalid: ring ids start at 1 (member 'zero')."},
      {"duplicate id",
       RingConfig(),
       {{3, "a"}, {1, "b"}, {3, "c"}},
       "member id 3 is given twice: ring ids must be distinct."},
      {"duplicate id in slots mode",
       with_mode(RingMode::slots),
       {{2, "a"}, {2, "b"}},
       "member id 2 is given twice: ring ids must be distinct."},
  };
  for (const InvalidCase& c : cases) {
    std::string err;
    RingPtr r = ring_build(c.config, c.members, &err);
    EXPECT_EQ(r, nullptr) << c.what;
    EXPECT_EQ(err, c.message) << c.what;
    EXPECT_EQ(ring_build(c.config, c.members, nullptr), nullptr) << c.what;  // err is optional
  }
}

TEST(RingBuild, AcceptsTheLimitsThemselves) {
  RingConfig full = with_mode(RingMode::slots);  // 56 × 9 = 504 <= 512
  EXPECT_TRUE(build_ring(full, members_with_ids(ids_up_to(56))));
  RingConfig tiny_table = with_mode(RingMode::maglev);
  tiny_table.table_size = 11;  // prime and equal to the member count
  RingPtr r = build_ring(tiny_table, members_with_ids(ids_up_to(11)));
  ASSERT_TRUE(r);
  // Eleven entries, eleven members: each owns exactly one entry.
  std::vector<int> owners;
  for (uint64_t pos = 0; pos < 11; pos++) owners.push_back(ring_lookup(r.get(), pos));
  std::sort(owners.begin(), owners.end());
  for (int index = 0; index < 11; index++) EXPECT_EQ(owners[index], index);
}

TEST(RingNames, RoundTripAndRejectUnknown) {
  for (RingMode mode : {RingMode::slots, RingMode::ketama, RingMode::maglev}) {
    RingMode parsed = RingMode::slots;
    EXPECT_TRUE(ring_mode_parse(ring_mode_name(mode), &parsed));
    EXPECT_EQ(parsed, mode);
  }
  EXPECT_STREQ(ring_mode_name(RingMode::maglev), "maglev");
  for (RingProbe probe : {RingProbe::linear, RingProbe::quadratic}) {
    RingProbe parsed = RingProbe::linear;
    EXPECT_TRUE(ring_probe_parse(ring_probe_name(probe), &parsed));
    EXPECT_EQ(parsed, probe);
  }
  EXPECT_STREQ(ring_probe_name(RingProbe::quadratic), "quadratic");
  RingMode mode = RingMode::maglev;
  EXPECT_FALSE(ring_mode_parse("consistent", &mode));
  EXPECT_EQ(mode, RingMode::maglev);
  RingProbe probe = RingProbe::quadratic;
  EXPECT_FALSE(ring_probe_parse("cubic", &probe));
  EXPECT_EQ(probe, RingProbe::quadratic);
}

}  // namespace
