// ring_ketama: 32-bit points, K × weight per member, kept as a sorted flat array; a
// key at position p is served by the owner of the first point >= p, wrapping to the first point
// (nginx's ngx_http_upstream_hash_module, libketama). A bucket index over the top bits of the
// points narrows the search for that point to about one candidate.
//
// Point j (0 <= j < K × weight) of member id i is the low 32 bits of hash_vnode(hash, i, j). Points depend on the id
// only, so adding or removing a member moves only the keys that the member gains or loses. Two
// points at the same value are ordered by member id, then j; the first one wins a lookup.
#include <algorithm>

#include "ring/ring_internal.h"

namespace {

// K when none is given: 8000 points per member, ringlb's default ring (issue 16). nginx and
// libketama use 160, which leaves the busiest of N = 3..64 members 10-19% above the mean; 8000
// keeps every N from 3 to 64 within 2.8% (exact shares, bench/balance/rings_model.cc) and therefore
// moves at most 1.03 x the ideal fraction of keys on an add or a removal, for about 5 MB and
// 50-150 ms of build at 64 members (bench/RESULTS.md, "Balance: the rings").
constexpr uint32_t kKetamaDefaultVnodes = 8000;

struct KetamaPoint {
  uint32_t point;
  uint32_t id;
  uint32_t j;
  uint32_t member;
};

// Fills ketama_bucket and ketama_shift for the sorted ketama_points: 2^bits buckets with bits =
// floor(log2(points)), at most 20, so a bucket holds about one point when points are well spread.
// (With a poorly mixing hash many points can share a bucket; the lookup still binary searches it.)
void build_bucket_index(Ring* r) {
  const std::vector<RingPoint>& points = r->ketama_points;
  uint32_t bits = 0;
  while (bits < 20 && (uint64_t{2} << bits) <= points.size()) bits++;
  r->ketama_shift = 32 - bits;
  uint64_t buckets = uint64_t{1} << bits;
  r->ketama_bucket.resize(buckets + 1);
  size_t p = 0;
  for (uint64_t b = 0; b <= buckets; b++) {
    uint64_t threshold = b << r->ketama_shift;
    while (p < points.size() && points[p].point < threshold) p++;
    r->ketama_bucket[b] = static_cast<uint32_t>(p);
  }
}

}  // namespace

bool ring_ketama_fits(const RingConfig& config, uint64_t n, uint64_t total_weight,
                      std::string* err) {
  uint64_t k = config.vnodes == 0 ? kKetamaDefaultVnodes : config.vnodes;
  if (k * total_weight > kKetamaMaxPoints) {
    *err = "ketama mode cannot hold " + std::to_string(n) + " members" +
           (total_weight != n ? " of total weight " + std::to_string(total_weight) : "") + " x " +
           std::to_string(k) + " points = " + std::to_string(k * total_weight) +
           " points; the limit is " + std::to_string(kKetamaMaxPoints) + ".";
    return false;
  }
  return true;
}

bool ring_ketama_build(Ring* r, std::string* err) {
  RingConfig& config = r->config;
  uint64_t n = r->members.size();
  uint64_t total_weight = ring_total_weight(r->members);
  if (!ring_ketama_fits(config, n, total_weight, err)) return false;
  if (config.vnodes == 0) config.vnodes = kKetamaDefaultVnodes;
  uint64_t k = config.vnodes;

  std::vector<KetamaPoint> points;
  points.reserve(k * total_weight);
  for (uint32_t index = 0; index < n; index++) {
    uint32_t id = r->members[index].id;
    uint64_t count = k * r->members[index].weight;
    for (uint32_t j = 0; j < count; j++) {
      uint32_t point = static_cast<uint32_t>(hash_vnode(config.hash, id, j));
      points.push_back(KetamaPoint{point, id, j, index});
    }
  }
  std::sort(points.begin(), points.end(), [](const KetamaPoint& a, const KetamaPoint& b) {
    if (a.point != b.point) return a.point < b.point;
    if (a.id != b.id) return a.id < b.id;
    return a.j < b.j;
  });
  r->ketama_points.resize(points.size());
  for (size_t p = 0; p < points.size(); p++) {
    r->ketama_points[p] = RingPoint{points[p].point, points[p].member};
  }
  build_bucket_index(r);
  return true;
}

int ring_ketama_lookup(const Ring* r, uint64_t pos, const uint8_t* skip) {
  size_t n = r->ketama_points.size();
  if (n == 0) return -1;
  uint32_t key = static_cast<uint32_t>(pos);
  uint64_t b = uint64_t{key} >> r->ketama_shift;
  const RingPoint* first = r->ketama_points.data() + r->ketama_bucket[b];
  const RingPoint* last = r->ketama_points.data() + r->ketama_bucket[b + 1];
  // The first point >= key in the bucket, or when there is none the first point of the next
  // non-empty bucket, which is last.
  const RingPoint* it = std::lower_bound(
      first, last, key, [](const RingPoint& point, uint32_t k) { return point.point < k; });
  size_t p = static_cast<size_t>(it - r->ketama_points.data());
  if (p == n) p = 0;
  uint32_t member = r->ketama_points[p].member;
  if (skip == nullptr || !skip[member]) return static_cast<int>(member);
  return ring_walk(r->ketama_points.data(), n, p, skip);
}
