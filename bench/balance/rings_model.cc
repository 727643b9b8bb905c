// rings_model: the rings' balance and key movement computed in process, with ringlb's own ring code
// (ring/), for choosing the default ring (issue 16) and for the "Balance: the rings" section of
// bench/RESULTS.md. No network: what the real-traffic run (rings_balance.py) measures through the
// load balancers, this computes for many more rings and N, exactly where it can.
//
// For every ring given and every N:
//   share_max_over_mean   the busiest member's exact share of the position space (ring_shares) over
//                         the mean 1/N: the ring's own imbalance, without sampling noise;
//   keys_max_over_mean    the busiest member's count of the keys over the mean: what 100,000 real
//                         keys see (the ring's imbalance plus sampling noise);
//   floor_max_over_mean   the same keys on a perfect ring (member = xxh3(key) × N >> 64, every
//                         share exactly 1/N): the sampling noise alone, the best any ring can show;
//   add: id N + 1 joins N members: fraction of keys moved, of them between old members, ideal
//        1 / (N + 1); exact: the fraction of the position space that changed owner;
//   remove: each member of N in turn leaves (ids 1..N, at most 16 of them spread over 1..N):
//        keys moved, between survivors, ideal 1 / N; worst and mean;
//   build_ms (median of 5 builds) and bytes of the ring at N.
// Keys: the routing key ringlb uses by default is X-Request-Id (routing.cc), and when a request has
// none a fresh 6-digit id: distinct random 6-digit ids, as loadgen and the peers' wrk script send.
//
// Usage: rings_model [--keys K] [--seed S] [--n 3,5,10,16,32,64] RING...
//   RING: maglev:TABLE | ketama:POINTS | slots:M:K   e.g. maglev:65537 ketama:160 ketama:1000
// Prints one JSON object on stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>

#include "ring/ring.h"

namespace {

struct Options {
  size_t keys = 100000;
  uint64_t seed = 1;
  std::vector<uint32_t> ns = {3, 5, 10, 16, 32, 64};
  std::vector<std::string> rings;
};

// Distinct random 6-digit request ids.
std::vector<std::string> make_keys(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> used(900000, 0);
  std::vector<std::string> keys;
  if (count > 900000) count = 900000;
  while (keys.size() < count) {
    uint32_t v = static_cast<uint32_t>(rng() % 900000);
    if (used[v]) continue;
    used[v] = 1;
    keys.push_back(std::to_string(100000 + v));
  }
  return keys;
}

bool parse_ring(const std::string& spec, RingConfig* c) {
  unsigned a = 0, b = 0;
  c->hash = HashFn::xxh3;
  if (sscanf(spec.c_str(), "maglev:%u", &a) == 1) {
    c->mode = RingMode::maglev;
    c->table_size = a;
  } else if (sscanf(spec.c_str(), "ketama:%u", &a) == 1) {
    c->mode = RingMode::ketama;
    c->vnodes = a;
  } else if (sscanf(spec.c_str(), "slots:%u:%u", &a, &b) == 2) {
    c->mode = RingMode::slots;
    c->slots = a;
    c->vnodes = b;
  } else {
    return false;
  }
  return true;
}

std::vector<RingMember> members_except(uint32_t n, uint32_t skip_id) {
  std::vector<RingMember> m;
  for (uint32_t id = 1; id <= n; id++)
    if (id != skip_id) m.push_back(RingMember{id, "s" + std::to_string(id)});
  return m;
}

// The member id owning each key.
std::vector<uint32_t> owners(const Ring* r, const std::vector<uint64_t>& pos) {
  std::vector<uint32_t> out(pos.size());
  for (size_t k = 0; k < pos.size(); k++) out[k] = ring_member(r, ring_lookup(r, pos[k])).id;
  return out;
}

std::vector<uint64_t> positions(const Ring* r, const std::vector<std::string>& keys) {
  std::vector<uint64_t> out(keys.size());
  for (size_t k = 0; k < keys.size(); k++) out[k] = ring_position(r, keys[k]);
  return out;
}

double max_over_mean_of(const std::vector<uint32_t>& own, uint32_t n) {
  std::vector<size_t> count(n + 2, 0);
  for (uint32_t id : own) count[id]++;
  size_t mx = *std::max_element(count.begin(), count.end());
  return mx / (static_cast<double>(own.size()) / n);
}

// The fraction of the position space whose owner (by id) differs between a and b. maglev: every
// table entry; slots: every slot; ketama: see below.
double exact_moved(const Ring* a, const Ring* b) {
  const RingConfig& c = ring_config(a);
  if (c.mode == RingMode::maglev || c.mode == RingMode::slots) {
    uint64_t m = c.mode == RingMode::maglev ? c.table_size : c.slots;
    uint64_t moved = 0;
    for (uint64_t p = 0; p < m; p++)
      moved += ring_member(a, ring_lookup(a, p)).id != ring_member(b, ring_lookup(b, p)).id;
    return static_cast<double>(moved) / m;
  }
  // ketama: no point of a member that stays moves, so what changes owner is exactly the share of
  // the member that joined or left (keys moved between survivors, counted separately, show it).
  const Ring* big = ring_size(a) > ring_size(b) ? a : b;
  const Ring* small = big == a ? b : a;
  std::vector<double> share = ring_shares(big);
  double moved = 0;
  for (size_t i = 0; i < ring_size(big); i++) {
    bool in_small = false;
    for (size_t j = 0; j < ring_size(small); j++)
      in_small = in_small || ring_member(small, j).id == ring_member(big, i).id;
    if (!in_small) moved += share[i];
  }
  return moved;
}

double build_ms(const RingConfig& c, const std::vector<RingMember>& m) {
  std::vector<double> t;
  for (int i = 0; i < 5; i++) {
    auto t0 = std::chrono::steady_clock::now();
    RingPtr r = ring_build(c, m, nullptr);
    auto t1 = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[2];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--keys" && i + 1 < argc) {
      o.keys = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--seed" && i + 1 < argc) {
      o.seed = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--n" && i + 1 < argc) {
      o.ns.clear();
      for (char* t = strtok(argv[++i], ","); t; t = strtok(nullptr, ","))
        o.ns.push_back(static_cast<uint32_t>(atoi(t)));
    } else if (a.rfind("--", 0) == 0) {
      fprintf(stderr, "usage: rings_model [--keys K] [--seed S] [--n 3,10,64] RING...\n");
      return 2;
    } else {
      o.rings.push_back(a);
    }
  }
  std::vector<std::string> keys = make_keys(o.keys, o.seed);
  printf("{\"keys\": %zu, \"seed\": %llu, \"key_kind\": \"distinct 6-digit request ids\", \"rings\": [",
         keys.size(), static_cast<unsigned long long>(o.seed));
  for (size_t ri = 0; ri < o.rings.size(); ri++) {
    RingConfig c;
    if (!parse_ring(o.rings[ri], &c)) {
      fprintf(stderr, "rings_model: bad ring '%s'\n", o.rings[ri].c_str());
      return 2;
    }
    printf("%s\n {\"ring\": \"%s\", \"n\": [", ri ? "," : "", o.rings[ri].c_str());
    for (size_t ni = 0; ni < o.ns.size(); ni++) {
      uint32_t n = o.ns[ni];
      std::string err;
      RingPtr r = ring_build(c, members_except(n, 0), &err);
      RingPtr up = ring_build(c, members_except(n + 1, 0), &err);
      if (!r || !up) {
        fprintf(stderr, "rings_model: %s N=%u: %s\n", o.rings[ri].c_str(), n, err.c_str());
        return 1;
      }
      std::vector<uint64_t> pos = positions(r.get(), keys);
      std::vector<uint32_t> own = owners(r.get(), pos);
      std::vector<double> share = ring_shares(r.get());
      double share_mom = *std::max_element(share.begin(), share.end()) * n;
      double share_min = *std::min_element(share.begin(), share.end()) * n;
      double keys_mom = max_over_mean_of(own, n);
      std::vector<uint32_t> perfect(keys.size());
      for (size_t k = 0; k < keys.size(); k++) {
        unsigned __int128 h = XXH3_64bits(keys[k].data(), keys[k].size());
        perfect[k] = static_cast<uint32_t>((h * n) >> 64) + 1;
      }
      double floor_mom = max_over_mean_of(perfect, n);
      // Add id n + 1.
      std::vector<uint32_t> own_up = owners(up.get(), pos);
      size_t moved = 0, between = 0;
      for (size_t k = 0; k < keys.size(); k++) {
        if (own_up[k] == own[k]) continue;
        moved++;
        if (own_up[k] != n + 1) between++;
      }
      double add_exact = exact_moved(r.get(), up.get());
      // Remove members: all of them up to 16, else 16 spread over 1..n.
      uint32_t victims = std::min<uint32_t>(n, 16);
      double rm_worst = 0, rm_mean = 0, rm_between_worst = 0, rm_exact_worst = 0, rm_exact_mean = 0;
      for (uint32_t v = 0; v < victims; v++) {
        uint32_t id = 1 + static_cast<uint32_t>(uint64_t{v} * n / victims);
        RingPtr down = ring_build(c, members_except(n, id), &err);
        std::vector<uint32_t> own_down = owners(down.get(), pos);
        size_t m = 0, b = 0;
        for (size_t k = 0; k < keys.size(); k++) {
          if (own_down[k] == own[k]) continue;
          m++;
          if (own[k] != id) b++;
        }
        double f = static_cast<double>(m) / keys.size();
        rm_worst = std::max(rm_worst, f);
        rm_mean += f / victims;
        rm_between_worst = std::max(rm_between_worst, static_cast<double>(b) / keys.size());
        double e = exact_moved(r.get(), down.get());
        rm_exact_worst = std::max(rm_exact_worst, e);
        rm_exact_mean += e / victims;
      }
      printf("%s\n  {\"n\": %u, \"share_max_over_mean\": %.5f, \"share_min_over_mean\": %.5f, "
             "\"keys_max_over_mean\": %.5f, \"floor_max_over_mean\": %.5f, "
             "\"add\": {\"moved\": %.5f, \"between_old\": %.5f, \"exact\": %.5f, \"ideal\": %.5f}, "
             "\"remove\": {\"victims\": %u, \"moved_worst\": %.5f, \"moved_mean\": %.5f, "
             "\"between_worst\": %.5f, \"exact_worst\": %.5f, \"exact_mean\": %.5f, \"ideal\": %.5f}, "
             "\"build_ms\": %.3f, \"bytes\": %zu}",
             ni ? "," : "", n, share_mom, share_min, keys_mom, floor_mom,
             static_cast<double>(moved) / keys.size(), static_cast<double>(between) / keys.size(),
             add_exact, 1.0 / (n + 1), victims, rm_worst, rm_mean, rm_between_worst, rm_exact_worst,
             rm_exact_mean, 1.0 / n, build_ms(c, members_except(n, 0)), ring_bytes(r.get()));
      fflush(stdout);
    }
    printf("]}");
  }
  printf("]}\n");
  return 0;
}
