// docker_pool: the docker provisioner's view of its pool: list() (adoption), the pool's event stream
// (other LBs' replicas appearing and going, deaths) and the periodic resync of what the stream missed.
#include "lb/provision/docker_impl.h"

// ---- list (adoption) ----

// True for the name release_name gives container id: NAME + kDrainingMark + its own short id. A
// replica the user named with the mark in it (a valid name, "a.draining-b") is not one: only the
// suffix that names the container itself marks a leftover of a drain.
bool docker_draining_name(const std::string& name, const std::string& id) {
  std::string suffix = kDrainingMark + engine_short_id(id);
  return id.size() > 0 && name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

DockerListed docker_listed(json_t* c) {
  DockerListed l;
  l.id = docker_json_str(c, "Id");
  l.state = docker_json_str(c, "State");
  const char* name = json_string_value(json_array_get(json_object_get(c, "Names"), 0));
  l.en = name ? (name[0] == '/' ? name + 1 : name) : "";
  l.created_s = json_integer_value(json_object_get(c, "Created"));
  l.labels = json_object_get(c, "Labels");
  return l;
}

static void list_finish_one(ListOp* op) {
  if (--op->pending > 0) return;
  ProvDocker* p = op->p;
  op->cb(0, "", op->running);
  delete op;
  p->eng.ops--;
  engine_maybe_close_api(&p->eng);
}

static void on_listed(ListOp* op, const DockerReply& r) {
  ProvDocker* p = op->p;
  int st = 0;
  std::string err;
  json_t* arr = engine_reply_array(r, "cannot list the containers of pool " + p->cfg.pool, &st, &err);
  if (!arr) {
    if (r.status == 0 && r.http_status == 200)
      err = "the engine's container list is not a JSON array";
    op->cb(st, err, {});
    delete op;
    p->eng.ops--;
    engine_maybe_close_api(&p->eng);
    return;
  }
  op->pending = 1;  // held until the loop below is done
  size_t i;
  json_t* c;
  json_array_foreach(arr, i, c) {
    DockerListed l = docker_listed(c);
    const std::string &id = l.id, &state = l.state, &en = l.en;
    json_t* labels = l.labels;
    std::string mode = docker_json_str(json_object_get(c, "HostConfig"), "NetworkMode");
    ReplicaInstance inst;
    inst.id = id;
    inst.name = docker_plain_name(p, en);
    if (inst.name.empty() && !en.empty()) {
      // Labelled with this pool but without this LB's prefix: an LB of the pool with another
      // prefix (a configuration error) owns it. Left alone.
      LOG_WARN("docker: container %s of pool %s lacks the name prefix \"%s\": not adopted, left alone",
               en.c_str(), p->cfg.pool.c_str(), p->cfg.name_prefix.c_str());
      continue;
    }
    // Another LB of the pool between its create and its start (its ring id claim): not ours to
    // remove. One that stays created longer than that was abandoned.
    if (state == "created" && static_cast<int64_t>(time(nullptr)) - l.created_s <= kAbandonedCreateS)
      continue;
    uint32_t ring_id = 0, port = 0;
    std::string weight_label = docker_json_str(labels, kLabelWeight);
    uint32_t weight = 1;
    bool labels_ok = docker_parse_u32(docker_json_str(labels, kLabelRingId), UINT32_MAX, &ring_id) &&
                     docker_parse_u32(docker_json_str(labels, kLabelPort), 65535, &port) && port != 0 &&
                     (weight_label.empty() ||
                      (docker_parse_u32(weight_label.c_str(), kRingMaxWeight, &weight) && weight >= 1));
    bool net_ok = p->host_mode ? mode == "host" : mode == p->cfg.network;
    if (state == "removing") continue;
    bool draining = docker_draining_name(en, id);
    if (state == "running" && labels_ok && net_ok && !inst.name.empty() && !draining) {
      inst.ring_id = ring_id;
      inst.weight = weight;
      inst.port = static_cast<uint16_t>(port);
      inst.host = p->host_mode ? "127.0.0.1" : en;
      if (p->host_mode) p->ports_used.insert(inst.port);
      p->known.insert(id);
      op->running.push_back(inst);
      continue;
    }
    const char* why = state != "running" ? state.c_str()
                      : draining         ? "it was draining after /rm"
                      : !labels_ok       ? "bad labels"
                                         : "other network";
    LOG_INFO("docker: removing container %s (%s) of pool %s: %s", inst.name.c_str(),
             engine_short_id(id).c_str(), p->cfg.pool.c_str(), why);
    if (p->host_mode && labels_ok) p->ports_used.erase(static_cast<uint16_t>(port));
    op->pending++;
    docker_remove_container(p, id, [op, inst](const DockerReply& rr) {
      if (!engine_removed_ok(rr))
        LOG_WARN("docker: could not remove container %s: %s", inst.name.c_str(),
                 docker_error_message(rr).c_str());
      list_finish_one(op);
    });
  }
  json_decref(arr);
  list_finish_one(op);
}

void ProvDocker::list(ProvListCb cb) {
  eng.ops++;
  ListOp* op = new ListOp;
  op->p = this;
  op->cb = std::move(cb);
  docker_api_call(eng.api, "GET", "/containers/json?all=1&filters=" + docker_label_filter(this), nullptr,
                  cfg.call_timeout_ms, [op](const DockerReply& r) { on_listed(op, r); });
}

// ---- events: the pool's containers as other LBs and the engine change them ----
//
// start of a container this LB does not know -> on_appear; rename of a known one to a draining
// name by another LB (its /rm) -> on_gone; die (and destroy of one whose death was not reported) of
// one that this LB does not stop itself -> on_exit. Every resync_ms a list of the pool reports what
// the stream missed the same way.


// The instance of running replica container id named en (the engine's name) with labels (a list
// item's Labels, or an event's Attributes, which carry the labels); false when it is not one of
// this LB's prefix, is draining, or its labels are bad.
static bool instance_from(ProvDocker* p, const std::string& id, const std::string& en, json_t* labels,
                          ReplicaInstance* inst) {
  uint32_t ring_id = 0, port = 0, weight = 1;
  std::string weight_label = docker_json_str(labels, kLabelWeight);
  inst->id = id;
  inst->name = docker_plain_name(p, en);
  if (id.empty() || inst->name.empty() || docker_draining_name(en, id)) return false;
  if (docker_json_str(labels, kLabelPool) != p->cfg.pool) return false;
  if (!docker_parse_u32(docker_json_str(labels, kLabelRingId), UINT32_MAX, &ring_id) || ring_id == 0 ||
      !docker_parse_u32(docker_json_str(labels, kLabelPort), 65535, &port) || port == 0 ||
      (!weight_label.empty() &&
       (!docker_parse_u32(weight_label.c_str(), kRingMaxWeight, &weight) || weight == 0)))
    return false;
  inst->ring_id = ring_id;
  inst->port = static_cast<uint16_t>(port);
  inst->weight = weight;
  inst->host = p->host_mode ? "127.0.0.1" : en;
  return true;
}

// A running replica of the pool that this LB did not start: another LB's.
static void appear(ProvDocker* p, const ReplicaInstance& inst) {
  if (p->starting.count(inst.id) || !p->known.insert(inst.id).second) return;
  if (p->host_mode) p->ports_used.insert(inst.port);
  LOG_INFO("docker: replica %s (container %s, ring id %u) of another load balancer runs",
           inst.name.c_str(), engine_short_id(inst.id).c_str(), inst.ring_id);
  if (p->on_appear) p->on_appear(inst);
}

// Known replica id was taken out of the pool by another LB (renamed to drain).
void docker_gone(ProvDocker* p, const std::string& id, const std::string& en) {
  if (!p->known.count(id) || engine_quiet_has(&p->eng, id) || !p->gone_reported.insert(id).second) return;
  LOG_INFO("docker: container %s (%s) was removed by another load balancer", engine_short_id(id).c_str(),
           en.c_str());
  if (p->on_gone) p->on_gone(id, "removed by /rm on another load balancer");
}

// Container id died or was removed (cause), by someone else than this LB.
void docker_exited(ProvDocker* p, const std::string& id, const std::string& en, const std::string& cause) {
  if (engine_quiet_has(&p->eng, id) || !p->reported.insert(id).second) return;
  LOG_WARN("docker: replica %s (container %s) %s", en.c_str(), engine_short_id(id).c_str(), cause.c_str());
  if (p->on_exit) p->on_exit(id, "container " + en + " " + cause);
}

static void on_event_line(ProvDocker* p, const std::string& line) {
  engine_events_ok(&p->eng);
  json_t* e = json_loadb(line.data(), line.size(), 0, nullptr);
  if (!e) return;
  json_int_t ns = json_integer_value(json_object_get(e, "timeNano"));
  if (ns > p->last_event_ns) p->last_event_ns = ns;
  std::string action = docker_json_str(e, "Action");
  json_t* actor = json_object_get(e, "Actor");
  std::string id = docker_json_str(actor, "ID");
  json_t* attrs = json_object_get(actor, "Attributes");
  std::string name = docker_json_str(attrs, "name");
  std::string code = docker_json_str(attrs, "exitCode");
  std::string port_label = docker_json_str(attrs, kLabelPort);  // events carry the container's labels
  ReplicaInstance inst;
  bool is_replica = action == "start" && instance_from(p, id, name, attrs, &inst);
  json_decref(e);
  if (id.empty()) return;
  if (action == "start") {
    if (is_replica) appear(p, inst);
    return;
  }
  if (action == "rename") {
    if (docker_draining_name(name, id)) docker_gone(p, id, name);
    return;
  }
  if (action != "die" && action != "destroy") return;
  std::string cause =
      action == "die" ? "exited with code " + (code.empty() ? "?" : code) : "was removed";
  auto it = p->starting.find(id);
  if (it != p->starting.end()) {
    it->second->died = true;  // the start in progress fails fast instead of waiting for its timeout
    it->second->died_cause = cause;
    return;
  }
  bool ours = engine_quiet_has(&p->eng, id);  // we stopped or removed it ourselves
  if (action == "destroy") {
    p->known.erase(id);
    p->gone_reported.erase(id);
    bool was_reported = p->reported.erase(id) > 0;
    // Removed by someone else: its port is free again. (Ours were released by stop or list.)
    uint32_t port = 0;
    if (!ours && p->host_mode && docker_parse_u32(port_label.c_str(), 65535, &port))
      p->ports_used.erase(port);
    if (ours || was_reported) return;
    docker_exited(p, id, name, cause);
    p->reported.erase(id);  // destroyed: nothing more comes of this id
    return;
  }
  docker_exited(p, id, name, cause);
}

// ---- resync: what the event stream missed ----

static void on_resynced(ProvDocker* p, const DockerReply& r) {
  p->resync_running = false;
  if (p->eng.closing) return;
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (!json_is_array(arr)) {
    if (arr) json_decref(arr);
    LOG_WARN("docker: resync of pool %s failed: %s", p->cfg.pool.c_str(),
             docker_error_message(r).c_str());
    return;
  }
  std::set<std::string> seen;
  size_t i;
  json_t* c;
  json_array_foreach(arr, i, c) {
    DockerListed l = docker_listed(c);
    const std::string &id = l.id, &state = l.state, &en = l.en;
    seen.insert(id);
    if (p->starting.count(id)) continue;
    ReplicaInstance inst;
    if (docker_draining_name(en, id)) docker_gone(p, id, en);
    else if (state == "running" && instance_from(p, id, en, l.labels, &inst))
      appear(p, inst);
    else if ((state == "exited" || state == "dead") && p->known.count(id))
      docker_exited(p, id, en, "is " + state + " (seen by the resync)");
  }
  json_decref(arr);
  std::vector<std::string> lost;
  for (const std::string& id : p->known)
    if (!seen.count(id) && !p->starting.count(id)) lost.push_back(id);
  for (const std::string& id : lost) {
    p->known.erase(id);
    docker_exited(p, id, engine_short_id(id), "was removed (seen by the resync)");
    p->reported.erase(id);
  }
}

void docker_on_resync_timer(uv_timer_t* t) {
  ProvDocker* p = static_cast<ProvDocker*>(t->data);
  if (p->eng.closing || p->resync_running) return;
  p->resync_running = true;
  docker_api_call(p->eng.api, "GET", "/containers/json?all=1&filters=" + docker_label_filter(p), nullptr,
                  p->cfg.call_timeout_ms, [p](const DockerReply& r) { on_resynced(p, r); });
}

static void on_events_retry(uv_timer_t* t) {
  ProvDocker* p = static_cast<ProvDocker*>(t->data);
  if (!p->eng.closing) docker_events_open(p);
}

static void on_events_end(ProvDocker* p, const DockerReply& r) {
  p->events = nullptr;
  engine_events_retry(&p->eng, "events stream", r, on_events_retry);
}

void docker_events_open(ProvDocker* p) {
  json_t* f = json_pack("{s:[s], s:[s], s:[s,s,s,s]}", "type", "container", "label",
                        (std::string(kLabelPool) + "=" + p->cfg.pool).c_str(), "event", "start",
                        "die", "destroy", "rename");
  std::string path = std::string("/events?filters=") + engine_filter_query(f);
  if (p->last_event_ns > 0) {
    // A reconnect: the engine replays what it still buffers (its last 256 events) from the last
    // one seen; the resync covers anything older.
    char since[48];
    snprintf(since, sizeof since, "%lld.%09lld",
             static_cast<long long>(p->last_event_ns / 1000000000LL),
             static_cast<long long>(p->last_event_ns % 1000000000LL));
    path += std::string("&since=") + since;
  }
  int rc = docker_stream_open(
      p->eng.api, path, [p](const std::string& line) { on_event_line(p, line); },
      [p](const DockerReply& r) { on_events_end(p, r); }, &p->events);
  if (rc != 0) {
    LOG_WARN("docker: cannot watch events: %s", uv_strerror(rc));
    uv_timer_start(&p->eng.events_retry, on_events_retry, p->eng.events_retry_ms, 0);
  }
}

