#include "lb/data/routing.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <uv.h>

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
  rt->scratch_ramped.resize(s.members.size());
  rt->scratch_capped.resize(s.members.size());
  rt->newest_since_ms = 0;
  rt->none_usable = s.members.empty() || memchr(s.skip.data(), 0, s.members.size()) == nullptr;
  for (const SnapMember& m : s.members)
    rt->newest_since_ms = std::max(rt->newest_since_ms, m.usable_since_ms);
}

void routing_apply_load(Pools* ps, const Snapshot& s, uint64_t gen, const std::vector<uint32_t>& load) {
  if (gen != s.gen || load.size() != ps->by_index.size()) return;
  for (size_t i = 0; i < load.size(); i++)
    if (Pool* p = ps->by_index[i]) p->others = load[i];
}

double routing_ramp_point(uint64_t pos) {
  // splitmix64's finalizer over pos and a constant of its own: independent of the ring's hash.
  uint64_t z = pos + 0x632be59bd9b4e019ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

namespace {

// With --slow-start: marks in ramped (a copy of base) every member still in its ramp that does not
// take pos yet. Returns true when it marked any.
bool mark_ramping(const Routing* rt, const Snapshot& s, uint32_t slow_start_ms, uint64_t pos,
                  const uint8_t* base, uint8_t* ramped) {
  uint64_t now = uv_hrtime() / 1000000;
  if (now >= rt->newest_since_ms + slow_start_ms) return false;  // every ramp is over
  size_t n = s.members.size();
  double point = routing_ramp_point(pos);
  bool any = false;
  memcpy(ramped, base, n);
  for (size_t i = 0; i < n; i++) {
    uint64_t since = s.members[i].usable_since_ms;
    if (since == 0 || base[i] || now >= since + slow_start_ms) continue;
    double ramp = now <= since ? 0.0 : static_cast<double>(now - since) / slow_start_ms;
    if (point >= ramp) {
      ramped[i] = 1;
      any = true;
    }
  }
  return any;
}

// The ring lookup of pos past the members marked in skip, or -1 when skip marks all of them. That
// case is decided here by a scan of the members: the ring's walk would visit every point of the
// ring first (24,000 of them for 3 replicas with ketama's 8,000 each; with several workers, every
// member at its bound by one count or the other happens a few times a second under load).
int lookup_past(const Snapshot& s, uint64_t pos, const uint8_t* skip) {
  if (memchr(skip, 0, s.members.size()) == nullptr) return -1;
  return ring_lookup(s.ring.get(), pos, skip);
}

}  // namespace

Pool* routing_pick(Routing* rt, const Snapshot& s, const Pools& ps, const Config* cfg, uint64_t pos,
                   const std::vector<uint32_t>& tried) {
  size_t n = s.members.size();
  if (n == 0) return nullptr;
  double factor = cfg->balance_factor;
  bool bounded = factor > 0;
  bool may_ramp = cfg->slow_start_ms > 0 && rt->newest_since_ms != 0;
  if (tried.empty() && !bounded && !may_ramp) {
    int idx = rt->none_usable ? -1 : ring_lookup(s.ring.get(), pos, s.skip.data());
    return idx < 0 ? nullptr : ps.by_index[idx];
  }
  // base: not usable, or tried by this exchange. Buffers are sized with the ring (routing_install).
  uint8_t* base = rt->scratch_tried.data();
  memcpy(base, s.skip.data(), n);
  for (uint32_t id : tried)
    for (size_t i = 0; i < n; i++)
      if (s.members[i].ring_id == id) base[i] = 1;
  // ramped: base, and the ramping members that do not take pos yet.
  const uint8_t* ramped = base;
  bool ramping =
      may_ramp && mark_ramping(rt, s, cfg->slow_start_ms, pos, base, rt->scratch_ramped.data());
  if (ramping) ramped = rt->scratch_ramped.data();
  if (bounded) {
    // Bounded load (HAProxy's hash-balance-factor, Mirrokni et al.): a member at its bound by every
    // worker's estimate or by this worker's own exact count is walked past (see routing.h). When
    // every member is, the ring decides without the bound.
    // Each member's bound is its weight's share of it (HAProxy's chash_server_is_eligible): a
    // replica of weight 2 may hold twice the in-flight requests of one of weight 1.
    uint64_t total = 1, own = 1, weights = 0;
    for (size_t i = 0; i < n; i++) {
      if (s.skip[i]) continue;
      const Pool* p = ps.by_index[i];
      weights += p->weight;
      total += p->others + p->inflight;
      own += p->inflight;
    }
    if (weights > 0) {
      auto bound = [&](uint64_t count, uint32_t weight) {
        return static_cast<uint64_t>(
            std::ceil(factor * static_cast<double>(count) * weight / static_cast<double>(weights)));
      };
      uint8_t* capped = rt->scratch_capped.data();
      memcpy(capped, ramped, n);
      for (size_t i = 0; i < n; i++) {
        const Pool* p = ps.by_index[i];
        if (p != nullptr && (p->others + p->inflight >= bound(total, p->weight) ||
                             p->inflight >= bound(own, p->weight)))
          capped[i] = 1;
      }
      int idx = lookup_past(s, pos, capped);
      if (idx >= 0) return ps.by_index[idx];
    }
  }
  int idx = lookup_past(s, pos, ramped);
  if (idx < 0 && ramping) idx = lookup_past(s, pos, base);
  return idx < 0 ? nullptr : ps.by_index[idx];
}
