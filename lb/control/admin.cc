#include "lb/control/admin.h"

#include <algorithm>
#include <cstring>
#include <jansson.h>
#include <set>

#include "lb/control/admin_json.h"
#include "lb/control/dashboard.h"
#include "lb/control/metrics.h"
#include "lb/control/ring_view.h"
#include "lb/http/http_response.h"
#include "lb/log.h"

namespace {

std::string dump(json_t* j) {
  char* s = json_dumps(j, JSON_PRESERVE_ORDER);
  std::string out = s ? s : "{}";
  free(s);
  json_decref(j);
  return out;
}

void fail(Control* ctl, AdminCallRef client, int status, const std::string& text) {
    control_answer(ctl, client, status, http_error_json(text));
}

// Parses {"n": <int>, "hostnames": [<str>, ...], "weight": <int>} (hostnames and weight optional;
// admin_json.h). Returns false after answering the client with the reason.
bool parse_body(Control* ctl, AdminCallRef client, const std::string& body, AdminBody* parsed) {
  AdminJsonError err;
  if (!admin_json_parse(body, parsed, &err)) {
    fail(ctl, client, err.status, err.text);
    return false;
  }
  return true;
}

bool check_names(Control* ctl, AdminCallRef client, const std::vector<std::string>& names) {
  AdminJsonError err;
  if (!admin_json_check_names(names, &err)) {
    fail(ctl, client, err.status, err.text);
    return false;
  }
  return true;
}

// "a, b, c" for the log.
std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// /add, or with dry_run /add?dry_run=1: the same checks, then the keys that would move instead of
// the change (ring_view.h); a dry run changes nothing (and is not logged). peer: the caller, logged
// with what changed.
void handle_add(Control* ctl, AdminCallRef client, const std::string& body, bool dry_run,
                const std::string& peer) {
  Registry* reg = ctl->reg;
  AdminBody parsed;
  if (!parse_body(ctl, client, body, &parsed)) return;
  long long n = parsed.n;
  std::vector<std::string> names = std::move(parsed.names);
  if (static_cast<long long>(names.size()) > n) {
    fail(ctl, client, 400, "Length of hostname list is more than newly added instances");
    return;
  }
  if (!ctl->reg->prov->can_scale()) {
    fail(ctl, client, 409, "the pool is static (--provisioner static): replicas cannot be added");
    return;
  }
  // Admission counts every member the ring will hold: the committed replicas and those of /add
  // requests still in progress (two concurrent /add must not both fit in the same room).
  size_t current = registry_members(reg);
  if (current >= ctl->cfg->max_replicas ||
      static_cast<unsigned long long>(n) > ctl->cfg->max_replicas - current) {
    size_t pending = current - registry_counted(reg).size();
    fail(ctl, client, 400, "adding " + std::to_string(n) + " replicas to " + std::to_string(current) +
                             (pending ? " (" + std::to_string(pending) + " of them still starting)" : "") +
                             " would exceed --max-replicas " + std::to_string(ctl->cfg->max_replicas));
    return;
  }
  // The weight: the ring must hold every member with it (ketama: K points per unit of weight).
  std::string why;
  if (!ring_fits(ctl->cfg->ring, current + static_cast<uint64_t>(n),
                 registry_total_weight(reg) + static_cast<uint64_t>(n) * parsed.weight, &why)) {
    fail(ctl, client, 400, "cannot add " + std::to_string(n) + " replicas of weight " +
                             std::to_string(parsed.weight) + ": " + why);
    return;
  }
  if (!check_names(ctl, client, names)) return;
  for (const std::string& name : names) {
    if (registry_find_live(reg, name) != nullptr) {  // a removed (draining) one no longer counts
      fail(ctl, client, 409, "a replica named '" + name + "' already exists");
      return;
    }
  }
  while (static_cast<long long>(names.size()) < n) {
    std::string name = registry_random_name(reg);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  if (dry_run) {
    std::string answer, error;
    if (!ring_view_add_dry_run_json(ctl->cfg, reg, names, &answer, &error, parsed.weight)) return fail(ctl, client, 400, error);
    control_answer(ctl, client, 200, answer);
    return;
  }
  auto req = std::make_unique<AddRequest>();
  req->names = names;
  req->weight = parsed.weight;
  AdminCallRef ref = client;
  // Answered once every worker routes by the result: a client that sends its next request right
  // after the answer reaches the new replicas through any worker.
  // Logged once it is known what changed: the replicas added, or nothing (and why).
  req->done = [ctl, ref, peer, names](int status, const std::string& error) {
    if (status == 200)
      LOG_INFO("admin: /add from %s: added %zu replicas (%s)", peer.c_str(), names.size(),
               joined(names).c_str());
    else
      LOG_WARN("admin: /add from %s of %zu replicas changed nothing (%d): %s", peer.c_str(),
               names.size(), status, error.c_str());
    if (status != 200) {
      control_answer(ctl, ref, status, http_error_json(error));
      return;
    }
    control_after_sync(ctl, [ctl, ref](const Snapshot&) { control_answer(ctl, ref, 200, admin_rep_json(ctl->reg, false)); });
  };
  registry_add(reg, std::move(req));
}

void handle_rm(Control* ctl, AdminCallRef client, const std::string& body, const std::string& peer) {
  Registry* reg = ctl->reg;
  AdminBody parsed;
  if (!parse_body(ctl, client, body, &parsed)) return;
  if (parsed.weight_given) {
    fail(ctl, client, 400, "\"weight\" belongs to /add (the weight of the replicas it starts), not /rm");
    return;
  }
  long long n = parsed.n;
  std::vector<std::string> names = std::move(parsed.names);
  if (reg->closing) {  // a hurried shutdown closed the registry; it stops every replica itself
    fail(ctl, client, 503, "the load balancer is stopping");
    return;
  }
  if (static_cast<long long>(names.size()) > n) {
    fail(ctl, client, 400, "Length of hostname list is more than removable instances");
    return;
  }
  if (!ctl->reg->prov->can_scale()) {
    fail(ctl, client, 409, "the pool is static (--provisioner static): replicas cannot be removed");
    return;
  }
  std::vector<const Replica*> counted = registry_counted(reg);
  if (static_cast<size_t>(n) > counted.size()) {
    fail(ctl, client, 400, "cannot remove " + std::to_string(n) + " replicas: only " +
                             std::to_string(counted.size()) + " exist");
    return;
  }
  std::set<std::string> seen;
  for (const std::string& name : names) {
    if (!seen.insert(name).second) {
      fail(ctl, client, 400, "'" + name + "' is named twice");
      return;
    }
    bool found = false;
    for (const Replica* r : counted) found = found || r->name == name;
    if (!found) {
      fail(ctl, client, 404, "no replica named '" + name + "'");
      return;
    }
  }
  // The rest are chosen at random among the replicas not named (the assignment).
  std::vector<std::string> others;
  for (const Replica* r : counted)
    if (!seen.count(r->name)) others.push_back(r->name);
  while (static_cast<long long>(names.size()) < n) {
    size_t i = ctl->rng() % others.size();
    names.push_back(others[i]);
    others.erase(others.begin() + static_cast<long>(i));
  }
  LOG_INFO("admin: /rm from %s: removing %lld replicas (%s)", peer.c_str(), n, joined(names).c_str());
  registry_remove(reg, names);
  // Answered once no worker routes a new request to the removed replicas.
  std::string answer = admin_rep_json(reg, false);
  control_after_sync(ctl, [ctl, client, answer](const Snapshot&) { control_answer(ctl, client, 200, answer); });
}

// Constant-time equality of the token a client sent and the configured one (CRYPTO_memcmp-like): one
// pass over every byte of what was sent, each compared with the token's byte at the same place
// (cycling over the token), differences ORed together. The time depends only on the length of what
// was sent, never on where it first differs from the token nor on the token's length, and a length
// mismatch is ORed in too instead of returning early.
bool equal_constant_time(std::string_view given, std::string_view want) {
  uint64_t diff = given.size() ^ want.size();
  // Compare byte i of given with byte i of want, cycling over want, for every byte of given, so
  // the work is set by the request's length only.
  size_t wn = want.size();
  for (size_t i = 0; i < given.size(); i++) {
    uint8_t w = wn ? static_cast<uint8_t>(want[i % wn]) : 0;
    diff |= static_cast<uint8_t>(given[i]) ^ w;
  }
  // volatile: keep the compiler from turning the loop into an early exit.
  volatile uint64_t sink = diff;
  return sink == 0;
}

bool authorized(Control* ctl, const HttpHead& head) {
  if (ctl->cfg->admin_token.empty()) return true;
  std::string_view v;
  if (!http_head_get(head, "authorization", &v)) return false;
  static const std::string_view kScheme = "Bearer ";
  bool scheme_ok = v.size() >= kScheme.size() && v.substr(0, kScheme.size()) == kScheme;
  std::string_view given = scheme_ok ? v.substr(kScheme.size()) : v;
  bool token_ok = equal_constant_time(given, ctl->cfg->admin_token);
  return scheme_ok & token_ok;
}

// /readyz: 200 while at least one replica of the ring is healthy, else 503 with the reason (how
// many replicas there are and in which states), so an orchestrator stops sending traffic to a load
// balancer that would answer every request with 503. Read from snap, the routing every worker has
// (the registry may be ahead of it): "ready" means a request sent now finds a replica.
void admin_readyz(Control* ctl, AdminCallRef client, const Snapshot& snap) {
  size_t members = snap.members.size();
  size_t by_state[3] = {0, 0, 0};  // MemberState: usable, starting, dead
  for (const SnapMember& m : snap.members) by_state[static_cast<int>(m.state)]++;
  size_t healthy = by_state[static_cast<int>(MemberState::usable)];
  if (healthy > 0) {
    control_answer(ctl, client, 200, "{\"message\": \"ready: " + std::to_string(healthy) + " of " +
                                   std::to_string(members) + " replicas healthy\", \"status\": \"successful\"}");
    return;
  }
  std::string reason;
  if (members == 0) {
    reason = "not ready: the pool has no replicas";
  } else {
    reason = "not ready: none of " + std::to_string(members) + " replicas is healthy (";
    const std::pair<MemberState, const char*> states[] = {{MemberState::starting, "starting"},
                                                          {MemberState::dead, "dead"}};
    bool first = true;
    for (const auto& [state, name] : states) {
      if (by_state[static_cast<int>(state)] == 0) continue;
      reason += std::string(first ? "" : ", ") + std::to_string(by_state[static_cast<int>(state)]) + " " + name;
      first = false;
    }
    reason += ")";
  }
  control_answer(ctl, client, 503, http_error_json(reason));
}

}  // namespace

std::string admin_rep_json(const Registry* reg, bool verbose) {
  std::vector<const Replica*> counted = registry_counted(reg);
  json_t* msg = json_object();
  json_object_set_new(msg, "N", json_integer(static_cast<json_int_t>(counted.size())));
  json_t* list = json_array();
  for (const Replica* r : counted) json_array_append_new(list, json_string(r->name.c_str()));
  json_object_set_new(msg, "replicas", list);
  if (verbose) {
    json_t* details = json_array();
    for (const Replica* r : reg->replicas) {
      json_t* d = json_object();
      json_object_set_new(d, "name", json_string(r->name.c_str()));
      json_object_set_new(d, "state", json_string(replica_state_name(r->state)));
      json_object_set_new(d, "ring_id", json_integer(r->ring_id));
      json_object_set_new(d, "weight", json_integer(r->weight));
      std::string addr = r->inst.host + ":" + std::to_string(r->inst.port);
      json_object_set_new(d, "address", json_string(addr.c_str()));
      json_object_set_new(d, "id", json_string(r->inst.id.c_str()));
      json_object_set_new(d, "counts", json_boolean(r->counts));
      json_object_set_new(d, "inflight", json_integer(r->inflight));
      json_object_set_new(d, "requests", json_integer(static_cast<json_int_t>(r->requests)));
      json_object_set_new(d, "last_cause", json_string(r->last_cause.c_str()));
      json_array_append_new(details, d);
    }
    json_object_set_new(msg, "details", details);
    // The settings a reload (SIGHUP) may change, as in force now.
    const Config* c = reg->cfg;
    static const char* kAccessLog[] = {"off", "text", "json"};
    json_object_set_new(msg, "config",
                        json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:s, s:i, s:i, s:i}",
                                  "hb_interval_ms", static_cast<json_int_t>(c->hb_interval_ms),
                                  "hb_timeout_ms", static_cast<json_int_t>(c->hb_timeout_ms),
                                  "fall", static_cast<json_int_t>(c->fall),
                                  "rise", static_cast<json_int_t>(c->rise),
                                  "strikes", static_cast<json_int_t>(c->strikes),
                                  "retries", static_cast<json_int_t>(c->retries),
                                  "balance_factor", c->balance_factor,
                                  "log_level", c->log_level.c_str(),
                                  "access_log", kAccessLog[static_cast<int>(c->access_log)],
                                  "max_replicas", static_cast<json_int_t>(c->max_replicas),
                                  "connect_timeout_ms", static_cast<json_int_t>(c->connect_timeout_ms),
                                  "upstream_timeout_ms", static_cast<json_int_t>(c->upstream_timeout_ms)));
  }
  json_t* root = json_object();
  json_object_set_new(root, "message", msg);
  json_object_set_new(root, "status", json_string("successful"));
  return dump(root);
}

void admin_handle(Control* ctl, AdminCallRef client, const HttpHead& head, const std::string& body,
                  const std::string& peer) {
  std::string_view url = http_head_url(head);
  std::string_view path = http_url_path(url);
  llhttp_method_t m = head.method;
  bool get = m == HTTP_GET || m == HTTP_HEAD;
  // Every 405 names the allowed methods in Allow (RFC 9110 §15.5.6).
  auto wrong_method = [&](const char* allowed) {
    control_answer(ctl, client, 405,
                  http_error_json("method " + std::string(llhttp_method_name(m)) +
                                   " is not allowed on " + std::string(path) + " (use " + allowed + ")"),
                  "application/json", std::string("Allow: ") + allowed + "\r\n");
  };
  if (path == "/healthz") {  // liveness: the loop answers
    if (!get) return wrong_method("GET, HEAD");
    control_answer(ctl, client, 200, "{\"message\": \"ok\", \"status\": \"successful\"}");
    return;
  }
  if (path == "/readyz") {  // readiness: at least one replica can take a request
    if (!get) return wrong_method("GET, HEAD");
    // After a sync: "ready" means every worker routes to a healthy replica already.
    control_after_sync(ctl, [ctl, client](const Snapshot& s) { admin_readyz(ctl, client, s); });
    return;
  }
  if (path == "/dashboard") {  // a page without data: its API calls carry the token
    if (!get) return wrong_method("GET, HEAD");
    control_answer(ctl, client, 200, std::string(dashboard_html()), "text/html; charset=utf-8",
                   dashboard_headers());
    return;
  }
  if (!authorized(ctl, head)) {
    fail(ctl, client, 401, "admin routes need 'Authorization: Bearer <token>' (--admin-token)");
    return;
  }
  if (path == "/rep") {
    if (!get) return wrong_method("GET, HEAD");
    std::string_view v;
    bool verbose = http_url_query(url, "verbose", &v) && v != "0";
    // After a sync: the in-flight and request counts include what every worker did before.
    control_after_sync(ctl, [ctl, client, verbose](const Snapshot&) {
      control_answer(ctl, client, 200, admin_rep_json(ctl->reg, verbose));
    });
  } else if (path == "/add") {
    if (m != HTTP_POST) return wrong_method("POST");
    std::string_view v;
    handle_add(ctl, client, body, http_url_query(url, "dry_run", &v) && v != "0", peer);
  } else if (path == "/rm") {
    if (m != HTTP_DELETE) return wrong_method("DELETE");
    handle_rm(ctl, client, body, peer);
  } else if (path == "/metrics") {
    if (!get) return wrong_method("GET, HEAD");
    control_after_sync(ctl, [ctl, client](const Snapshot&) {
      control_answer(ctl, client, 200, metrics_render(*ctl), "text/plain; version=0.0.4");
    });
  } else if (path == "/route") {
    if (!get) return wrong_method("GET, HEAD");
    std::string key, error;
    if (!ring_view_key(ctl->cfg, url, &key, &error)) return fail(ctl, client, 400, error);
    // After a sync: the answer is about the routing every worker has.
    control_after_sync(ctl, [ctl, client, key](const Snapshot& s) {
      control_answer(ctl, client, 200, ring_view_route_json(ctl->cfg, s, key));
    });
  } else if (path == "/ring") {
    if (!get) return wrong_method("GET, HEAD");
    std::string_view v;
    bool arcs = !(http_url_query(url, "arcs", &v) && v == "0");
    control_after_sync(ctl, [ctl, client, arcs](const Snapshot& s) {
      control_answer(ctl, client, 200, ring_view_ring_json(s, arcs));
    });
  } else {
    fail(ctl, client, 404, "'" + std::string(path) + "' is not an admin route (/rep, /add, /rm, /metrics, /healthz, /readyz, /route, /ring, /dashboard)");
  }
}
