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
#include "lb/provision/swarm.h"
#include "lb/provision/swarm_impl.h"
#include "ring/ring.h"  // kRingMaxWeight

namespace swarm_impl {

// ---- stop ----

// Removes the service: the engine stops its task (SIGTERM, the stop grace, then SIGKILL) and
// removes its container by itself; the name is free at once.
void ProvSwarm::stop(const ReplicaInstance& inst, ProvDoneCb cb) {
  std::string id = inst.id.empty() ? cfg.name_prefix + inst.name : inst.id;
  if (eng.closing) {
    docker_api_defer(eng.api, [cb] { cb(-ECANCELED, "the swarm provisioner is closing"); });
    return;
  }
  eng.ops++;
  members.erase(id);
  uint64_t t0 = uv_hrtime();
  uint16_t port = host_mode ? inst.port : 0;
  std::string name = inst.name;
  remove_service(this, id, [this, name, port, t0, cb](const DockerReply& r) {
    if (!engine_removed_ok(r)) {
      std::string err;
      int st = engine_reply_failure(r, "cannot remove the service of replica " + name, &err);
      LOG_WARN("swarm: %s", err.c_str());
      cb(st == -ENOENT ? -EIO : st, err);
    } else {
      // The port stays out of use until its task has let it go: port_reserve checks that it binds.
      if (port) ports_used.erase(port);
      LOG_INFO("swarm: replica %s: service removed in %.0f ms", name.c_str(), engine_ms_since(t0));
      cb(0, "");
    }
    eng.ops--;
    engine_maybe_close_api(&eng);
  });
}

// /rm: labels the service ringlb.draining, so every other LB of the pool takes it out of its ring
// now (on_gone) rather than when the service is removed. A service cannot be renamed: it keeps its
// name until stop() removes it, and an /add of the same name waits for that (the registry's name
// hold), so cb always reports that the name is not free yet. The label is a service update
// (Spec.Labels: the task is not redeployed).
bool ProvSwarm::release_name(const ReplicaInstance& inst, ProvDoneCb cb) {
  std::string service = cfg.name_prefix + inst.name;
  if (eng.closing || inst.id.empty()) {
    docker_api_defer(eng.api, [cb, service] {
      cb(-EBUSY, "service " + service + " keeps its name until removed");
    });
    return true;
  }
  eng.ops++;
  members.erase(inst.id);
  engine_quiet_add(&eng, inst.id);  // its end is ours from now on
  spec_update(
      this, inst.id,
      [](json_t* spec) {
        json_t* labels = json_object_get(spec, "Labels");
        if (!json_is_object(labels)) {
          labels = json_object();
          json_object_set_new(spec, "Labels", labels);
        }
        json_object_set_new(labels, kLabelDraining, json_string("1"));
      },
      2,
      [this, cb, service](const std::string& err) {
        if (!err.empty())
          LOG_WARN(
              "swarm: cannot label service %s as draining (%s): other LBs of the pool take it out "
              "only once it is removed",
              service.c_str(), err.c_str());
        cb(-EBUSY,
           "service " + service + " keeps its name while it drains (services cannot be renamed)");
        eng.ops--;
        engine_maybe_close_api(&eng);
      });
  return true;
}

// ---- list (adoption) ----

// Every service of the pool, whatever its task does now: the engine heals it, so it is adopted
// and comes in through heartbeats. One whose labels do not make a replica is removed.
static void on_listed(ProvSwarm* p, ProvListCb cb, const DockerReply& r) {
  int st = 0;
  std::string err;
  json_t* arr = engine_reply_array(r, "cannot list the services of pool " + p->cfg.pool, &st, &err);
  if (!arr) {
    cb(st, err, {});
  } else {
    // Losers of a ring id claim are left alone: the LB that made one removes it itself.
    std::vector<std::string> bad, drained;
    std::vector<ReplicaInstance> running = pool_winners(p, arr, false, &bad, &drained);
    json_decref(arr);
    for (const std::string& id : bad) {
      LOG_INFO("swarm: removing service %s of pool %s: its labels do not make a replica",
               engine_short_id(id).c_str(), p->cfg.pool.c_str());
    }
    for (const std::string& id : drained) {
      LOG_INFO("swarm: removing service %s of pool %s: it was draining after /rm",
               engine_short_id(id).c_str(), p->cfg.pool.c_str());
    }
    bad.insert(bad.end(), drained.begin(), drained.end());
    for (const std::string& id : bad) {
      if (id.empty()) continue;
      p->eng.ops++;
      remove_service(p, id, [p](const DockerReply&) {
        p->eng.ops--;
        engine_maybe_close_api(&p->eng);
      });
    }
    for (const ReplicaInstance& inst : running) {
      if (p->host_mode) p->ports_used.insert(inst.port);
      p->members[inst.id] = inst;
    }
    cb(0, "", running);
  }
  p->listed = true;
  p->eng.ops--;
  engine_maybe_close_api(&p->eng);
}

void ProvSwarm::list(ProvListCb cb) {
  eng.ops++;
  docker_api_call(eng.api, "GET", services_path(this), nullptr, cfg.call_timeout_ms,
                  [this, cb](const DockerReply& r) { on_listed(this, cb, r); });
}

// ---- re-list after service events: replicas other LBs of the pool added or removed ----

static void resync_run(ProvSwarm* p);
static void on_resync_timer(uv_timer_t* t);

static void on_resynced(ProvSwarm* p, const DockerReply& r) {
  p->resync_running = false;
  p->eng.ops--;
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (json_is_array(arr) && !p->eng.closing) {
    std::map<std::string, ReplicaInstance> listed;
    for (const ReplicaInstance& inst : pool_winners(p, arr, false, nullptr, nullptr))
      listed[inst.id] = inst;
    for (auto& kv : listed) {
      if (p->members.count(kv.first) || p->starting.count(kv.first) ||
          engine_quiet_has(&p->eng, kv.first) || p->starting_names.count(kv.second.name))
        continue;
      if (p->host_mode) p->ports_used.insert(kv.second.port);
      p->members[kv.first] = kv.second;
      LOG_INFO("swarm: replica %s (service %s, ring id %u) appeared in pool %s",
               kv.second.name.c_str(), engine_short_id(kv.first).c_str(), kv.second.ring_id,
               p->cfg.pool.c_str());
      if (p->on_appear) p->on_appear(kv.second);
    }
    std::vector<ReplicaInstance> gone;
    for (auto& kv : p->members)
      if (!listed.count(kv.first)) gone.push_back(kv.second);
    for (const ReplicaInstance& inst : gone) {
      p->members.erase(inst.id);
      if (engine_quiet_has(&p->eng, inst.id)) continue;  // ours: stop() took it out already
      if (p->host_mode) p->ports_used.erase(inst.port);
      LOG_INFO("swarm: replica %s (service %s) left pool %s", inst.name.c_str(),
               engine_short_id(inst.id).c_str(), p->cfg.pool.c_str());
      if (p->on_gone) p->on_gone(inst.id, "another load balancer of the pool removed it");
    }
  } else if (!p->eng.closing) {
    LOG_WARN("swarm: cannot re-list the services of pool %s: %s", p->cfg.pool.c_str(),
             docker_error_message(r).c_str());
  }
  if (arr) json_decref(arr);
  if (p->resync_again && !p->eng.closing) {
    p->resync_again = false;
    resync_run(p);
  } else if (!p->eng.closing && !uv_is_active(reinterpret_cast<uv_handle_t*>(&p->eng.resync))) {
    uv_timer_start(&p->eng.resync, on_resync_timer, kResyncPeriodMs, 0);
  }
  engine_maybe_close_api(&p->eng);
}

static void resync_run(ProvSwarm* p) {
  if (!p->listed) {  // list() is in flight: it is the fresh view; look again after it
    uv_timer_start(&p->eng.resync, on_resync_timer, kResyncDelayMs, 0);
    return;
  }
  if (p->resync_running) {
    p->resync_again = true;
    return;
  }
  p->resync_running = true;
  p->eng.ops++;
  docker_api_call(p->eng.api, "GET", services_path(p), nullptr, p->cfg.call_timeout_ms,
                  [p](const DockerReply& r) { on_resynced(p, r); });
}

static void on_resync_timer(uv_timer_t* t) {
  ProvSwarm* p = static_cast<ProvSwarm*>(t->data);
  if (!p->eng.closing) resync_run(p);
}

// ---- events ----

static void events_open(ProvSwarm* p);

// A task container of the pool died: report its service as failed at once (the registry routes
// around it; the engine restarts the task). Deaths of services we remove are ours.
static void on_container_event(ProvSwarm* p, const std::string& line) {
  engine_events_ok(&p->eng);
  json_t* e = json_loadb(line.data(), line.size(), 0, nullptr);
  if (!e) return;
  json_t* attrs = json_object_get(json_object_get(e, "Actor"), "Attributes");
  std::string action = docker_json_str(e, "Action");
  std::string service_id = docker_json_str(attrs, kLabelServiceId);
  std::string name = docker_json_str(attrs, kLabelName);
  std::string container = docker_json_str(attrs, "name");
  std::string code = docker_json_str(attrs, "exitCode");
  json_decref(e);
  if (action != "die" || service_id.empty() || engine_quiet_has(&p->eng, service_id)) return;
  std::string cause =
      "task container " + container + " exited with code " + (code.empty() ? "?" : code);
  auto it = p->starting.find(service_id);
  if (it != p->starting.end()) {
    it->second->task_error = cause;  // the engine restarts it; the start waits on
    return;
  }
  LOG_WARN("swarm: replica %s: %s; the engine restarts it", name.c_str(), cause.c_str());
  if (p->on_exit) p->on_exit(service_id, cause);
}

// Service create/update/remove anywhere in the swarm (service events carry no labels): re-list
// the pool, debounced.
static void on_service_event(ProvSwarm* p, const std::string&) {
  engine_events_ok(&p->eng);
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&p->eng.resync);
  if (!p->eng.closing && (!uv_is_active(h) || uv_timer_get_due_in(&p->eng.resync) > kResyncDelayMs))
    uv_timer_start(&p->eng.resync, on_resync_timer, kResyncDelayMs, 0);
}

static void on_events_retry(uv_timer_t* t) {
  ProvSwarm* p = static_cast<ProvSwarm*>(t->data);
  if (!p->eng.closing) events_open(p);
}

static void on_events_end(ProvSwarm* p, DockerStream** which, const DockerReply& r) {
  *which = nullptr;
  engine_events_retry(&p->eng, "an events stream", r, on_events_retry);
}

// Opens whichever of the two streams is not open. A reopened service stream re-lists at once,
// since events may have been missed while it was down.
static void events_open(ProvSwarm* p) {
  if (!p->container_events) {
    std::string path = "/events?filters=" + engine_filter_query(json_pack(
                                                "{s:[s], s:[s], s:[s]}", "type", "container",
                                                "event", "die", "label", pool_label(p).c_str()));
    int rc = docker_stream_open(
        p->eng.api, path, [p](const std::string& l) { on_container_event(p, l); },
        [p](const DockerReply& r) { on_events_end(p, &p->container_events, r); },
        &p->container_events);
    if (rc != 0) LOG_WARN("swarm: cannot watch container events: %s", uv_strerror(rc));
  }
  if (!p->service_events) {
    std::string path =
        "/events?filters=" + engine_filter_query(json_pack("{s:[s]}", "type", "service"));
    int rc = docker_stream_open(
        p->eng.api, path, [p](const std::string& l) { on_service_event(p, l); },
        [p](const DockerReply& r) { on_events_end(p, &p->service_events, r); }, &p->service_events);
    if (rc != 0)
      LOG_WARN("swarm: cannot watch service events: %s", uv_strerror(rc));
    else
      on_service_event(p, "");
  }
  if ((!p->container_events || !p->service_events) &&
      !uv_is_active(reinterpret_cast<uv_handle_t*>(&p->eng.events_retry)))
    uv_timer_start(&p->eng.events_retry, on_events_retry, p->eng.events_retry_ms, 0);
}

// ---- close ----

void ProvSwarm::close(std::function<void()> cb) {
  if (!engine_pool_close(&eng, std::move(cb))) return;
  if (container_events) docker_stream_close(container_events);
  if (service_events) docker_stream_close(service_events);
  // Starts waiting on their timer end now (their services are removed); the others end when their
  // call or probe completes.
  std::vector<StartOp*> waiting;
  for (auto& kv : starting)
    if (kv.second->waiting) waiting.push_back(kv.second);
  for (StartOp* op : waiting) {
    uv_timer_stop(&op->timer);
    op->waiting = false;
    op_end(op, -ECANCELED, "");
  }
  engine_maybe_close_api(&eng);
}

}  // namespace swarm_impl

using namespace swarm_impl;

// ---- create ----

static std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

Provisioner* prov_swarm_create(uv_loop_t* loop, const ProvSwarmConfig& cfg, std::string* err) {
  if (!engine_config_check("swarm", cfg.image, cfg.pool, cfg.network,
                           "host (one node), or an overlay network's name", cfg.port_min,
                           cfg.port_max, err))
    return nullptr;
  bool host_mode = cfg.network == "host";
  if (cfg.stop_grace_s < 0 || cfg.ready_timeout_ms <= 0 || cfg.restart_delay_ms < 0) {
    *err = "the stop grace and restart delay must be >= 0 and the ready timeout > 0";
    return nullptr;
  }
  DockerApi* api = nullptr;
  if (docker_api_open(loop, cfg.socket.c_str(), &api, err) != 0) return nullptr;
  // Only a manager serves /services: check now, so that a node outside a swarm is one clear line
  // at start instead of a failed start of every replica.
  DockerReply info;
  docker_api_call_sync(api, "GET", "/info", cfg.call_timeout_ms, &info);
  json_t* j = info.status == 0 && info.http_status == 200 ? docker_reply_json(info) : nullptr;
  json_t* swarm = json_object_get(j, "Swarm");
  std::string state = docker_json_str(swarm, "LocalNodeState");
  bool manager = json_is_true(json_object_get(swarm, "ControlAvailable"));
  std::string node_id = docker_json_str(swarm, "NodeID");
  if (j) json_decref(j);
  if (!j || state != "active" || !manager || node_id.empty()) {
    *err =
        !j ? "cannot read /info from the Docker engine at unix://" +
                 std::string(docker_api_socket(api)) + ": " + docker_error_message(info)
           : "the Docker engine at unix://" + std::string(docker_api_socket(api)) +
                 (state != "active" ? " is not part of a swarm (Swarm.LocalNodeState " +
                                          (state.empty() ? "?" : state) +
                                          "): run `docker swarm init`, or use --provisioner docker"
                                    : " is a swarm worker: run ringlb on a manager node (placement "
                                      "constraint node.role==manager)");
    docker_api_close(api, nullptr);
    // The client's close completes on the loop; the caller exits without running it.
    return nullptr;
  }
  ProvSwarm* p = new ProvSwarm;
  engine_pool_init(&p->eng, loop, api, "swarm");
  p->cfg = cfg;
  p->host_mode = host_mode;
  p->node_id = node_id;
  p->eng.events_retry.data = p;
  p->eng.resync.data = p;
  if (cfg.watch_events) events_open(p);
  LOG_INFO("swarm: provisioner for pool %s on node %s, image %s, network %s%s%s%s",
           cfg.pool.c_str(), engine_short_id(node_id).c_str(), cfg.image.c_str(),
           cfg.network.c_str(),
           host_mode ? (" (ports " + std::to_string(cfg.port_min) + "-" +
                        std::to_string(cfg.port_max) + " on this node)")
                           .c_str()
                     : " (replicas by service name on port 5000)",
           cfg.constraints.empty() ? "" : (", constraints " + join(cfg.constraints)).c_str(),
           cfg.spread.empty() ? "" : (", spread over " + join(cfg.spread)).c_str());
  return p;
}
