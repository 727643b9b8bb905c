// ring_view: /route, /ring and /add?dry_run=1 (see ring_view.h). The arcs come from ring_arcs
// (ring/ring_arcs.h), read from the arrays ring_lookup itself uses; owners under health come from
// ring_lookup with the snapshot's skip table, as a worker's pick does.
#include "lb/control/ring_view.h"

#include <jansson.h>

#include <algorithm>
#include <cstdio>

#include "lb/http/http_head.h"
#include "ring/ring_arcs.h"

namespace {

std::string dump(json_t* j, size_t flags) {
  char* s = json_dumps(j, JSON_PRESERVE_ORDER | flags);
  std::string out = s ? s : "{}";
  free(s);
  json_decref(j);
  return out;
}

// {"message": msg, "status": "successful"}, the admin API's envelope.
std::string envelope(json_t* msg, size_t flags = 0) {
  json_t* root = json_object();
  json_object_set_new(root, "message", msg);
  json_object_set_new(root, "status", json_string("successful"));
  return dump(root, flags | JSON_REAL_PRECISION(6));
}

const char* state_name(MemberState s) {
  switch (s) {
    case MemberState::usable:
      return "healthy";
    case MemberState::starting:
      return "starting";
    case MemberState::dead:
      return "dead";
  }
  return "?";
}

std::string hash_key_name(const Config* cfg) {
  switch (cfg->hash_key) {
    case HashKey::rid:
      return "rid";
    case HashKey::path:
      return "path";
    case HashKey::ip:
      return "ip";
    case HashKey::header:
      return "header:" + cfg->hash_key_name;
    case HashKey::cookie:
      return "cookie:" + cfg->hash_key_name;
  }
  return "?";
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string byte_text(unsigned char b) {
  char buf[8];
  snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

// {"name", "ring_id", "state"} of member i of s.
json_t* member_json(const Snapshot& s, size_t i) {
  const SnapMember& m = s.members[i];
  json_t* o = json_object();
  json_object_set_new(o, "name", json_string(m.name.c_str()));
  json_object_set_new(o, "ring_id", json_integer(m.ring_id));
  json_object_set_new(o, "state", json_string(state_name(m.state)));
  return o;
}

}  // namespace

bool ring_view_key(const Config* cfg, std::string_view url, std::string* key, std::string* err) {
  std::string_view raw;
  if (!http_url_query(url, "key", &raw)) {
    *err = "/route needs the routing key: /route?key=K (percent-encoded)";
    return false;
  }
  key->clear();
  for (size_t i = 0; i < raw.size(); i++) {
    if (raw[i] != '%') {
      key->push_back(raw[i]);
      continue;
    }
    int hi = i + 1 < raw.size() ? hex_value(raw[i + 1]) : -1;
    int lo = i + 2 < raw.size() ? hex_value(raw[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      *err = "the key has an invalid percent-encoding at byte " + std::to_string(i) +
             " of the query value: '%' must be followed by two hex digits";
      return false;
    }
    key->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  const std::string& k = *key;
  switch (cfg->hash_key) {
    case HashKey::ip:
      if (k.empty()) {
        *err = "an empty key: with --hash-key ip the key is a client address";
        return false;
      }
      return true;
    case HashKey::path:
      if (k.empty() || k[0] != '/') {
        *err = "with --hash-key path the key is a request path, which starts with '/'";
        return false;
      }
      for (size_t i = 0; i < k.size(); i++) {
        unsigned char b = static_cast<unsigned char>(k[i]);
        if (b <= 0x20 || b >= 0x7f || b == '?' || b == '#') {
          *err = "with --hash-key path the key is a request path: byte " + std::to_string(i) +
                 " (" + byte_text(b) + ") cannot be in one (visible ASCII without '?' and '#'; " +
                 "percent-encode it in the path as a request would)";
          return false;
        }
      }
      return true;
    case HashKey::rid:
    case HashKey::header:
    case HashKey::cookie:
      break;
  }
  if (k.empty() && cfg->hash_key == HashKey::rid) {
    *err =
        "an empty key: a request without an X-Request-Id (or with an empty one) gets a fresh "
        "random request id, so it has no fixed replica";
    return false;
  }
  for (size_t i = 0; i < k.size(); i++) {
    unsigned char b = static_cast<unsigned char>(k[i]);
    if ((b < 0x20 && b != '\t') || b == 0x7f) {
      *err = "byte " + std::to_string(i) + " of the key (" + byte_text(b) +
             ") is a control character, which a header value cannot carry";
      return false;
    }
    if (b == ';' && cfg->hash_key == HashKey::cookie) {
      *err = "byte " + std::to_string(i) + " of the key is ';', which ends a cookie value";
      return false;
    }
  }
  if (!k.empty() &&
      (k.front() == ' ' || k.front() == '\t' || k.back() == ' ' || k.back() == '\t')) {
    *err = "the key starts or ends with whitespace, which a header value drops";
    return false;
  }
  return true;
}

std::string ring_view_route_json(const Config* cfg, const Snapshot& s, std::string_view key) {
  const Ring* r = s.ring.get();
  size_t n = s.members.size();
  uint64_t pos = ring_position(r, key);
  json_t* msg = json_object();
  // The key as given: text when it is UTF-8 (jansson refuses anything else), else hex.
  json_t* text = json_stringn(key.data(), key.size());
  if (text != nullptr) {
    json_object_set_new(msg, "key", text);
  } else {
    std::string hex;
    for (unsigned char b : key) hex += byte_text(b).substr(2);
    json_object_set_new(msg, "key_hex", json_string(hex.c_str()));
  }
  json_object_set_new(msg, "hash_key", json_string(hash_key_name(cfg).c_str()));
  json_object_set_new(msg, "ring", json_string(ring_mode_name(ring_config(r).mode)));
  json_object_set_new(msg, "position", json_integer(static_cast<json_int_t>(pos)));
  json_object_set_new(msg, "space", json_integer(static_cast<json_int_t>(ring_space(r))));
  json_object_set_new(msg, "gen", json_integer(static_cast<json_int_t>(s.gen)));

  // Every member in the order the clockwise walk from pos meets them: each lookup walks past the
  // ones already met (ring_lookup with a growing skip table), exactly as a retry walks past the
  // replicas it tried.
  std::vector<uint8_t> met(n, 0);
  std::vector<size_t> order;
  for (size_t k = 0; k < n; k++) {
    int idx = ring_lookup(r, pos, met.data());
    if (idx < 0) break;
    order.push_back(static_cast<size_t>(idx));
    met[idx] = 1;
  }
  // The replica a request reaches now: the worker's pick (routing_pick without bounded load).
  int now = n > 0 ? ring_lookup(r, pos, s.skip.data()) : -1;
  json_object_set_new(msg, "replica",
                      now >= 0 ? member_json(s, static_cast<size_t>(now)) : json_null());
  json_t* failover = json_array();
  json_t* clockwise = json_array();
  bool after = false;
  size_t retries = 0;
  for (size_t idx : order) {
    json_array_append_new(clockwise, member_json(s, idx));
    if (static_cast<int>(idx) == now) {
      after = true;
      continue;
    }
    if (after && !s.skip[idx] && retries < cfg->retries) {
      json_array_append_new(failover, member_json(s, idx));
      retries++;
    }
  }
  json_object_set_new(msg, "failover", failover);
  json_object_set_new(msg, "retries", json_integer(cfg->retries));
  json_object_set_new(msg, "clockwise", clockwise);
  if (now < 0)
    json_object_set_new(msg, "note", json_string("no replica is healthy: a request gets 503"));
  else if (cfg->balance_factor > 0)
    json_object_set_new(msg, "note",
                        json_string("--balance-factor is on: a request walks past the "
                                    "replica while it is over its share of the load"));
  return envelope(msg);
}

std::string ring_view_ring_json(const Snapshot& s, bool with_arcs) {
  const Ring* r = s.ring.get();
  const RingConfig& rc = ring_config(r);
  size_t n = s.members.size();
  uint64_t space = ring_space(r);
  std::vector<RingArc> arcs = ring_arcs(r);
  // Per member: the space it owns and the space it serves now (an arc's server under the
  // snapshot's skip table is the same at every position of the arc: ring_arcs.h).
  std::vector<uint64_t> owned(n, 0), serves(n, 0);
  std::vector<int32_t> serving = ring_arcs_serving(r, arcs, s.skip.data());
  for (size_t k = 0; k < arcs.size(); k++) {
    uint64_t len = arcs[k].last - arcs[k].first + 1;
    owned[arcs[k].member] += len;
    if (serving[k] >= 0) serves[serving[k]] += len;
  }
  bool list_arcs = with_arcs && arcs.size() <= kRingViewMaxArcs;

  json_t* msg = json_object();
  json_object_set_new(msg, "ring", json_string(ring_mode_name(rc.mode)));
  json_object_set_new(msg, "hash", json_string(hash_name(rc.hash)));
  json_object_set_new(msg, "space", json_integer(static_cast<json_int_t>(space)));
  if (rc.mode != RingMode::maglev) json_object_set_new(msg, "vnodes", json_integer(rc.vnodes));
  json_object_set_new(msg, "gen", json_integer(static_cast<json_int_t>(s.gen)));
  json_object_set_new(msg, "arcs", json_integer(static_cast<json_int_t>(arcs.size())));
  if (!list_arcs) {
    std::string why = !with_arcs ? "arcs=0 was asked"
                                 : std::to_string(arcs.size()) + " arcs are more than the " +
                                       std::to_string(kRingViewMaxArcs) +
                                       " /ring lists; points and shares are exact";
    json_object_set_new(msg, "arcs_omitted", json_string(why.c_str()));
  }
  // Members by ring id: the same order whatever order the registry holds them in.
  std::vector<size_t> by_id(n);
  for (size_t i = 0; i < n; i++) by_id[i] = i;
  std::sort(by_id.begin(), by_id.end(),
            [&s](size_t a, size_t b) { return s.members[a].ring_id < s.members[b].ring_id; });
  std::vector<json_t*> member_arcs(n, nullptr);
  json_t* members = json_array();
  for (size_t i : by_id) {
    json_t* o = member_json(s, i);
    json_object_set_new(o, "points",
                        json_integer(static_cast<json_int_t>(ring_member_points(r, i))));
    if (rc.mode == RingMode::slots) {
      json_t* slots = json_array();
      for (uint32_t slot : ring_member_slots(r, i))
        json_array_append_new(slots, json_integer(slot));
      json_object_set_new(o, "slots", slots);
    }
    json_object_set_new(o, "share", json_real(space ? static_cast<double>(owned[i]) / space : 0));
    json_object_set_new(o, "share_now",
                        json_real(space ? static_cast<double>(serves[i]) / space : 0));
    if (list_arcs) {
      member_arcs[i] = json_array();
      json_object_set_new(o, "arcs", member_arcs[i]);  // filled below, in position order
    }
    json_array_append_new(members, o);
  }
  if (list_arcs) {
    for (const RingArc& a : arcs) {
      json_t* pair = json_array();
      json_array_append_new(pair, json_integer(static_cast<json_int_t>(a.first)));
      json_array_append_new(pair, json_integer(static_cast<json_int_t>(a.last)));
      json_array_append_new(member_arcs[a.member], pair);
    }
  }
  json_object_set_new(msg, "members", members);
  return envelope(msg, JSON_COMPACT);
}

bool ring_view_add_dry_run_json(const Config* cfg, const Registry* reg,
                                const std::vector<std::string>& names, std::string* out,
                                std::string* err) {
  const Ring* before = reg->ring.get();
  std::vector<RingMember> members;
  std::vector<uint8_t> used(ring_size(before) + names.size() + 2, 0);
  for (size_t i = 0; i < ring_size(before); i++) {
    members.push_back(ring_member(before, i));
    if (members.back().id < used.size()) used[members.back().id] = 1;
  }
  // The ring ids registry_add gives: the lowest free one for each new replica in turn.
  size_t first_new = members.size();
  for (const std::string& name : names) {
    uint32_t id = 1;
    while (used[id]) id++;
    used[id] = 1;
    members.push_back(RingMember{id, name});
  }
  RingPtr after = ring_build(cfg->ring, members, err);
  if (!after) return false;

  // Walk both rings' arcs together: every stretch of positions has one owner before and one after.
  std::vector<RingArc> a = ring_arcs(before), b = ring_arcs(after.get());
  uint64_t space = ring_space(after.get());
  std::vector<uint64_t> to_new(names.size(), 0);
  uint64_t moved = 0, between = 0;
  size_t i = 0, j = 0;
  uint64_t pos = 0;
  while (j < b.size()) {
    uint64_t end = b[j].last;
    if (i < a.size()) end = std::min(end, a[i].last);
    uint64_t len = end - pos + 1;
    uint32_t id_after = ring_member(after.get(), b[j].member).id;
    bool had_owner = i < a.size();
    uint32_t id_before = had_owner ? ring_member(before, a[i].member).id : 0;
    if (id_before != id_after) {
      moved += len;
      if (b[j].member >= first_new)
        to_new[b[j].member - first_new] += len;
      else
        between += len;
    }
    pos = end + 1;
    if (i < a.size() && a[i].last == end) i++;
    if (b[j].last == end) j++;
  }

  json_t* msg = json_object();
  json_object_set_new(msg, "dry_run", json_true());
  json_object_set_new(msg, "ring", json_string(ring_mode_name(cfg->ring.mode)));
  json_object_set_new(msg, "members_before", json_integer(static_cast<json_int_t>(first_new)));
  json_object_set_new(msg, "members_after", json_integer(static_cast<json_int_t>(members.size())));
  json_object_set_new(msg, "moved", json_real(static_cast<double>(moved) / space));
  json_object_set_new(msg, "moved_between_existing",
                      json_real(static_cast<double>(between) / space));
  json_t* list = json_array();
  for (size_t k = 0; k < names.size(); k++) {
    json_t* o = json_object();
    json_object_set_new(o, "name", json_string(names[k].c_str()));
    json_object_set_new(o, "ring_id", json_integer(members[first_new + k].id));
    json_object_set_new(o, "share", json_real(static_cast<double>(to_new[k]) / space));
    json_array_append_new(list, o);
  }
  json_object_set_new(msg, "new", list);
  *out = envelope(msg);
  return true;
}
