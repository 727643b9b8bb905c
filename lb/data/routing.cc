#include "lb/data/routing.h"

#include <cmath>
#include <cstring>

#include "lb/data/upstream.h"

std::string_view routing_key(const Config* cfg, const HttpHead& h, const std::string& peer_ip,
                             std::mt19937_64* rng, char* rid_buf, bool* generated) {
  std::string_view v;
  *generated = false;
  switch (cfg->hash_key) {
    case HashKey::path: return http_url_path(http_head_url(h));
    case HashKey::ip: return peer_ip;
    case HashKey::header:
      if (http_head_get(h, cfg->hash_key_name, &v)) return v;
      break;
    case HashKey::cookie:
      if (http_head_get(h, "cookie", &v)) {
        size_t at = 0;
        while (at < v.size()) {
          size_t semi = v.find(';', at);
          std::string_view pair = v.substr(at, semi == std::string_view::npos ? v.npos : semi - at);
          while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
          size_t eq = pair.find('=');
          if (eq != v.npos && pair.substr(0, eq) == cfg->hash_key_name) return pair.substr(eq + 1);
          if (semi == std::string_view::npos) break;
          at = semi + 1;
        }
      }
      break;
    case HashKey::rid:
      if (http_head_get(h, "x-request-id", &v) && !v.empty()) return v;
      break;
  }
  // No key in the request: a fresh 6-digit request id, as the assignment's Rid.
  unsigned id = static_cast<unsigned>(100000 + (*rng)() % 900000);
  for (int i = 5; i >= 0; i--, id /= 10) rid_buf[i] = static_cast<char>('0' + id % 10);
  rid_buf[6] = '\0';
  *generated = true;
  return std::string_view(rid_buf, 6);
}

void routing_install(Routing* rt, const Snapshot& s) {
  rt->scratch_tried.resize(s.members.size());
  rt->scratch_capped.resize(s.members.size());
}

void routing_apply_load(Pools* ps, const Snapshot& s, uint64_t gen, const std::vector<uint32_t>& load) {
  if (gen != s.gen || load.size() != ps->by_index.size()) return;
  for (size_t i = 0; i < load.size(); i++) {
    Pool* p = ps->by_index[i];
    if (p == nullptr) continue;
    // This worker's share of the sum is what it reported last; what it has now is added at pick.
    p->others = load[i] > p->reported_inflight ? load[i] - p->reported_inflight : 0;
  }
}

Pool* routing_pick(Routing* rt, const Snapshot& s, const Pools& ps, double balance_factor,
                   uint64_t pos, const std::vector<uint32_t>& tried) {
  size_t n = s.members.size();
  if (n == 0) return nullptr;
  const uint8_t* skip = s.skip.data();
  uint8_t* local = rt->scratch_tried.data();  // sized with the ring (routing_install)
  bool bounded = balance_factor > 0;
  if (!tried.empty() || bounded) {
    memcpy(local, skip, n);
    for (uint32_t id : tried)
      for (size_t i = 0; i < n; i++)
        if (s.members[i].ring_id == id) local[i] = 1;
    skip = local;
  }
  if (bounded) {
    // Bounded load (HAProxy's hash-balance-factor): a replica whose in-flight count would exceed
    // ceil(c x average) is walked past. When every replica is above it, the plain ring decides.
    // The counts are estimates: the other workers' as of their last reports (at most a report
    // interval and a load message old), plus this worker's own exchanges now.
    uint64_t total = 1, usable = 0;
    for (size_t i = 0; i < n; i++) {
      if (s.skip[i]) continue;
      const Pool* p = ps.by_index[i];
      usable++;
      total += p->others + p->inflight;
    }
    if (usable > 0) {
      uint64_t limit = static_cast<uint64_t>(std::ceil(balance_factor * total / usable));
      uint8_t* capped = rt->scratch_capped.data();
      memcpy(capped, local, n);
      for (size_t i = 0; i < n; i++) {
        const Pool* p = ps.by_index[i];
        if (p->others + p->inflight >= limit) capped[i] = 1;
      }
      int idx = ring_lookup(s.ring.get(), pos, capped);
      if (idx >= 0) return ps.by_index[idx];
    }
  }
  int idx = ring_lookup(s.ring.get(), pos, skip);
  return idx < 0 ? nullptr : ps.by_index[idx];
}
