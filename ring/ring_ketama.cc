// ring_ketama: 32-bit points, K per member (default 160, as nginx), kept as a sorted flat array; a
// key at position p is served by the owner of the first point >= p, wrapping to the first point
// (nginx's ngx_http_upstream_hash_module, libketama).
//
// Point j of member id i is the low 32 bits of hash_vnode(hash, i, j). Points depend on the id
// only, so adding or removing a member moves only the keys that the member gains or loses. Two
// points at the same value are ordered by member id, then j; the first one wins a lookup.
#include <algorithm>

#include "ring/ring_internal.h"

namespace {

constexpr uint32_t kKetamaDefaultVnodes = 160;

struct KetamaPoint {
  uint32_t point;
  uint32_t id;
  uint32_t j;
  uint32_t member;
};

}  // namespace

bool ring_ketama_build(Ring* r, std::string* err) {
  RingConfig& config = r->config;
  if (config.vnodes == 0) config.vnodes = kKetamaDefaultVnodes;
  uint64_t k = config.vnodes;
  uint64_t n = r->members.size();
  if (k * n > kRingMaxEntries) {
    *err = "ketama mode cannot hold " + std::to_string(n) + " members x " + std::to_string(k) +
           " points = " + std::to_string(k * n) + " points; the limit is " +
           std::to_string(kRingMaxEntries) + ".";
    return false;
  }

  std::vector<KetamaPoint> points;
  points.reserve(k * n);
  for (uint32_t index = 0; index < n; index++) {
    uint32_t id = r->members[index].id;
    for (uint32_t j = 0; j < k; j++) {
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
  r->ketama_owner.resize(points.size());
  for (size_t p = 0; p < points.size(); p++) {
    r->ketama_points[p] = points[p].point;
    r->ketama_owner[p] = points[p].member;
  }
  return true;
}

int ring_ketama_lookup(const Ring* r, uint64_t pos, const uint8_t* skip) {
  size_t n = r->ketama_points.size();
  if (n == 0) return -1;
  uint32_t key = static_cast<uint32_t>(pos);
  const uint32_t* points = r->ketama_points.data();
  size_t p = std::lower_bound(points, points + n, key) - points;
  if (p == n) p = 0;
  uint32_t member = r->ketama_owner[p];
  if (skip == nullptr || !skip[member]) return static_cast<int>(member);
  return ring_walk(r->ketama_owner.data(), n, p, skip);
}
