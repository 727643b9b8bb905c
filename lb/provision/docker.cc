// docker: the docker provisioner's operations: start (create, the ring id claim, start, the readiness
// probe), stop, release_name, close and prov_docker_create (lb/provision/docker.h has the contract;
// docker_pool.cc the provisioner's view of its pool, docker_impl.h what the two share).
#include "lb/provision/docker_impl.h"

// ---- small helpers ----

// The engine's name of replica name.
static std::string engine_name(const ProvDocker* p, const std::string& name) {
  return p->cfg.name_prefix + name;
}

// The replica name of engine name en ("" when en does not carry this LB's prefix: not ours).
std::string docker_plain_name(const ProvDocker* p, const std::string& en) {
  const std::string& pre = p->cfg.name_prefix;
  if (en.size() <= pre.size() || en.compare(0, pre.size(), pre) != 0) return "";
  return en.substr(pre.size());
}

// Picks and reserves the next free port of the range, round robin so a port just given back is not
// reused at once. Returns 0 when every port is taken.
static uint16_t port_reserve(ProvDocker* p) {
  uint32_t span = static_cast<uint32_t>(p->cfg.port_max) - p->cfg.port_min + 1;
  for (uint32_t i = 0; i < span; i++) {
    uint16_t port = p->next_port;
    p->next_port = port >= p->cfg.port_max ? p->cfg.port_min : port + 1;
    if (p->ports_used.count(port) || !engine_port_bindable(port)) continue;
    p->ports_used.insert(port);
    return port;
  }
  return 0;
}

std::string docker_label_filter(const ProvDocker* p) {
  return engine_label_filter(std::string(kLabelPool) + "=" + p->cfg.pool);
}

// Removes a container we own (DELETE ?force=1&v=1), marking it quiet first so its die/destroy
// events are not reported as failures. cb gets the reply; 204 and 404 both mean it is gone.
void docker_remove_container(ProvDocker* p, const std::string& id, DockerCallCb cb) {
  engine_quiet_add(&p->eng, id);
  docker_api_call(p->eng.api, "DELETE", "/containers/" + docker_url_escape(id) + "?force=1&v=1",
                  nullptr, p->cfg.call_timeout_ms, std::move(cb));
}

// ---- start ----

static void start_create(StartOp* op);
static void probe_begin(StartOp* op);

static void start_fail(StartOp* op, int status, const std::string& error);

// Delivers the outcome of op and frees it. Runs from a callback, never from start() itself. A start
// that succeeds once close() was called is cancelled instead, and its container removed: the
// registry may already have stopped every replica it knows, so nobody else would remove it.
static void start_finish(StartOp* op) {
  ProvDocker* p = op->p;
  if (op->status == 0 && p->eng.closing) {
    return start_fail(
        op, -ECANCELED,
        "the docker provisioner closed while replica " + op->spec.name + " was starting");
  }
  if (!op->inst.id.empty()) p->starting.erase(op->inst.id);
  if (op->status == 0) p->known.insert(op->inst.id);
  if (op->status != 0) {
    if (p->host_mode && op->inst.port) p->ports_used.erase(op->inst.port);
    LOG_WARN("docker: start of replica %s failed: %s", op->spec.name.c_str(), op->error.c_str());
  } else {
    LOG_INFO(
        "docker: replica %s up as container %s at %s:%u in %.0f ms (create %.0f, start %.0f, "
        "listen %.0f)",
        op->spec.name.c_str(), engine_short_id(op->inst.id).c_str(), op->inst.host.c_str(), op->inst.port,
        engine_ms_since(op->t0), (op->t_created - op->t0) / 1e6, (op->t_started - op->t_created) / 1e6,
        (uv_hrtime() - op->t_started) / 1e6);
  }
  ReplicaInstance none;
  op->cb(op->status, op->error, op->status == 0 ? op->inst : none);
  delete op;
  p->eng.ops--;
  engine_maybe_close_api(&p->eng);
}

// Fails op. When a container was created it is removed first, so a failed start leaves nothing,
// also when it failed because the provisioner is closing (close waits for the removal).
static void start_fail(StartOp* op, int status, const std::string& error) {
  op->status = status;
  op->error = error;
  if (op->inst.id.empty()) {
    start_finish(op);
    return;
  }
  docker_remove_container(op->p, op->inst.id, [op](const DockerReply& r) {
    if (!engine_removed_ok(r))
      LOG_WARN("docker: could not remove container %s of failed replica %s: %s",
               engine_short_id(op->inst.id).c_str(), op->spec.name.c_str(),
               docker_error_message(r).c_str());
    start_finish(op);
  });
}

static void start_cancelled(StartOp* op) {
  start_fail(op, -ECANCELED,
             "the docker provisioner closed while replica " + op->spec.name + " was starting");
}

static void on_start_answered(StartOp* op, const DockerReply& r) {
  if (op->p->eng.closing) return start_cancelled(op);
  if (r.status != 0 || (r.http_status != 204 && r.http_status != 304)) {
    std::string err;
    int st = engine_reply_failure(r, "cannot start replica " + op->spec.name, &err);
    return start_fail(op, st, err);
  }
  op->t_started = uv_hrtime();
  if (op->p->host_mode) return probe_begin(op);
  start_finish(op);  // bridge: readiness is the registry's heartbeat
}

static const int kNameBusyTries = 50;  // create + inspect round trips, a few ms each

static void on_conflict_inspected(StartOp* op, const DockerReply& r) {
  ProvDocker* p = op->p;
  if (p->eng.closing) return start_cancelled(op);
  if (r.status == 0 && r.http_status == 404) {
    // The engine reserves a name when a create begins and shows the container only once it is
    // made: a 404 after the 409 is another create in flight (another LB of the pool) or a
    // container that went away meanwhile. Ask again, a bounded number of times.
    if (++op->name_busy_tries <= kNameBusyTries) return start_create(op);
    return start_fail(op, -EEXIST,
                      "cannot create replica " + op->spec.name +
                          ": the name is held by a container being created (by another load "
                          "balancer of pool " + p->cfg.pool + "?)");
  }
  json_t* j = r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (!j) {
    std::string err;
    int st = engine_reply_failure(r, "cannot inspect container " + op->spec.name, &err);
    return start_fail(op, st == -ENOENT ? -EIO : st, err);
  }
  std::string id = docker_json_str(j, "Id");
  json_t* labels = json_object_get(json_object_get(j, "Config"), "Labels");
  std::string owner = docker_json_str(labels, kLabelPool);
  std::string ring_label = docker_json_str(labels, kLabelRingId);
  bool running = json_is_true(json_object_get(json_object_get(j, "State"), "Running"));
  std::string state = docker_json_str(json_object_get(j, "State"), "Status");
  std::string image = docker_json_str(json_object_get(j, "Config"), "Image");
  json_decref(j);
  if (owner != p->cfg.pool) {
    return start_fail(op, -EEXIST,
                      "cannot create replica " + op->spec.name +
                          ": the name is taken by container " + engine_short_id(id) + " (image " + image +
                          ")" + (owner.empty() ? "" : ", owned by pool " + owner) +
                          ", which pool " + p->cfg.pool +
                          " does not own; remove or rename that container");
  }
  if (!op->spec.replaces.empty() && ring_label == std::to_string(op->spec.ring_id) &&
      (running || state == "created")) {
    // Healing by the same name: another LB's replacement of the same dead replica got the name
    // first (the engine's unique names are the lock). It runs under this ring id; follow it.
    return start_fail(op, -EBUSY,
                      "replica " + op->spec.name + " (ring id " + std::to_string(op->spec.ring_id) +
                          ") is being replaced by another load balancer (container " +
                          engine_short_id(id) + ")");
  }
  // "created": another LB of the pool is starting a replica of that name (or one crashed between
  // create and start; list() removes that once it is a minute old). Never removed here.
  if (running || state == "created" || op->conflict_retried) {
    return start_fail(op, -EEXIST,
                      "cannot create replica " + op->spec.name + ": pool " + p->cfg.pool +
                          " already has a container of that name (" + engine_short_id(id) +
                          (running ? ", running" : state == "created" ? ", being started" : "") +
                          "), maybe started by another load balancer of the pool");
  }
  // Our own leftover that is not running (a crash or an interrupted start): replace it once.
  op->conflict_retried = true;
  LOG_INFO("docker: removing leftover container %s (%s) of pool %s", op->spec.name.c_str(),
           engine_short_id(id).c_str(), p->cfg.pool.c_str());
  docker_remove_container(p, id, [op](const DockerReply& rr) {
    if (op->p->eng.closing) return start_cancelled(op);
    if (!engine_removed_ok(rr)) {
      std::string err;
      int st = engine_reply_failure(rr, "cannot remove leftover container " + op->spec.name, &err);
      return start_fail(op, st, err);
    }
    start_create(op);
  });
}

// After a create that got no answer: the container of that name, if the engine made it and it is
// this pool's with this start's ring id, is removed before the start fails with the create's error
// (op->status, op->error). Anything else of that name is left alone.
static void on_create_lost_inspected(StartOp* op, const DockerReply& r) {
  ProvDocker* p = op->p;
  json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  std::string id, owner, ring_id;
  if (j) {
    id = docker_json_str(j, "Id");
    json_t* labels = json_object_get(json_object_get(j, "Config"), "Labels");
    owner = docker_json_str(labels, kLabelPool);
    ring_id = docker_json_str(labels, kLabelRingId);
    json_decref(j);
  }
  if (id.empty() || owner != p->cfg.pool || ring_id != std::to_string(op->spec.ring_id)) {
    if (r.status != 0 || (r.http_status != 404 && r.http_status != 200))
      LOG_WARN("docker: create of replica %s got no answer and its name cannot be looked up (%s); "
               "a container the engine made is removed at the next start of the pool",
               op->spec.name.c_str(), docker_error_message(r).c_str());
    return start_finish(op);
  }
  LOG_WARN("docker: create of replica %s got no answer but the engine made container %s: removing it",
           op->spec.name.c_str(), engine_short_id(id).c_str());
  op->inst.id = id;
  start_fail(op, op->status, op->error);  // removes op->inst.id first
}

// ---- ring id claim (see docker.h): after the create, before the start ----


// "2026-12-02T13:21:39.123456789Z" (the engine's RFC 3339 with up to 9 fraction digits, UTC) as ns
// since the epoch; -1 when s is not that.
static int64_t parse_created_ns(const char* s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  int n = 0;
  if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec, &n) != 6)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  int64_t frac = 0;
  const char* q = s + n;
  if (*q == '.') {
    int digits = 0;
    for (q++; isdigit(static_cast<unsigned char>(*q)); q++)
      if (digits < 9) frac = frac * 10 + (*q - '0'), digits++;
    for (; digits < 9; digits++) frac *= 10;
  }
  if (*q != 'Z') return -1;
  return static_cast<int64_t>(timegm(&tm)) * 1000000000LL + frac;
}

static void start_run(StartOp* op) {
  ProvDocker* p = op->p;
  if (p->eng.closing) return start_cancelled(op);
  docker_api_call(p->eng.api, "POST", "/containers/" + op->inst.id + "/start", nullptr,
                  p->cfg.call_timeout_ms, [op](const DockerReply& rr) { on_start_answered(op, rr); });
}

static void claim_begin(StartOp* op);
// A later rival that is still "created" may or may not have seen this container (the engine stamps
// Created when a create begins, but lists the container only once it is made): the claim lists
// again until that rival started (it won) or is gone (it lost), at most this many times.
static const int kClaimRoundsMax = 200;

// A claim may lose its port this many times (each time to a replica of another LB that took the
// same port at the same moment) before the start gives up.
static const int kPortClaimsMax = 20;

// The claim lost op's port (host mode) to rival, a container of another LB: this start's container
// never ran, so it is removed and created again on another port of the range. The lost port stays
// reserved here (the rival holds it; its destroy event frees it).
static void claim_port_lost(StartOp* op, const std::string& rival, bool started) {
  ProvDocker* p = op->p;
  LOG_INFO("docker: replica %s lost port %u to container %s (%s); trying another port",
           op->spec.name.c_str(), op->inst.port, engine_short_id(rival).c_str(),
           started ? "started already" : "created earlier");
  if (++op->port_claims > kPortClaimsMax)
    return start_fail(op, -EADDRINUSE,
                      "no port for replica " + op->spec.name + ": " +
                          std::to_string(kPortClaimsMax) +
                          " ports of the range were taken by other load balancers of pool " +
                          p->cfg.pool + " at the same moment");
  std::string lost = op->inst.id;
  docker_remove_container(p, lost, [op, lost](const DockerReply& r) {
    ProvDocker* p = op->p;
    if (p->eng.closing) return start_cancelled(op);
    if (!engine_removed_ok(r)) {
      std::string err;
      int st = engine_reply_failure(r, "cannot remove container " + engine_short_id(lost) +
                                           " of replica " + op->spec.name + " after its port was taken",
                                    &err);
      return start_fail(op, st == -ENOENT ? -EIO : st, err);
    }
    p->starting.erase(lost);
    op->inst.id.clear();
    op->created_ns.clear();
    op->rival_state.clear();
    op->rival_kind.clear();
    op->claim_rounds = 0;
    op->inst.port = port_reserve(p);
    if (op->inst.port == 0)
      return start_fail(op, -EADDRINUSE,
                        "no free port for replica " + op->spec.name + " in " +
                            std::to_string(p->cfg.port_min) + "-" + std::to_string(p->cfg.port_max));
    start_create(op);
  });
}

// Every creation time is known. Per rival, this start loses to one that started (it won its own
// claim) and to one created earlier (ties: the smaller Id), which wins whether or not it saw this
// one; it waits on a later rival that has not started yet; it wins when no rival is left. A rival
// of its ring id that wins fails the start with -EBUSY (the registry takes another id); one that
// only holds its port (host mode) makes it take another port.
static void claim_decide(StartOp* op) {
  ProvDocker* p = op->p;
  if (p->eng.closing) return start_cancelled(op);
  auto mine = op->created_ns.find(op->inst.id);
  if (op->claim_failed || mine == op->created_ns.end()) {
    return start_fail(op, -EIO,
                      "cannot claim ring id " + std::to_string(op->spec.ring_id) + " for replica " +
                          op->spec.name + ": the engine did not tell the creation times");
  }
  bool undecided = false;
  std::string port_winner;
  bool port_winner_started = false;
  for (const auto& kv : op->created_ns) {
    if (kv.first == op->inst.id) continue;
    bool started = op->rival_state[kv.first] != "created";
    bool earlier = kv.second < mine->second || (kv.second == mine->second && kv.first < op->inst.id);
    if (!started && !earlier) {
      undecided = true;
      continue;
    }
    if (!(op->rival_kind[kv.first] & kRivalRingId)) {
      port_winner = kv.first;
      port_winner_started = started;
      continue;
    }
    {
      LOG_INFO("docker: replica %s lost ring id %u to container %s (%s)", op->spec.name.c_str(),
               op->spec.ring_id, engine_short_id(kv.first).c_str(),
               started ? "started already" : "created earlier");
      return start_fail(op, -EBUSY,
                        "ring id " + std::to_string(op->spec.ring_id) + " of pool " + p->cfg.pool +
                            " is claimed by container " + engine_short_id(kv.first) +
                            " of another load balancer");
    }
  }
  if (!port_winner.empty()) return claim_port_lost(op, port_winner, port_winner_started);
  if (undecided) {
    if (++op->claim_rounds > kClaimRoundsMax)
      return start_fail(op, -EBUSY,
                        "ring id " + std::to_string(op->spec.ring_id) + " of pool " + p->cfg.pool +
                            " is contended by a create of another load balancer that neither "
                            "started nor went away");
    op->created_ns.clear();
    op->rival_state.clear();
    op->rival_kind.clear();
    return claim_begin(op);
  }
  start_run(op);
}

static void claim_inspect(StartOp* op, const std::string& id) {
  op->claim_pending++;
  docker_api_call(op->p->eng.api, "GET", "/containers/" + docker_url_escape(id) + "/json", nullptr,
                  op->p->cfg.call_timeout_ms, [op, id](const DockerReply& r) {
                    json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
                    int64_t ns = j ? parse_created_ns(json_string_value(json_object_get(j, "Created"))) : -1;
                    if (j) json_decref(j);
                    if (ns >= 0) op->created_ns[id] = ns;
                    // A rival that is gone (404) claims nothing; any other failure fails the claim.
                    else if (!(r.status == 0 && r.http_status == 404)) op->claim_failed = true;
                    if (--op->claim_pending == 0) claim_decide(op);
                  });
}

static void on_claim_listed(StartOp* op, const DockerReply& r) {
  ProvDocker* p = op->p;
  if (p->eng.closing) return start_cancelled(op);
  int st = 0;
  std::string err;
  json_t* arr = engine_reply_array(
      r, "cannot claim ring id " + std::to_string(op->spec.ring_id) + " for replica " + op->spec.name,
      &st, &err);
  if (!arr) return start_fail(op, st, err);
  std::vector<std::string> rivals;
  int64_t now_s = static_cast<int64_t>(time(nullptr));
  std::string ring_id = std::to_string(op->spec.ring_id);
  std::string port = std::to_string(op->inst.port);
  size_t i;
  json_t* c;
  json_array_foreach(arr, i, c) {
    DockerListed l = docker_listed(c);
    const std::string &id = l.id, &state = l.state, &en = l.en;
    if (id.empty() || id == op->inst.id) continue;
    if (state == "exited" || state == "dead" || state == "removing") continue;
    if (state == "created" && now_s - l.created_s > kAbandonedCreateS) continue;
    int kind = 0;
    // Ring id: not the dead replica this one replaces, nor one draining after /rm.
    if (docker_json_str(l.labels, kLabelRingId) == ring_id && id != op->spec.replaces &&
        !docker_draining_name(en, id))
      kind |= kRivalRingId;
    // Port (host mode): any container that may listen on it, draining ones too.
    if (p->host_mode && docker_json_str(l.labels, kLabelPort) == port) kind |= kRivalPort;
    if (kind == 0) continue;
    rivals.push_back(id);
    op->rival_state[id] = state;
    op->rival_kind[id] = kind;
  }
  json_decref(arr);
  if (rivals.empty()) return start_run(op);
  claim_inspect(op, op->inst.id);
  for (const std::string& id : rivals) claim_inspect(op, id);
}

static void claim_begin(StartOp* op) {
  ProvDocker* p = op->p;
  // The pool's containers: its rivals for the ring id and, in host mode, for the port.
  std::string path = "/containers/json?all=1&filters=" + docker_label_filter(p);
  docker_api_call(p->eng.api, "GET", path, nullptr, p->cfg.call_timeout_ms,
                  [op](const DockerReply& r) { on_claim_listed(op, r); });
}

static void on_created(StartOp* op, const DockerReply& r) {
  ProvDocker* p = op->p;
  if (r.status == 0 && r.http_status == 201) {
    op->inst.id = engine_reply_id(r, "Id");
    op->t_created = uv_hrtime();
    if (op->inst.id.empty())
      return start_fail(op, -EIO, "Docker created " + op->spec.name + " without an Id");
    p->starting[op->inst.id] = op;
    if (p->eng.closing) return start_cancelled(op);
    claim_begin(op);
    return;
  }
  if (p->eng.closing) return start_cancelled(op);
  if (r.status != 0 && r.status != -ECANCELED) {
    // No answer (a timeout, a cut connection): the engine may still have created the container.
    // Look it up by name now and remove it if it is this pool's, instead of leaving it for the
    // next LB start to find.
    std::string err;
    int st = engine_reply_failure(r, "cannot create replica " + op->spec.name, &err);
    op->status = st;
    op->error = err;
    docker_api_call(p->eng.api, "GET",
                    "/containers/" + docker_url_escape(engine_name(p, op->spec.name)) + "/json",
                    nullptr, p->cfg.call_timeout_ms,
                    [op](const DockerReply& rr) { on_create_lost_inspected(op, rr); });
    return;
  }
  if (r.status == 0 && r.http_status == 409) {
    docker_api_call(p->eng.api, "GET",
                    "/containers/" + docker_url_escape(engine_name(p, op->spec.name)) + "/json",
                    nullptr, p->cfg.call_timeout_ms,
                    [op](const DockerReply& rr) { on_conflict_inspected(op, rr); });
    return;
  }
  std::string err;
  int st = engine_reply_failure(r, "cannot create replica " + op->spec.name, &err);
  start_fail(op, st, err);
}

// The create body: image, env, labels, network, the replica spec (command, CPU and memory limits);
// no restart policy (the LB heals, not the engine).
static json_t* create_body(const ProvDocker* p, const StartOp* op) {
  const std::string& name = op->spec.name;
  std::string port = std::to_string(op->inst.port);
  json_t* env = json_array();
  json_array_append_new(env, json_string(("SERVER_ID=" + name).c_str()));
  json_array_append_new(env, json_string(("PORT=" + port).c_str()));
  if (p->host_mode) json_array_append_new(env, json_string("ADDRESS=127.0.0.1"));
  for (const std::string& kv : p->cfg.env) json_array_append_new(env, json_string(kv.c_str()));
  json_t* labels = json_pack("{s:s, s:s, s:s, s:s}", kLabelPool, p->cfg.pool.c_str(), kLabelRingId,
                             std::to_string(op->spec.ring_id).c_str(), kLabelPort, port.c_str(),
                             kLabelWeight, std::to_string(op->spec.weight).c_str());
  json_t* host_config = json_pack("{s:s, s:{s:s}}", "NetworkMode", p->cfg.network.c_str(),
                                  "RestartPolicy", "Name", "no");
  json_t* body =
      json_pack("{s:s, s:o, s:o, s:i, s:o}", "Image", p->cfg.image.c_str(), "Env", env, "Labels",
                labels, "StopTimeout", p->cfg.stop_grace_s, "HostConfig", host_config);
  if (!p->cfg.cmd.empty()) {
    json_t* cmd = json_array();
    for (const std::string& w : p->cfg.cmd) json_array_append_new(cmd, json_string(w.c_str()));
    json_object_set_new(body, "Cmd", cmd);
  }
  if (p->cfg.nano_cpus > 0)
    json_object_set_new(host_config, "NanoCpus", json_integer(static_cast<json_int_t>(p->cfg.nano_cpus)));
  if (p->cfg.memory > 0)
    json_object_set_new(host_config, "Memory", json_integer(static_cast<json_int_t>(p->cfg.memory)));
  if (!p->host_mode) {
    json_object_set_new(body, "Hostname", json_string(name.c_str()));
    json_t* endpoint = json_pack("{s:[s]}", "Aliases", engine_name(p, name).c_str());
    json_t* endpoints = json_object();
    json_object_set_new(endpoints, p->cfg.network.c_str(), endpoint);
    json_object_set_new(body, "NetworkingConfig", json_pack("{s:o}", "EndpointsConfig", endpoints));
  }
  return body;
}

static void start_create(StartOp* op) {
  json_t* body = create_body(op->p, op);
  docker_api_call(op->p->eng.api, "POST",
                  "/containers/create?name=" + docker_url_escape(engine_name(op->p, op->spec.name)),
                  body, op->p->cfg.call_timeout_ms, [op](const DockerReply& r) { on_created(op, r); });
  json_decref(body);
}

void ProvDocker::start(const ReplicaSpec& spec, ProvStartCb cb) {
  eng.ops++;
  StartOp* op = new StartOp;
  op->p = this;
  op->spec = spec;
  op->cb = std::move(cb);
  op->t0 = uv_hrtime();
  op->inst.name = spec.name;
  op->inst.ring_id = spec.ring_id;
  op->inst.host = host_mode ? "127.0.0.1" : engine_name(this, spec.name);
  op->inst.port = host_mode ? 0 : kBridgePort;
  std::string err;
  int st = 0;
  if (eng.closing) {
    st = -ECANCELED;
    err = "the docker provisioner is closing";
  } else if (!engine_valid_name(spec.name)) {
    st = -EINVAL;
    err = "invalid replica name \"" + spec.name +
          "\": use 2 to 63 of A-Z a-z 0-9 _ . -, starting with a letter or digit";
  } else if (host_mode && (op->inst.port = port_reserve(this)) == 0) {
    st = -EADDRINUSE;
    err = "no free port for replica " + spec.name + " in " + std::to_string(cfg.port_min) + "-" +
          std::to_string(cfg.port_max);
  }
  if (st != 0) {
    op->status = st;
    op->error = err;
    docker_api_defer(eng.api, [op] { start_finish(op); });
    return;
  }
  start_create(op);
}

// ---- readiness probe (host mode): connect to 127.0.0.1:port until it accepts ----

static void probe_attempt(StartOp* op);

static void on_probe_timer_closed(uv_handle_t* h) {
  StartOp* op = static_cast<StartOp*>(h->data);
  ProvDocker* p = op->p;
  p->eng.busy--;
  if (op->status != 0)
    start_fail(op, op->status, op->error);  // removes the container, also when cancelled
  else
    start_finish(op);
  engine_maybe_close_api(&p->eng);
}

// Ends the probe with status (0 = listening); the outcome is applied once the timer is closed.
static void probe_end(StartOp* op, int status, const std::string& error) {
  op->probing = false;
  op->status = status;
  op->error = error;
  uv_close(reinterpret_cast<uv_handle_t*>(&op->timer), on_probe_timer_closed);
}

static void on_probe_timer(uv_timer_t* t) {
  probe_attempt(static_cast<StartOp*>(t->data));
}

// An attempt ended (its handle is closed): listening, died, out of time, or try again later.
static void on_probe_done(EngineProbe* pr) {
  StartOp* op = container_of(pr, &StartOp::probe);
  ProvDocker* p = op->p;
  if (p->eng.closing) {
    return probe_end(
        op, -ECANCELED,
        "the docker provisioner closed while replica " + op->spec.name + " was starting");
  }
  if (op->probe.connected) return probe_end(op, 0, "");
  if (op->died) {
    return probe_end(op, -EIO,
                     "replica " + op->spec.name + " (container " + engine_short_id(op->inst.id) + ") " +
                         op->died_cause +
                         " before listening on 127.0.0.1:" + std::to_string(op->inst.port));
  }
  if (uv_now(p->eng.loop) >= op->deadline) {
    return probe_end(op, -ETIMEDOUT,
                     "replica " + op->spec.name + " (container " + engine_short_id(op->inst.id) +
                         ") did not listen on 127.0.0.1:" + std::to_string(op->inst.port) +
                         " within " + std::to_string(p->cfg.ready_timeout_ms) + " ms");
  }
  uv_timer_start(&op->timer, on_probe_timer, kProbeIntervalMs, 0);
}

static void probe_attempt(StartOp* op) {
  engine_probe_attempt(&op->probe, op->p->eng.loop, op->inst.port, on_probe_done);
}

static void probe_begin(StartOp* op) {
  ProvDocker* p = op->p;
  uv_timer_init(p->eng.loop, &op->timer);
  op->timer.data = op;
  op->probing = true;
  p->eng.busy++;
  op->deadline = uv_now(p->eng.loop) + p->cfg.ready_timeout_ms;
  probe_attempt(op);
}

// ---- stop ----

void ProvDocker::stop(const ReplicaInstance& inst, ProvDoneCb cb) {
  std::string id = inst.id.empty() ? engine_name(this, inst.name) : inst.id;
  uint64_t t0 = uv_hrtime();
  if (eng.closing) {
    docker_api_defer(eng.api, [cb] { cb(-ECANCELED, "the docker provisioner is closing"); });
    return;
  }
  eng.ops++;
  engine_quiet_add(&eng, id);
  // Renamed to the draining name first (unless release_name did): the other LBs of the pool see
  // the rename (on_gone) and take the replica out of their rings instead of seeing it die and
  // healing it. Whatever the rename answers, the stop follows (after it: the rename is seen first).
  bool rename = !inst.id.empty() && !released.count(inst.id);
  released.erase(inst.id);
  std::string path =
      "/containers/" + docker_url_escape(id) + "/stop?t=" + std::to_string(cfg.stop_grace_s);
  long timeout = (cfg.stop_grace_s + 15) * 1000L;  // the engine waits up to t s before it answers
  uint16_t port = host_mode ? inst.port : 0;
  std::string name = inst.name;
  auto stop_now = [this, path, timeout, id, name, port, t0, cb]() {
    docker_api_call(
        eng.api, "POST", path, nullptr, timeout, [this, id, name, port, t0, cb](const DockerReply& r) {
          double stop_ms = engine_ms_since(t0);
          if (r.status != 0 || (r.http_status != 204 && r.http_status != 304 && r.http_status != 404))
            LOG_WARN("docker: stop of replica %s: %s; removing it anyway", name.c_str(),
                     docker_error_message(r).c_str());
          docker_remove_container(this, id, [this, name, port, t0, stop_ms, cb](const DockerReply& rr) {
            if (!engine_removed_ok(rr)) {
              std::string err;
              int st = engine_reply_failure(rr, "cannot remove replica " + name, &err);
              LOG_WARN("docker: %s", err.c_str());
              cb(st == -ENOENT ? -EIO : st, err);
            } else {
              if (port) ports_used.erase(port);
              LOG_INFO("docker: replica %s stopped and removed in %.0f ms (stop %.0f, remove %.0f)",
                       name.c_str(), engine_ms_since(t0), stop_ms, engine_ms_since(t0) - stop_ms);
              cb(0, "");
            }
            eng.ops--;
            engine_maybe_close_api(&eng);
          });
        });
  };
  if (!rename) return stop_now();
  std::string to = engine_name(this, inst.name) + kDrainingMark + engine_short_id(inst.id);
  docker_api_call(eng.api, "POST",
                  "/containers/" + docker_url_escape(inst.id) + "/rename?name=" + docker_url_escape(to),
                  nullptr, cfg.call_timeout_ms, [stop_now](const DockerReply&) { stop_now(); });
}

// ---- release_name: rename a draining container ----

bool ProvDocker::release_name(const ReplicaInstance& inst, ProvDoneCb cb) {
  if (inst.id.empty()) return false;
  if (eng.closing) {
    docker_api_defer(eng.api, [cb] { cb(-ECANCELED, "the docker provisioner is closing"); });
    return true;
  }
  eng.ops++;
  std::string to = engine_name(this, inst.name) + kDrainingMark + engine_short_id(inst.id);
  engine_quiet_add(&eng, inst.id);  // our own rename and the stop after the drain: no on_gone, no on_exit
  std::string name = inst.name;
  docker_api_call(eng.api, "POST",
                  "/containers/" + docker_url_escape(inst.id) + "/rename?name=" + docker_url_escape(to),
                  nullptr, cfg.call_timeout_ms, [this, id = inst.id, name, to, cb](const DockerReply& r) {
                    // 404: the container is gone already, so the name is free as well.
                    if (r.status == 0 && (r.http_status == 204 || r.http_status == 404)) {
                      if (r.http_status == 204) released.insert(id);
                      LOG_INFO("docker: replica %s renamed %s while it drains", name.c_str(), to.c_str());
                      cb(0, "");
                    } else {
                      std::string err;
                      engine_reply_failure(r, "cannot rename draining replica " + name, &err);
                      cb(-EIO, err);
                    }
                    eng.ops--;
                    engine_maybe_close_api(&eng);
                  });
  return true;
}

// ---- close ----

void ProvDocker::close(std::function<void()> cb) {
  // The client is closed last, once no probe can still defer work to it and every start, stop and
  // list has called back (a start cancelled by close removes its container through the client).
  if (!engine_pool_close(&eng, std::move(cb))) return;
  if (events) docker_stream_close(events);
  // Probes waiting on their timer end now; one that is connecting ends in its close callback.
  std::vector<StartOp*> ops;
  for (auto& kv : starting) ops.push_back(kv.second);
  for (StartOp* op : ops) {
    if (op->probing && !op->probe.connecting &&
        uv_is_active(reinterpret_cast<uv_handle_t*>(&op->timer))) {
      uv_timer_stop(&op->timer);
      probe_end(op, -ECANCELED,
                "the docker provisioner closed while replica " + op->spec.name + " was starting");
    }
  }
  engine_maybe_close_api(&eng);
}

// ---- create ----

Provisioner* prov_docker_create(uv_loop_t* loop, const ProvDockerConfig& cfg, std::string* err) {
  if (!engine_config_check("docker", cfg.image, cfg.pool, cfg.network,
                           "host, or a user-defined bridge network's name", cfg.port_min,
                           cfg.port_max, err))
    return nullptr;
  bool host_mode = cfg.network == "host";
  if (cfg.stop_grace_s < 0 || cfg.ready_timeout_ms <= 0) {
    *err = "the stop grace must be >= 0 s and the ready timeout > 0 ms";
    return nullptr;
  }
  DockerApi* api = nullptr;
  if (docker_api_open(loop, cfg.socket.c_str(), &api, err) != 0) return nullptr;
  ProvDocker* p = new ProvDocker;
  engine_pool_init(&p->eng, loop, api, "docker");
  p->cfg = cfg;
  p->host_mode = host_mode;
  p->next_port = cfg.port_min;
  p->eng.events_retry.data = p;
  p->eng.resync.data = p;
  if (cfg.watch_events) {
    docker_events_open(p);
    if (cfg.resync_ms > 0) uv_timer_start(&p->eng.resync, docker_on_resync_timer, cfg.resync_ms, cfg.resync_ms);
  }
  LOG_INFO("docker: provisioner for pool %s, image %s, network %s%s", cfg.pool.c_str(),
           cfg.image.c_str(), cfg.network.c_str(),
           host_mode ? (" (ports " + std::to_string(cfg.port_min) + "-" +
                        std::to_string(cfg.port_max) + ")")
                           .c_str()
                     : " (replicas on port 5000)");
  return p;
}
