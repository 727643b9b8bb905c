// ring: the parts every mode shares. Validation of members, the build dispatch, positions, the
// lookup dispatch, the clockwise walk past skipped members, and the names of modes and probes. The
// arrays of each mode are built in ring_slots.cc, ring_ketama.cc and ring_maglev.cc.
#include <algorithm>

#include "ring/ring_internal.h"

void RingDeleter::operator()(Ring* r) const {
  delete r;
}

namespace {

// Checks that ids are >= 1 and distinct and weights within 1..kRingMaxWeight. On failure writes
// one sentence to *err.
bool check_member_ids(const std::vector<RingMember>& members, std::string* err) {
  std::vector<uint32_t> ids;
  ids.reserve(members.size());
  for (const RingMember& m : members) {
    if (m.id == 0) {
      *err = "member id 0 is invalid: ring ids start at 1 (member '" + m.name + "').";
      return false;
    }
    if (m.weight == 0 || m.weight > kRingMaxWeight) {
      *err = "member '" + m.name + "' has weight " + std::to_string(m.weight) +
             ": a weight is a whole number from 1 to " + std::to_string(kRingMaxWeight) + ".";
      return false;
    }
    ids.push_back(m.id);
  }
  std::sort(ids.begin(), ids.end());
  auto dup = std::adjacent_find(ids.begin(), ids.end());
  if (dup != ids.end()) {
    *err = "member id " + std::to_string(*dup) + " is given twice: ring ids must be distinct.";
    return false;
  }
  return true;
}

}  // namespace

RingPtr ring_build(const RingConfig& config, const std::vector<RingMember>& members,
                   std::string* err) {
  std::string local_err;
  if (err == nullptr) err = &local_err;
  if (!check_member_ids(members, err)) return nullptr;

  RingPtr r(new Ring);
  r->config = config;
  r->members = members;
  bool ok = false;
  switch (config.mode) {
    case RingMode::slots:
      ok = ring_slots_build(r.get(), err);
      break;
    case RingMode::ketama:
      ok = ring_ketama_build(r.get(), err);
      break;
    case RingMode::maglev:
      ok = ring_maglev_build(r.get(), err);
      break;
  }
  if (!ok) return nullptr;
  return r;
}

bool ring_fits(const RingConfig& config, uint64_t members, uint64_t total_weight,
               std::string* err) {
  std::string local_err;
  if (err == nullptr) err = &local_err;
  if (total_weight < members || total_weight > members * kRingMaxWeight) {
    *err = "each weight must be a whole number from 1 to " + std::to_string(kRingMaxWeight) + ".";
    return false;
  }
  switch (config.mode) {
    case RingMode::slots:
      return ring_slots_fits(config, members, total_weight, err);
    case RingMode::ketama:
      return ring_ketama_fits(config, members, total_weight, err);
    case RingMode::maglev:
      return ring_maglev_fits(config, members, total_weight, err);
  }
  return false;
}

size_t ring_size(const Ring* r) {
  return r->members.size();
}

const RingMember& ring_member(const Ring* r, size_t index) {
  return r->members[index];
}

const RingConfig& ring_config(const Ring* r) {
  return r->config;
}

uint64_t ring_position(const Ring* r, std::string_view key) {
  switch (r->config.mode) {
    case RingMode::slots:
      return hash_key(r->config.hash, hash_fold(key)) % r->config.slots;
    case RingMode::ketama:
      return static_cast<uint32_t>(hash_bytes(r->config.hash, key));
    case RingMode::maglev:
      return hash_bytes(r->config.hash, key) % r->config.table_size;
  }
  return 0;
}

int ring_lookup(const Ring* r, uint64_t pos, const uint8_t* skip) {
  switch (r->config.mode) {
    case RingMode::slots:
      return ring_slots_lookup(r, pos, skip);
    case RingMode::ketama:
      return ring_ketama_lookup(r, pos, skip);
    case RingMode::maglev:
      return ring_maglev_lookup(r, pos, skip);
  }
  return -1;
}

std::vector<uint32_t> ring_member_slots(const Ring* r, size_t index) {
  if (r->config.mode != RingMode::slots) return {};
  size_t k = r->config.vnodes;
  auto first = r->slot_member_slots.begin() + index * k;
  return std::vector<uint32_t>(first, first + k);
}

std::vector<uint32_t> ring_members_by_id(const Ring* r) {
  std::vector<uint32_t> order(r->members.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = static_cast<uint32_t>(i);
  std::sort(order.begin(), order.end(),
            [r](uint32_t a, uint32_t b) { return r->members[a].id < r->members[b].id; });
  return order;
}

int ring_walk(const RingPoint* points, size_t n, size_t start, const uint8_t* skip) {
  size_t p = start;
  for (size_t step = 0; step < n; step++) {
    if (!skip[points[p].member]) return static_cast<int>(points[p].member);
    if (++p == n) p = 0;
  }
  return -1;
}

const char* ring_mode_name(RingMode mode) {
  switch (mode) {
    case RingMode::slots:
      return "slots";
    case RingMode::ketama:
      return "ketama";
    case RingMode::maglev:
      return "maglev";
  }
  return "unknown";
}

bool ring_mode_parse(std::string_view name, RingMode* out) {
  for (RingMode mode : {RingMode::slots, RingMode::ketama, RingMode::maglev}) {
    if (name == ring_mode_name(mode)) {
      *out = mode;
      return true;
    }
  }
  return false;
}

const char* ring_probe_name(RingProbe probe) {
  switch (probe) {
    case RingProbe::linear:
      return "linear";
    case RingProbe::quadratic:
      return "quadratic";
  }
  return "unknown";
}

bool ring_probe_parse(std::string_view name, RingProbe* out) {
  for (RingProbe probe : {RingProbe::linear, RingProbe::quadratic}) {
    if (name == ring_probe_name(probe)) {
      *out = probe;
      return true;
    }
  }
  return false;
}

uint64_t ring_total_weight(const std::vector<RingMember>& members) {
  uint64_t total = 0;
  for (const RingMember& m : members) total += m.weight;
  return total;
}

std::vector<double> ring_shares(const Ring* r) {
  std::vector<double> share(r->members.size(), 0.0);
  if (share.empty()) return share;
  switch (r->config.mode) {
    case RingMode::slots: {
      for (const RingSlotOwner& o : r->slot_owner) share[o.member] += 1.0;
      for (double& s : share) s /= static_cast<double>(r->slot_owner.size());
      break;
    }
    case RingMode::ketama: {
      // The arc (previous point, this point] belongs to this point's member; the first point's
      // arc wraps around from the last one.
      const std::vector<RingPoint>& p = r->ketama_points;
      for (size_t i = 0; i < p.size(); i++) {
        uint64_t prev = i == 0 ? p.back().point : p[i - 1].point;
        uint64_t arc = i == 0 ? (uint64_t{1} << 32) - prev + p[0].point : p[i].point - prev;
        if (p.size() == 1) arc = uint64_t{1} << 32;
        share[p[i].member] += static_cast<double>(arc);
      }
      for (double& s : share) s /= 4294967296.0;
      break;
    }
    case RingMode::maglev: {
      for (int32_t m : r->maglev_table) share[m] += 1.0;
      for (double& s : share) s /= static_cast<double>(r->maglev_table.size());
      break;
    }
  }
  return share;
}

size_t ring_bytes(const Ring* r) {
  return r->slot_owner.capacity() * sizeof(RingSlotOwner) +
         r->slot_points.capacity() * sizeof(RingPoint) +
         r->slot_member_slots.capacity() * sizeof(uint32_t) +
         r->ketama_points.capacity() * sizeof(RingPoint) +
         r->ketama_bucket.capacity() * sizeof(uint32_t) +
         r->maglev_table.capacity() * sizeof(int32_t) + r->members.capacity() * sizeof(RingMember);
}
