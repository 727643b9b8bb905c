#include "lb/control/registry.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <random>

#include "lb/control/health.h"
#include "lb/log.h"

namespace {

constexpr uint64_t kTickMs = 100;
// A replica that dies before it has been healthy this long died "early". From the second early
// death in a row of a ring id on, its next replacement waits (exponential backoff). One that had
// been healthy longer is replaced at once and clears the count.
constexpr uint64_t kStableMs = 5000;
constexpr uint64_t kHealBackoffBaseMs = 250;
// Several LBs on one pool: a ring id another LB won is not tried again for this long (its replica
// appears well within it), and an /add replica gives up after losing this many ring ids in a row.
constexpr uint64_t kClaimHoldMs = 30000;
constexpr uint32_t kClaimTriesMax = 16;

uint64_t now_ms(const Registry* reg) { return uv_now(reg->loop); }

void on_tick(uv_timer_t* t);

// Runs the tick in delay_ms (0: on the next loop iteration) unless it is due sooner anyway, so a
// dead replica is replaced as soon as its backoff allows instead of on the next 100 ms boundary.
void tick_within(Registry* reg, uint64_t delay_ms) {
  if (reg->closing || uv_timer_get_due_in(&reg->tick) <= delay_ms) return;
  uv_timer_start(&reg->tick, on_tick, delay_ms, kTickMs);
}

// Decides when the dead replica r (which counts toward N) may be replaced. After the k-th early
// death in a row of its ring id: at once for k = 1 (one death is not a crash loop: a replica killed
// under load is replaced without delay however young it was), then min(--heal-backoff-max,
// 250 ms × 2^(k-2)): 250, 500, 1000 ms... A replica that had been healthy for kStableMs is
// replaced at once and clears the count.
void schedule_heal(Registry* reg, Replica* r, ReplicaState old, uint64_t now) {
  if (!reg->cfg->heal || !reg->prov->can_scale() || reg->prov->heals_itself()) return;
  uint32_t& failures = reg->heal_failures[r->ring_id];
  bool stable = old == ReplicaState::healthy && now - r->state_since >= kStableMs;
  if (stable) {
    failures = 0;
    reg->heal_after[r->ring_id] = now;
  } else {
    failures++;
    uint64_t backoff =
        failures < 2 ? 0 : kHealBackoffBaseMs << std::min<uint32_t>(failures - 2, 20);
    backoff = std::min<uint64_t>(backoff, reg->cfg->heal_backoff_max_ms);
    reg->heal_after[r->ring_id] = now + backoff;
    LOG_WARN("replica slot %u: %s died %llu ms after its start (early deaths in a row: %u), next "
             "try in %llu ms", r->ring_id, r->name.c_str(),
             static_cast<unsigned long long>(now - r->created_at), failures,
             static_cast<unsigned long long>(backoff));
  }
  tick_within(reg, reg->heal_after[r->ring_id] - now);
}

// What the workers route by changed (a member, a state, an address): a new generation, which the
// control plane publishes at its next safe point (never from inside this call).
void routing_changed(Registry* reg) {
  reg->routing_gen++;
  if (reg->on_routing_changed) reg->on_routing_changed();
}

// Builds a new ring over every replica that is not draining, and swaps it in.
void rebuild_ring(Registry* reg) {
  std::vector<RingMember> members;
  std::vector<Replica*> order;
  for (Replica* r : reg->replicas) {
    if (r->state == ReplicaState::draining) continue;
    members.push_back(RingMember{r->ring_id, r->name, r->weight});
    order.push_back(r);
  }
  std::string err;
  RingPtr ring = ring_build(reg->cfg->ring, members, &err);
  // Always-on invariant check. config_parse proved the ring holds --max-replicas members, and every
  // way in keeps the members within it (admin.cc admits /add against registry_members(), adoption
  // stops what is over the limit), so no input reaches this abort.
  if (!ring) {
    LOG_ERROR("CHECK failed: ring rebuild over %zu members (--max-replicas %u): %s", members.size(),
              reg->cfg->max_replicas, err.c_str());
    abort();
  }
  reg->ring = std::shared_ptr<const Ring>(ring.release(), RingDeleter());
  reg->ring_members = std::move(order);
  routing_changed(reg);
}

Replica* new_replica(Registry* reg, uint32_t ring_id, const std::string& name) {
  Replica* r = new Replica();
  r->reg = reg;
  r->uid = ++reg->next_uid;
  reg->by_uid[r->uid] = r;
  r->ring_id = ring_id;
  r->name = name;
  r->created_at = r->state_since = now_ms(reg);
  if (ring_id >= reg->heal_failures.size()) {
    reg->heal_failures.resize(ring_id + 1, 0);
    reg->heal_after.resize(ring_id + 1, 0);
  }
  return r;
}

void check_adds(Registry* reg);

// The lowest ring id no replica that is not draining holds (draining ones are out of the ring) and
// that no other LB won lately (claimed_elsewhere).
uint32_t lowest_free_id(const Registry* reg) {
  std::vector<uint8_t> used(reg->replicas.size() + reg->claimed_elsewhere.size() + 2, 0);
  for (const Replica* r : reg->replicas)
    if (r->state != ReplicaState::draining && r->ring_id < used.size()) used[r->ring_id] = 1;
  uint64_t now = now_ms(reg);
  for (const auto& kv : reg->claimed_elsewhere)
    if (kv.second > now && kv.first < used.size()) used[kv.first] = 1;
  uint32_t id = 1;
  while (used[id]) id++;
  return id;
}

void start_instance(Replica* r);
void claim_lost(Replica* r, const std::string& error);

void name_hold(Registry* reg, Replica* r) {
  if (r->name_held) return;
  r->name_held = true;
  reg->held_names[r->name]++;
}

// The instance of removed replica r no longer holds its name: a replica of an /add that waits for
// the name starts now.
void name_release(Registry* reg, Replica* r) {
  if (!r->name_held) return;
  r->name_held = false;
  auto it = reg->held_names.find(r->name);
  if (it == reg->held_names.end() || --it->second > 0) return;
  reg->held_names.erase(it);
  if (reg->closing) return;
  std::vector<Replica*> list = reg->replicas;
  for (Replica* w : list) {
    if (w->wait_name && w->name == r->name && !w->removed) {
      w->wait_name = false;
      LOG_INFO("replica %s: the name is free again, starting", w->name.c_str());
      start_instance(w);
    }
  }
}

// Runs r's on_gone (once): its instance is stopped or never ran.
void gone(Replica* r) {
  if (!r->on_gone) return;
  std::function<void()> cb = std::move(r->on_gone);
  r->on_gone = nullptr;
  cb();
}

void set_state(Replica* r, ReplicaState s, const std::string& cause) {
  if (r->state == s) return;
  Registry* reg = r->reg;
  uint64_t now = now_ms(reg);
  // Dead is a warning (the operator may have to act: a static backend that never came up stays
  // dead); the other transitions are news.
  log_msg(s == ReplicaState::dead ? LogLevel::warn : LogLevel::info,
          "replica %s: %s -> %s (%s) after %llu ms", r->name.c_str(), replica_state_name(r->state),
          replica_state_name(s), cause.c_str(), static_cast<unsigned long long>(now - r->state_since));
  ReplicaState old = r->state;
  if (s == ReplicaState::dead && r->counts) schedule_heal(reg, r, old, now);
  r->state = s;
  r->state_since = now;
  if (s == ReplicaState::healthy) {
    r->usable_since_ms = r->ramp ? uv_hrtime() / 1000000 : 0;
    r->ramp = true;
  }
  if (!cause.empty() && s != ReplicaState::healthy) r->last_cause = cause;
  r->hb_ok = r->hb_fail = r->strikes = 0;
  routing_changed(reg);
  if (s == ReplicaState::draining) r->drain_gen = reg->routing_gen;
  check_adds(reg);
}

void on_resolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
  Replica* r = static_cast<Replica*>(req->data);
  delete req;
  if (!r->removed) {
    if (status == 0 && res != nullptr) {
      memcpy(&r->addr, res->ai_addr, res->ai_addrlen);
      reinterpret_cast<sockaddr_in*>(&r->addr)->sin_port = htons(r->inst.port);
      r->addr_ok = true;
      health_start(r);
    } else {
      set_state(r, ReplicaState::dead, "cannot resolve " + r->inst.host + ": " + uv_strerror(status));
    }
  }
  if (res) uv_freeaddrinfo(res);
  replica_unref(r);
}

// Records where the replica listens and starts its heartbeats.
void replica_attach(Replica* r, const ReplicaInstance& inst) {
  r->inst = inst;
  std::string host = inst.host.empty() ? "127.0.0.1" : inst.host;
  if (uv_ip4_addr(host.c_str(), inst.port, reinterpret_cast<sockaddr_in*>(&r->addr)) == 0 ||
      uv_ip6_addr(host.c_str(), inst.port, reinterpret_cast<sockaddr_in6*>(&r->addr)) == 0) {
    r->addr_ok = true;
    health_start(r);
    return;
  }
  uv_getaddrinfo_t* req = new uv_getaddrinfo_t;
  req->data = r;
  replica_ref(r);
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (uv_getaddrinfo(r->reg->loop, req, on_resolved, host.c_str(), nullptr, &hints) != 0) {
    delete req;
    replica_unref(r);
    set_state(r, ReplicaState::dead, "cannot resolve " + host);
  }
}

void retire(Replica* r, const char* why);

void start_instance(Replica* r) {
  Registry* reg = r->reg;
  replica_ref(r);
  r->start_pending = true;
  reg->prov->start(ReplicaSpec{r->name, r->ring_id, r->weight, r->replaces_inst},
                   [r](int status, const std::string& error, const ReplicaInstance& inst) {
                     Registry* reg = r->reg;
                     r->start_pending = false;
                     if (r->removed || reg->closing) {
                       // Started after /add was rolled back or registry_close stopped the others:
                       // nobody else knows it, so stop it now (the provisioner's close waits).
                       // on_gone (a rollback's answer) and the name wait for the stop.
                       if (status == 0) {
                         replica_ref(r);
                         reg->prov->stop(inst, [r](int, const std::string&) {
                           name_release(r->reg, r);
                           gone(r);
                           replica_unref(r);
                         });
                       } else {
                         name_release(reg, r);
                         gone(r);
                       }
                     } else if (r->state == ReplicaState::draining) {
                       // Removed by /rm while it was starting: it never served; stop it now.
                       r->inst = inst;
                       retire(r, "removed by /rm");
                     } else if (status == -EBUSY) {
                       claim_lost(r, error);
                     } else if (status != 0) {
                       r->start_status = status;
                       set_state(r, ReplicaState::dead, error);
                     } else {
                       reg->appeared.erase(r->ring_id);  // this start won the id: none can be
                       replica_attach(r, inst);
                     }
                     replica_unref(r);
                   });
}

// Takes r out of the registry for good: no heartbeats, no pooled connections, its instance stopped.
// r->on_gone runs once the instance is stopped, or at once when there is none and no start of one
// is in flight (start_instance's callback runs it then).
void retire(Replica* r, const char* why) {
  Registry* reg = r->reg;
  r->counts = false;
  r->removed = true;
  health_stop(r);
  reg->by_uid.erase(r->uid);
  reg->replicas.erase(std::remove(reg->replicas.begin(), reg->replicas.end(), r), reg->replicas.end());
  if (!r->inst.id.empty() && !r->stop_requested) {
    r->stop_requested = true;
    replica_ref(r);
    std::string name = r->name;
    reg->prov->stop(r->inst, [r, why](int status, const std::string& error) {
      if (status != 0) LOG_WARN("replica %s: stop failed: %s", r->name.c_str(), error.c_str());
      else LOG_INFO("replica %s: stopped (%s)", r->name.c_str(), why);
      name_release(r->reg, r);
      gone(r);
      replica_unref(r);
    });
  } else if (!r->start_pending) {
    name_release(reg, r);
    gone(r);
  }
  replica_unref(r);  // the registry's reference
}

// A dead replica is replaced by a new one that takes over its ring id (and its place in /rep).
void replace(Registry* reg, Replica* dead) {
  std::string name =
      reg->cfg->heal_name == HealName::same ? dead->name : registry_random_name(reg);
  Replica* r = new_replica(reg, dead->ring_id, name);
  r->counts = true;
  r->replaces_uid = dead->uid;
  r->replaces_inst = dead->inst.id;
  r->weight = dead->weight;  // same ring id and weight: the ring itself does not change
  auto it = std::find(reg->replicas.begin(), reg->replicas.end(), dead);
  *it = r;  // the same place in /rep
  for (Replica*& m : reg->ring_members)
    if (m == dead) m = r;  // same ring id: the ring itself does not change
  routing_changed(reg);
  reg->heals++;
  LOG_INFO("replica %s: replaced by %s (ring id %u)", dead->name.c_str(), name.c_str(), r->ring_id);
  if (reg->cfg->heal_name == HealName::same && !dead->inst.id.empty()) {
    // The name must be free before the replacement can take it: stop first, then start.
    dead->stop_requested = true;
    replica_ref(dead);
    replica_ref(r);
    reg->prov->stop(dead->inst, [r, dead](int, const std::string&) {
      if (!r->removed && !r->reg->closing) start_instance(r);
      replica_unref(dead);
      replica_unref(r);
    });
    retire(dead, "replaced");
    return;
  }
  retire(dead, "replaced");
  start_instance(r);
}

void check_adds(Registry* reg) {
  auto& adds = reg->adds;
  for (size_t i = 0; i < adds.size();) {
    PendingAdd& a = adds[i];
    const Replica* failed = nullptr;
    bool all_healthy = true;
    for (Replica* r : a.replicas) {
      if (r->state == ReplicaState::dead) failed = r;
      if (r->state != ReplicaState::healthy) all_healthy = false;
    }
    if (!failed && !all_healthy) {
      i++;
      continue;
    }
    PendingAdd done = std::move(a);
    adds.erase(adds.begin() + static_cast<long>(i));
    if (failed) {
      std::string cause = "replica '" + failed->name + "' failed to start: " + failed->last_cause;
      // A name taken by a container the pool does not own is the client's to fix: 409, as for a
      // replica name that exists. Everything else (image missing, engine down) is the server's.
      int http_status = failed->start_status == -EEXIST ? 409 : 500;
      LOG_WARN("/add failed, removing the %zu replicas it started: %s", done.replicas.size(), cause.c_str());
      // The answer waits until every replica of the request is stopped (DESIGN: all or nothing,
      // and the client hears of the failure once nothing of it is left).
      auto left = std::make_shared<size_t>(done.replicas.size() + 1);
      auto req = std::shared_ptr<AddRequest>(std::move(done.req));
      auto answer = [left, req, http_status, cause]() {
        if (--*left == 0) req->done(http_status, cause);
      };
      for (Replica* r : done.replicas) {
        r->on_gone = answer;
        retire(r, "/add rolled back");
      }
      rebuild_ring(reg);
      answer();
    } else {
      for (Replica* r : done.replicas) r->counts = true;
      done.req->done(200, "");
    }
    i = 0;  // the list changed
  }
}

void on_appear(Registry* reg, const ReplicaInstance& inst);

// Instances of other LBs set aside while a start of this LB held their ring id: once no start of
// that id is in flight any more (it failed otherwise than by losing the claim, or the replica was
// removed), they are offered again.
void offer_appeared(Registry* reg) {
  std::vector<ReplicaInstance> ready;
  for (auto it = reg->appeared.begin(); it != reg->appeared.end();) {
    bool held = false;
    for (const Replica* r : reg->replicas)
      held = held || (r->ring_id == it->first && r->state != ReplicaState::draining &&
                      (r->start_pending || r->inst.id.empty() ||
                       (r->state == ReplicaState::dead && !r->counts)));
    if (held) {
      ++it;
      continue;
    }
    ready.push_back(it->second);
    it = reg->appeared.erase(it);
  }
  for (const ReplicaInstance& inst : ready) on_appear(reg, inst);
}

void on_tick(uv_timer_t* t) {
  Registry* reg = static_cast<Registry*>(t->data);
  uint64_t now = now_ms(reg);
  if (!reg->appeared.empty()) offer_appeared(reg);
  // retire/replace change the vector, and retire frees a replica nothing else holds (one whose
  // start failed, one that waited for its name): the copy holds a reference on each until the
  // loop is done, so `r->removed` below never reads a freed replica.
  std::vector<Replica*> list = reg->replicas;
  for (Replica* r : list) replica_ref(r);
  for (Replica* r : list) {
    if (r->removed) continue;
    switch (r->state) {
      case ReplicaState::starting:
        if (now - r->state_since >= reg->cfg->start_timeout_ms)
          set_state(r, ReplicaState::dead, "no heartbeat from " + r->inst.host + ":" +
                                               std::to_string(r->inst.port) + " within --start-timeout");
        break;
      case ReplicaState::dead:
        // A provisioner that heals itself (swarm) brings it back under the same id: no replacement.
        if (reg->cfg->heal && r->counts && reg->prov->can_scale() && !reg->prov->heals_itself() &&
            now >= reg->heal_after[r->ring_id])
          replace(reg, r);
        break;
      case ReplicaState::draining:
        // Drained once every worker routes without it and none has an exchange on it (the
        // in-flight counts of their reports at or after that generation).
        if ((r->inflight == 0 && reg->routing_gen_everywhere >= r->drain_gen) ||
            now - r->state_since >= reg->cfg->drain_timeout_ms)
          retire(r, "removed by /rm");
        break;
      case ReplicaState::healthy:
        break;
    }
  }
  for (Replica* r : list) replica_unref(r);
  // The next replacement due before the next periodic tick gets a tick of its own, on time.
  if (reg->cfg->heal && reg->prov->can_scale()) {
    for (Replica* r : reg->replicas)
      if (r->state == ReplicaState::dead && r->counts && reg->heal_after[r->ring_id] > now)
        tick_within(reg, reg->heal_after[r->ring_id] - now);
  }
}

void on_exit(Registry* reg, const std::string& id, const std::string& cause) {
  for (Replica* r : reg->replicas) {
    if (r->inst.id == id && !r->removed && r->state != ReplicaState::draining) {
      set_state(r, ReplicaState::dead, "exited: " + cause);
      return;
    }
  }
}

// r (starting, without an instance) routes to inst, another LB's instance of its ring id.
void adopt_into(Replica* r, const ReplicaInstance& inst) {
  Registry* reg = r->reg;
  r->await_claim = false;
  r->foreign = true;
  r->name = inst.name;
  r->state_since = now_ms(reg);  // --start-timeout counts from here
  bool reweigh = r->weight != inst.weight;
  r->weight = inst.weight;
  if (reweigh) rebuild_ring(reg);
  else routing_changed(reg);  // the name in the snapshot
  LOG_INFO("replica %s: started by another load balancer (ring id %u), routed here once healthy",
           inst.name.c_str(), inst.ring_id);
  replica_attach(r, inst);
}

// Dead replica `dead` is replaced by inst, another LB's replacement under its ring id: as replace()
// does, but the instance runs already.
void replace_with(Registry* reg, Replica* dead, const ReplicaInstance& inst) {
  Replica* r = new_replica(reg, dead->ring_id, inst.name);
  r->counts = true;
  r->replaces_uid = dead->uid;
  r->weight = dead->weight;
  auto it = std::find(reg->replicas.begin(), reg->replicas.end(), dead);
  *it = r;
  for (Replica*& m : reg->ring_members)
    if (m == dead) m = r;
  reg->heals++;
  LOG_INFO("replica %s: replaced by %s of another load balancer (ring id %u)", dead->name.c_str(),
           inst.name.c_str(), r->ring_id);
  retire(dead, "replaced by another load balancer");  // its container: removed if still there
  adopt_into(r, inst);
}

// The provisioner's on_appear: another LB's replica runs (its /add, or its replacement of a dead
// one). Added as an /add would add it, or routed to by the replica of its ring id that waits.
void on_appear(Registry* reg, const ReplicaInstance& inst) {
  if (reg->closing) return;
  for (Replica* r : reg->replicas)
    if (r->inst.id == inst.id) return;
  reg->claimed_elsewhere.erase(inst.ring_id);
  Replica* same = nullptr;
  for (Replica* r : reg->replicas)
    if (!r->removed && r->state != ReplicaState::draining && r->ring_id == inst.ring_id) same = r;
  if (same != nullptr) {
    if (same->await_claim) return adopt_into(same, inst);
    // This LB's start of the id is in flight (or waits for the dead one's stop): its claim will
    // lose to inst, and takes inst then.
    // An /add of this LB that failed (and is being rolled back) holds the id a moment longer: the
    // tick offers inst again once it is gone.
    if (same->start_pending || (same->state == ReplicaState::starting && same->inst.id.empty()) ||
        (same->state == ReplicaState::dead && !same->counts)) {
      reg->appeared[inst.ring_id] = inst;
      return;
    }
    if (same->state == ReplicaState::dead) return replace_with(reg, same, inst);
    LOG_WARN("replica %s of another load balancer has ring id %u, which %s holds here: not routed",
             inst.name.c_str(), inst.ring_id, same->name.c_str());
    return;
  }
  if (registry_find_live(reg, inst.name) != nullptr ||
      registry_members(reg) >= reg->cfg->max_replicas) {
    LOG_WARN("replica %s (ring id %u) of another load balancer: not routed here (%s)",
             inst.name.c_str(), inst.ring_id,
             registry_find_live(reg, inst.name) ? "a replica of that name runs here"
                                                : "over --max-replicas");
    return;
  }
  Replica* r = new_replica(reg, inst.ring_id, inst.name);
  r->weight = inst.weight;
  r->counts = true;
  r->foreign = true;
  reg->replicas.push_back(r);
  LOG_INFO("replica %s: added by another load balancer (ring id %u), routed here once healthy",
           inst.name.c_str(), inst.ring_id);
  rebuild_ring(reg);
  replica_attach(r, inst);
}

// The provisioner's on_gone: another LB removed the replica by /rm. Out of the ring at once and
// drained here; that LB stops it (this one never does: stop_requested).
void on_gone_elsewhere(Registry* reg, const std::string& id, const std::string& cause) {
  if (reg->closing) return;
  for (Replica* r : reg->replicas) {
    // A replica of an /add still in progress here is left to that /add (its stop fails it).
    if (r->inst.id != id || r->removed || !r->counts || r->state == ReplicaState::draining) continue;
    r->counts = false;
    r->stop_requested = true;
    set_state(r, ReplicaState::draining, cause);
    health_stop(r);
    rebuild_ring(reg);
    return;
  }
}

// Another LB won r's ring id (the provisioner's start said -EBUSY). A replacement follows that
// LB's replacement; an /add (or initial) replica tries the next free ring id.
void claim_lost(Replica* r, const std::string& error) {
  Registry* reg = r->reg;
  auto it = reg->appeared.find(r->ring_id);
  bool have = it != reg->appeared.end();
  ReplicaInstance inst;
  if (have) {
    inst = it->second;
    reg->appeared.erase(it);
  }
  if (r->replaces_uid != 0) {
    LOG_INFO("replica %s: %s; routes to that replacement once it appears", r->name.c_str(),
             error.c_str());
    if (have) return adopt_into(r, inst);
    r->await_claim = true;
    r->state_since = now_ms(reg);
    return;
  }
  if (++r->claim_tries > kClaimTriesMax) {
    r->start_status = -EBUSY;
    set_state(r, ReplicaState::dead, error);
    return;
  }
  uint32_t lost = r->ring_id;
  reg->claimed_elsewhere[lost] = now_ms(reg) + kClaimHoldMs;
  r->ring_id = 0;  // not counted by lowest_free_id
  uint32_t id = lowest_free_id(reg);
  r->ring_id = id;
  if (id >= reg->heal_failures.size()) {
    reg->heal_failures.resize(id + 1, 0);
    reg->heal_after.resize(id + 1, 0);
  }
  LOG_INFO("replica %s: %s; tries ring id %u", r->name.c_str(), error.c_str(), id);
  rebuild_ring(reg);
  if (have) on_appear(reg, inst);
  start_instance(r);
}

}  // namespace

const char* replica_state_name(ReplicaState s) {
  switch (s) {
    case ReplicaState::starting: return "starting";
    case ReplicaState::healthy: return "healthy";
    case ReplicaState::dead: return "dead";
    case ReplicaState::draining: return "draining";
  }
  return "?";
}

bool registry_valid_name(const std::string& name) {
  if (name.empty() || name.size() > 63 || !isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char ch : name)
    if (!isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-') return false;
  return true;
}

std::string registry_random_name(const Registry* reg) {
  static std::mt19937_64 rng(uv_hrtime() ^ static_cast<uint64_t>(getpid()));
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (;;) {
    std::string name = "replica-";
    for (int i = 0; i < 6; i++) name.push_back(alphabet[rng() % 36]);
    if (registry_find(reg, name) == nullptr) return name;
  }
}

size_t registry_members(const Registry* reg) {
  size_t n = 0;
  for (const Replica* r : reg->replicas)
    if (r->state != ReplicaState::draining) n++;
  return n;
}

uint64_t registry_total_weight(const Registry* reg) {
  uint64_t total = 0;
  for (const Replica* r : reg->replicas)
    if (r->state != ReplicaState::draining) total += r->weight;
  return total;
}

const Replica* registry_find_live(const Registry* reg, const std::string& name) {
  for (const Replica* r : reg->replicas)
    if (r->name == name && r->state != ReplicaState::draining) return r;
  return nullptr;
}

size_t registry_healthy(const Registry* reg) {
  size_t n = 0;
  for (const Replica* r : reg->ring_members)
    if (r->state == ReplicaState::healthy) n++;
  return n;
}

std::vector<const Replica*> registry_counted(const Registry* reg) {
  std::vector<const Replica*> out;
  for (const Replica* r : reg->replicas)
    if (r->counts) out.push_back(r);
  return out;
}

const Replica* registry_find(const Registry* reg, const std::string& name) {
  for (const Replica* r : reg->replicas)
    if (r->name == name) return r;
  return nullptr;
}

Replica* registry_by_uid(Registry* reg, uint64_t uid) {
  auto it = reg->by_uid.find(uid);
  return it == reg->by_uid.end() ? nullptr : it->second;
}

void registry_heartbeat_result(Replica* r, bool ok, const std::string& cause) {
  const Config* cfg = r->reg->cfg;
  if (ok) {
    r->hb_fail = 0;
    if (r->state == ReplicaState::starting || r->state == ReplicaState::dead) {
      // A dead replica that healing replaces ignores its heartbeats; one that no provisioner
      // replaces (a static backend, a swarm task the engine restarted) comes back after --rise
      // good ones.
      if (r->state == ReplicaState::dead && cfg->heal && r->counts && r->reg->prov->can_scale() &&
          !r->reg->prov->heals_itself())
        return;
      if (++r->hb_ok >= cfg->rise) set_state(r, ReplicaState::healthy, "heartbeat ok");
    }
    return;
  }
  r->hb_ok = 0;
  if (r->state == ReplicaState::healthy && ++r->hb_fail >= cfg->fall)
    set_state(r, ReplicaState::dead, std::to_string(r->hb_fail) + " heartbeats failed: " + cause);
}

void registry_passive_report(Replica* r, bool ok_seen, uint32_t strikes, const std::string& cause) {
  if (ok_seen) r->strikes = 0;
  if (strikes == 0 || r->state != ReplicaState::healthy) return;
  r->strikes += strikes;
  if (r->strikes >= r->reg->cfg->strikes)
    set_state(r, ReplicaState::dead, std::to_string(r->strikes) + " requests failed: " + cause);
}

void replica_unref(Replica* r) {
  if (--r->refs == 0) delete r;
}

void registry_add(Registry* reg, std::unique_ptr<AddRequest> req) {
  if (reg->closing) {  // a hurried shutdown closed the registry while the proxy still answers
    req->done(503, "the load balancer is stopping");
    return;
  }
  PendingAdd a;
  for (const std::string& name : req->names) {
    Replica* r = new_replica(reg, lowest_free_id(reg), name);
    r->weight = req->weight;
    reg->heal_failures[r->ring_id] = 0;  // a fresh replica on this id: no crash loop behind it
    reg->heal_after[r->ring_id] = 0;
    r->wait_name = reg->held_names.count(name) > 0;
    if (r->wait_name)
      LOG_INFO("replica %s: waits until the removed replica of that name has released it", name.c_str());
    reg->replicas.push_back(r);
    a.replicas.push_back(r);
  }
  a.req = std::move(req);
  rebuild_ring(reg);
  std::vector<Replica*> started = a.replicas;
  reg->adds.push_back(std::move(a));
  for (Replica* r : started)
    if (!r->wait_name) start_instance(r);
}

void registry_remove(Registry* reg, const std::vector<std::string>& names) {
  if (reg->closing) return;  // every replica is being stopped already
  for (const std::string& name : names) {
    for (Replica* r : reg->replicas) {
      if (r->name == name && r->counts) {
        r->counts = false;
        set_state(r, ReplicaState::draining, "removed by /rm");
        health_stop(r);
        // The name is free once /rm answers: a provisioner whose instances hold names (docker)
        // renames this one; until it has, an /add of the name waits for it.
        // The name is held before release_name is asked, so its callback (whenever it runs)
        // always finds the hold it releases.
        if (!r->inst.id.empty()) {
          replica_ref(r);
          name_hold(reg, r);
          bool held = reg->prov->release_name(r->inst, [r](int status, const std::string& error) {
            if (status == 0) name_release(r->reg, r);
            else LOG_WARN("replica %s: %s; the name is free once it is stopped", r->name.c_str(), error.c_str());
            replica_unref(r);
          });
          if (!held) {  // instances of this provisioner hold no names: free at once
            name_release(reg, r);
            replica_unref(r);
          }
        } else if (r->start_pending) {
          name_hold(reg, r);  // released when the start calls back and the instance is stopped
        }
        break;
      }
    }
  }
  rebuild_ring(reg);
}

int registry_init(Registry* reg, uv_loop_t* loop, const Config* cfg, Provisioner* prov, std::string* err) {
  reg->loop = loop;
  reg->cfg = cfg;
  reg->prov = prov;
  rebuild_ring(reg);
  uv_timer_init(loop, &reg->tick);
  reg->tick.data = reg;
  uv_timer_start(&reg->tick, on_tick, kTickMs, kTickMs);
  prov->on_exit = [reg](const std::string& id, const std::string& cause) { on_exit(reg, id, cause); };
  prov->on_appear = [reg](const ReplicaInstance& inst) { on_appear(reg, inst); };
  prov->on_gone = [reg](const std::string& id, const std::string& cause) {
    on_gone_elsewhere(reg, id, cause);
  };
  (void)err;
  prov->list([reg](int status, const std::string& error, const std::vector<ReplicaInstance>& running) {
    if (reg->closing) return;
    if (status != 0) LOG_WARN("could not list existing replicas: %s", error.c_str());
    std::vector<uint8_t> id_taken;
    for (const ReplicaInstance& inst : running) {
      bool appeared_already = false;  // on_appear was quicker than the list (another LB's start)
      for (const Replica* r : reg->replicas) appeared_already = appeared_already || r->inst.id == inst.id;
      if (appeared_already) continue;
      bool duplicate = inst.ring_id < id_taken.size() && id_taken[inst.ring_id];
      if (registry_find(reg, inst.name) != nullptr || inst.ring_id == 0 || duplicate ||
          reg->replicas.size() >= reg->cfg->max_replicas) {
        // Not adoptable: a second holder of a name or ring id, or one over --max-replicas (the
        // ring could not place it). The pool owns it, so it is stopped rather than left behind.
        LOG_WARN("replica %s (ring id %u): not adopted (%s), stopping it", inst.name.c_str(),
                 inst.ring_id, duplicate || inst.ring_id == 0 ? "its ring id is taken or invalid"
                               : registry_find(reg, inst.name) ? "its name is taken"
                                                                : "over --max-replicas");
        if (reg->prov->can_scale()) reg->prov->stop(inst, [](int, const std::string&) {});
        continue;
      }
      if (inst.ring_id >= id_taken.size()) id_taken.resize(inst.ring_id + 1, 0);
      id_taken[inst.ring_id] = 1;
      Replica* r = new_replica(reg, inst.ring_id, inst.name);
      r->weight = inst.weight;  // an LB restart moves no key of a weighted replica
      r->counts = true;
      r->ramp = false;  // an initial replica: no slow start the first time it is healthy
      reg->replicas.push_back(r);
      if (reg->prov->can_scale()) LOG_INFO("replica %s: adopted (ring id %u)", inst.name.c_str(), inst.ring_id);
      replica_attach(r, inst);
    }
    std::vector<Replica*> fresh;
    if (reg->prov->can_scale()) {
      for (uint32_t i = 1; reg->replicas.size() < reg->cfg->replicas; i++) {
        std::string name = "server" + std::to_string(i);
        if (registry_find(reg, name) != nullptr) continue;
        Replica* r = new_replica(reg, lowest_free_id(reg), name);
        r->counts = true;
        r->ramp = false;
        reg->replicas.push_back(r);
        fresh.push_back(r);
      }
    }
    rebuild_ring(reg);
    for (Replica* r : fresh) start_instance(r);
  });
  return 0;
}

void registry_close(Registry* reg, bool keep_counted, std::function<void()> on_closed) {
  if (reg->closing) return;
  reg->closing = true;
  reg->on_closed = std::move(on_closed);
  uv_timer_stop(&reg->tick);
  auto& adds = reg->adds;
  for (PendingAdd& a : adds) a.req->done(503, "the load balancer is stopping");
  adds.clear();
  auto pending = std::make_shared<int>(1);
  auto finish = [reg, pending]() {
    if (--*pending > 0) return;
    reg->prov->close([reg]() {
      uv_close(reinterpret_cast<uv_handle_t*>(&reg->tick), [](uv_handle_t* h) {
        Registry* reg = static_cast<Registry*>(h->data);
        if (reg->on_closed) reg->on_closed();
      });
    });
  };
  std::vector<Replica*> list = reg->replicas;
  reg->replicas.clear();
  rebuild_ring(reg);  // empty: the workers route nothing more (a hurried stop cuts in-flight work)
  for (Replica* r : list) {
    // Another LB's replica (foreign) is that LB's to stop: an LB that stops never takes down the
    // replicas it merely routes to.
    bool keep = (keep_counted && r->counts) || (r->foreign && r->state != ReplicaState::draining);
    r->removed = true;
    r->counts = false;
    health_stop(r);
    reg->by_uid.erase(r->uid);
    if (keep && !r->inst.id.empty())
      LOG_INFO("replica %s: left running for the next load balancer (--on-exit keep, ring id %u)",
               r->name.c_str(), r->ring_id);
    if (!keep && !r->inst.id.empty() && !r->stop_requested && reg->prov->can_scale()) {
      r->stop_requested = true;
      ++*pending;
      reg->prov->stop(r->inst, [r, finish](int status, const std::string& error) {
        if (status != 0) LOG_WARN("replica %s: stop failed: %s", r->name.c_str(), error.c_str());
        replica_unref(r);
        finish();
      });
    } else {
      replica_unref(r);
    }
  }
  finish();
}
