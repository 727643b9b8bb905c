// ring_maglev: the Maglev lookup table (Eisenbud et al., NSDI 2016). A prime table size M; every
// member id i gets a permutation of the table, offset + t × skip mod M with offset = Φ(i, 0) mod M
// and skip = Φ(i, 1) mod (M - 1) + 1; members take turns, in ascending id order, claiming the next
// free entry of their permutation until the table is full. Each member ends up with floor(M/N) or
// ceil(M/N) entries, and a lookup is one index.
//
// Weights (as Envoy's weighted Maglev): in round r (1, 2, ...) a member of weight w claims an entry
// only while its count × w_max < r × w, so the heaviest members claim one entry per round and a
// member of weight w claims w / w_max per round: entries in proportion to weight, within one entry
// per round. With equal weights every member claims one per round, the unweighted table exactly.
//
// Unlike ketama, Maglev's disruption is small but not minimal: adding or removing a member also
// moves a few keys between the other members.
#include "ring/ring_internal.h"

namespace {

bool is_prime(uint64_t m) {
  if (m < 2) return false;
  for (uint64_t d = 2; d * d <= m; d++) {
    if (m % d == 0) return false;
  }
  return true;
}

}  // namespace

bool ring_maglev_fits(const RingConfig& config, uint64_t n, uint64_t total_weight,
                      std::string* err) {
  (void)total_weight;  // every member claims an entry in round 1 whatever its weight
  uint64_t m = config.table_size;
  if (m > kRingMaxEntries) {
    *err = "maglev table size " + std::to_string(m) + " exceeds the limit of " +
           std::to_string(kRingMaxEntries) + ".";
    return false;
  }
  if (!is_prime(m)) {
    *err = "maglev table size " + std::to_string(m) + " is not prime.";
    return false;
  }
  if (m < n) {
    *err = "maglev table size " + std::to_string(m) + " is smaller than the member count " +
           std::to_string(n) + ".";
    return false;
  }
  return true;
}

bool ring_maglev_build(Ring* r, std::string* err) {
  const RingConfig& config = r->config;
  uint64_t m = config.table_size;
  uint64_t n = r->members.size();
  if (!ring_maglev_fits(config, n, ring_total_weight(r->members), err)) return false;

  r->maglev_table.assign(m, -1);
  if (n == 0) return true;
  std::vector<uint32_t> order = ring_members_by_id(r);
  // Per member, in id order: next candidate entry, stride, weight, entries claimed.
  std::vector<uint64_t> next(n), skip(n), weight(n), count(n, 0);
  uint64_t w_max = 1;
  for (size_t t = 0; t < n; t++) {
    const RingMember& member = r->members[order[t]];
    uint64_t id = member.id;
    next[t] = hash_vnode(config.hash, id, 0) % m;
    skip[t] = hash_vnode(config.hash, id, 1) % (m - 1) + 1;
    weight[t] = member.weight;
    if (weight[t] > w_max) w_max = weight[t];
  }
  uint64_t filled = 0;
  // The heaviest member claims an entry every round, so every round fills at least one entry and
  // the loop ends after at most m rounds.
  for (uint64_t round = 1;; round++) {
    for (size_t t = 0; t < n; t++) {
      if (count[t] * w_max >= round * weight[t]) continue;
      uint64_t c = next[t];
      while (r->maglev_table[c] >= 0) c = (c + skip[t]) % m;
      r->maglev_table[c] = static_cast<int32_t>(order[t]);
      next[t] = (c + skip[t]) % m;
      count[t]++;
      if (++filled == m) return true;
    }
  }
}

int ring_maglev_walk(const Ring* r, uint64_t pos, const uint8_t* skip) {
  uint64_t m = r->maglev_table.size();
  for (uint64_t step = 1; step < m; step++) {
    if (++pos == m) pos = 0;
    int member = r->maglev_table[pos];
    if (!skip[member]) return member;
  }
  return -1;
}
