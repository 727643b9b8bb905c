// The swarm provisioner's view of its pool: labels, ring id claims, service updates, helpers.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "lb/log.h"
#include "lb/provision/swarm_impl.h"
#include "ring/ring.h"  // kRingMaxWeight

namespace swarm_impl {

// ---- small helpers ----

// A replica name as the registry accepts it: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}.
bool replica_name_ok(const std::string& n) {
  return !n.empty() &&
         (n.size() == 1 ? isalnum(static_cast<unsigned char>(n[0])) != 0 : engine_valid_name(n));
}

// A free port of the range (not labelled on a service of the pool, bindable now) for ring id
// ring_id; 0 when none is. Ports follow ring ids, which the engine keeps unique in the pool (the
// claim), so two LBs of one pool that start replicas at the same moment do not pick one port: the
// range is cut in 8 generations of span/8 ports, and ring id k takes its port of the first
// generation that is free (a replica of id k that still drains after /rm holds the first, so its
// successor takes the second). Only when all 8 are taken does it scan the range.
uint16_t port_reserve(ProvSwarm* p, uint32_t ring_id) {
  uint32_t span = static_cast<uint32_t>(p->cfg.port_max) - p->cfg.port_min + 1;
  uint32_t gen = span >= 8 ? span / 8 : span;
  uint32_t k = ring_id > 0 ? (ring_id - 1) % gen : 0;
  auto take = [p](uint32_t offset) -> uint16_t {
    uint16_t port = static_cast<uint16_t>(p->cfg.port_min + offset);
    if (p->ports_used.count(port) || !engine_port_bindable(port)) return 0;
    p->ports_used.insert(port);
    return port;
  };
  for (uint32_t g = 0; g < 8 && k + g * gen < span; g++)
    if (uint16_t port = take(k + g * gen)) return port;
  for (uint32_t i = 0; i < span; i++)
    if (uint16_t port = take((k + i) % span)) return port;
  return 0;
}

std::string pool_label(const ProvSwarm* p) {
  return std::string(kLabelPool) + "=" + p->cfg.pool;
}

// Removes a service of the pool (DELETE /services/ID), quiet first: its task's death is ours.
void remove_service(ProvSwarm* p, const std::string& id, DockerCallCb cb) {
  engine_quiet_add(&p->eng, id);
  docker_api_call(p->eng.api, "DELETE", "/services/" + docker_url_escape(id), nullptr,
                  p->cfg.call_timeout_ms, std::move(cb));
}

// When the manager created svc, as a string that sorts in time order (the fraction padded to 9
// digits: the engine trims trailing zeros), then its id: the order of a ring id claim.
std::string created_key(json_t* svc) {
  std::string t = docker_json_str(svc, "CreatedAt");
  size_t dot = t.find('.'), z = t.find('Z');
  if (z == std::string::npos) z = t.size();
  std::string whole = t.substr(0, dot == std::string::npos ? z : dot);
  std::string frac = dot == std::string::npos ? "" : t.substr(dot + 1, z - dot - 1);
  frac.resize(9, '0');
  return whole + "." + frac + " " + docker_json_str(svc, "ID");
}

// Spec.Mode.Replicated.Replicas: 0 while the service's ring id claim is being checked (start
// creates it without a task, so a service that loses its claim never runs one), 1 afterwards.
json_int_t task_count(json_t* svc) {
  return json_integer_value(json_object_get(
      json_object_get(json_object_get(json_object_get(svc, "Spec"), "Mode"), "Replicated"),
      "Replicas"));
}

// A service still without a task this long after its creation: its LB stopped between the create
// and the claim's outcome. It holds no claim, and list() removes it.
static const int kClaimStaleS = 60;

bool stale_claim(json_t* svc) {
  if (task_count(svc) != 0) return false;
  time_t t = time(nullptr) - kClaimStaleS;
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000000000", &tm);
  return created_key(svc) < std::string(buf);
}

bool draining(json_t* svc) {
  return json_object_get(json_object_get(json_object_get(svc, "Spec"), "Labels"), kLabelDraining) !=
         nullptr;
}

// A service of the pool as a replica instance, from its labels (list and re-list). False when its
// labels do not make one (not ringlb's, or damaged).
bool service_instance(const ProvSwarm* p, json_t* svc, ReplicaInstance* inst) {
  json_t* spec = json_object_get(svc, "Spec");
  json_t* labels = json_object_get(spec, "Labels");
  if (std::string(docker_json_str(labels, kLabelPool)) != p->cfg.pool) return false;
  inst->id = docker_json_str(svc, "ID");
  std::string service = docker_json_str(spec, "Name");
  inst->name = docker_json_str(labels, kLabelName);
  std::string weight = docker_json_str(labels, kLabelWeight);
  uint32_t ring_id = 0, port = 0, w = 1;
  if (inst->id.empty() || !replica_name_ok(inst->name) ||
      !docker_parse_u32(docker_json_str(labels, kLabelRingId), UINT32_MAX, &ring_id) || ring_id == 0 ||
      (!weight.empty() && (!docker_parse_u32(weight.c_str(), kRingMaxWeight, &w) || w == 0)))
    return false;
  if (p->host_mode) {
    if (!docker_parse_u32(docker_json_str(labels, kLabelPort), 65535, &port) || port == 0) return false;
    inst->host = "127.0.0.1";
    inst->port = static_cast<uint16_t>(port);
  } else {
    inst->host = service;
    inst->port = kOverlayPort;
  }
  inst->ring_id = ring_id;
  inst->weight = w;
  return true;
}

// Updates service id: reads its Spec and version, lets mutate change the Spec, and posts it at that
// version (the engine wants the whole Spec). A race with another update ("update out of sequence",
// HTTP 500) is read and tried again, tries times in all. done("") on success, else why not.

static void on_spec_read(ProvSwarm* p, const std::string& id, SpecMutate mutate, int tries,
                         SpecDone done, const DockerReply& r) {
  json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  json_t* spec = json_object_get(j, "Spec");
  json_int_t version = json_integer_value(json_object_get(json_object_get(j, "Version"), "Index"));
  if (!json_is_object(spec) || p->eng.closing) {
    if (j) json_decref(j);
    return done(p->eng.closing ? "the provisioner is closing" : docker_error_message(r));
  }
  mutate(spec);
  docker_api_call(
      p->eng.api, "POST",
      "/services/" + docker_url_escape(id) + "/update?version=" + std::to_string(version), spec,
      p->cfg.call_timeout_ms, [p, id, mutate, tries, done](const DockerReply& rr) {
        if (rr.status == 0 && rr.http_status == 200) return done("");
        if (tries > 1 && rr.status == 0 && rr.http_status == 500)
          return spec_update(p, id, mutate, tries - 1, done);
        done(docker_error_message(rr));
      });
  json_decref(j);
}

void spec_update(ProvSwarm* p, const std::string& id, SpecMutate mutate, int tries, SpecDone done) {
  docker_api_call(p->eng.api, "GET", "/services/" + docker_url_escape(id), nullptr,
                  p->cfg.call_timeout_ms, [p, id, mutate, tries, done](const DockerReply& r) {
                    on_spec_read(p, id, mutate, tries, done, r);
                  });
}

std::string services_path(const ProvSwarm* p) {
  return "/services?filters=" + engine_label_filter(pool_label(p));
}

// The service of arr other than mine whose port label is port and that holds it against mine (the
// claim of a port on the host network): one that has its task, or was created before mine (a
// stale claim holds nothing); "" when none does. Draining services count: they still listen.
std::string port_holder(const ProvSwarm* p, json_t* arr, const std::string& mine, uint16_t port) {
  std::string my_key;
  size_t i;
  json_t* svc;
  json_array_foreach(arr, i, svc) {
    if (docker_json_str(svc, "ID") == mine) my_key = created_key(svc);
  }
  json_array_foreach(arr, i, svc) {
    ReplicaInstance inst;
    if (!service_instance(p, svc, &inst) || inst.id == mine || inst.port != port) continue;
    if (task_count(svc) == 0 && stale_claim(svc)) continue;
    // Mine not listed (it should be): every rival of the port is taken to hold it.
    if (task_count(svc) > 0 || my_key.empty() || created_key(svc) < my_key) return inst.id;
  }
  return "";
}

// The services of arr that are replicas of the pool (not draining), one per ring id: the one the
// manager created first holds it (the claim every LB of the pool reads alike). *bad gets the ids of
// services whose labels do not make a replica (or stale claims), *drained those draining.
// with_unscaled: services still without a task (a claim being checked) take part, as they do in
// a claim check; elsewhere only services with their task are replicas.
std::vector<ReplicaInstance> pool_winners(const ProvSwarm* p, json_t* arr, bool with_unscaled,
                                          std::vector<std::string>* bad,
                                          std::vector<std::string>* drained) {
  std::map<uint32_t, std::pair<std::string, ReplicaInstance>> by_id;
  size_t i;
  json_t* svc;
  json_array_foreach(arr, i, svc) {
    ReplicaInstance inst;
    if (!service_instance(p, svc, &inst)) {
      if (bad) bad->push_back(docker_json_str(svc, "ID"));
      continue;
    }
    if (draining(svc)) {
      if (drained) drained->push_back(inst.id);
      continue;
    }
    if (task_count(svc) == 0) {
      if (stale_claim(svc)) {
        if (bad) bad->push_back(inst.id);
        continue;
      }
      if (!with_unscaled) continue;
    }
    std::string key = created_key(svc);
    auto it = by_id.find(inst.ring_id);
    if (it == by_id.end() || key < it->second.first) by_id[inst.ring_id] = {key, inst};
  }
  std::vector<ReplicaInstance> out;
  for (auto& kv : by_id) out.push_back(kv.second.second);
  return out;
}

}  // namespace swarm_impl
