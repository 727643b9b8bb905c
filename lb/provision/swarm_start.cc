// The swarm provisioner's start(): one service per replica, its ring id claimed before its task
// runs.
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

// ---- start ----

static void poll_tasks(StartOp* op);
static void claim_check(StartOp* op);
static void start_create(StartOp* op);
static void probe_attempt(StartOp* op);

static void on_op_timer_closed(uv_handle_t* h) {
  StartOp* op = static_cast<StartOp*>(h->data);
  ProvSwarm* p = op->p;
  if (op->status != 0) {
    if (p->host_mode && op->inst.port) p->ports_used.erase(op->inst.port);
    LOG_WARN("swarm: start of replica %s failed: %s", op->spec.name.c_str(), op->error.c_str());
  } else {
    p->members[op->inst.id] = op->inst;
    LOG_INFO(
        "swarm: replica %s up as service %s (%s) at %s:%u in %.0f ms (create %.0f, task "
        "running %.0f, listen %.0f)",
        op->spec.name.c_str(), op->service.c_str(), engine_short_id(op->inst.id).c_str(),
        op->inst.host.c_str(), op->inst.port, engine_ms_since(op->t0),
        (op->t_created - op->t0) / 1e6, (op->t_running - op->t_created) / 1e6,
        (uv_hrtime() - op->t_running) / 1e6);
  }
  ReplicaInstance none;
  op->cb(op->status, op->error, op->status == 0 ? op->inst : none);
  delete op;
  p->eng.ops--;
  engine_maybe_close_api(&p->eng);
}

static void op_deliver(StartOp* op) {
  if (!op->inst.id.empty()) op->p->starting.erase(op->inst.id);
  auto it = op->p->starting_names.find(op->spec.name);
  if (it != op->p->starting_names.end() && --it->second == 0) op->p->starting_names.erase(it);
  uv_close(reinterpret_cast<uv_handle_t*>(&op->timer), on_op_timer_closed);
}

// Ends op with status (0: the replica is up). Called when nothing of op is in flight (no call, no
// probe, the timer stopped). A failed start removes the service it created first; a start that
// succeeds while the provisioner closes is cancelled the same way, since nobody else would remove
// the service.
void op_end(StartOp* op, int status, const std::string& error) {
  ProvSwarm* p = op->p;
  if (op->ending) return;
  op->ending = true;
  if (status == 0 && p->eng.closing) {
    status = -ECANCELED;
  }
  if (status == -ECANCELED && op->error.empty())
    op->error = "the swarm provisioner closed while replica " + op->spec.name + " was starting";
  op->status = status;
  if (status != 0 && error.size()) op->error = error;
  if (status == 0 || op->inst.id.empty()) return op_deliver(op);
  remove_service(p, op->inst.id, [op](const DockerReply& r) {
    if (!engine_removed_ok(r))
      LOG_WARN("swarm: could not remove service %s of failed replica %s: %s", op->service.c_str(),
               op->spec.name.c_str(), docker_error_message(r).c_str());
    op_deliver(op);
  });
}

static void on_op_timer(uv_timer_t* t) {
  StartOp* op = static_cast<StartOp*>(t->data);
  op->waiting = false;
  if (op->t_running == 0)
    poll_tasks(op);
  else
    probe_attempt(op);
}

static void op_wait(StartOp* op, int ms) {
  op->waiting = true;
  uv_timer_start(&op->timer, on_op_timer, ms, 0);
}

static std::string timeout_error(const StartOp* op, const char* what) {
  std::string s = "replica " + op->spec.name + " (service " + op->service + ") " + what +
                  " within " + std::to_string(op->p->cfg.ready_timeout_ms) + " ms";
  if (!op->task_error.empty()) s += " (its task: " + op->task_error + ")";
  return s;
}

// ---- host network: connect to 127.0.0.1:port until the task accepts ----

// An attempt ended (its handle is closed): listening, out of time, or try again later.
static void on_probe_done(EngineProbe* pr) {
  StartOp* op = container_of(pr, &StartOp::probe);
  ProvSwarm* p = op->p;
  if (p->eng.closing) return op_end(op, -ECANCELED, "");
  if (op->probe.connected) return op_end(op, 0, "");
  if (uv_now(p->eng.loop) >= op->deadline)
    return op_end(
        op, -ETIMEDOUT,
        timeout_error(op,
                      ("did not listen on 127.0.0.1:" + std::to_string(op->inst.port)).c_str()));
  op_wait(op, kProbeIntervalMs);
}

static void probe_attempt(StartOp* op) {
  engine_probe_attempt(&op->probe, op->p->eng.loop, op->inst.port, on_probe_done);
}

// ---- waiting for the task ----

// The service's tasks: running → the replica is placed (host network: probe it); rejected with
// "No such image" → fail at once (the engine would retry forever); anything else → poll again.
static void on_tasks(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  if (p->eng.closing) return op_end(op, -ECANCELED, "");
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  bool running = false;
  std::string image_missing;
  if (json_is_array(arr)) {
    size_t i;
    json_t* t;
    json_array_foreach(arr, i, t) {
      json_t* st = json_object_get(t, "Status");
      std::string state = docker_json_str(st, "State");
      std::string err = docker_json_str(st, "Err");
      if (state == "running" && std::string(docker_json_str(t, "DesiredState")) == "running")
        running = true;
      if (!err.empty()) {
        op->task_error = state + ": " + err;
        if (err.rfind("No such image", 0) == 0) image_missing = err;
      }
    }
  } else {
    std::string err;
    engine_reply_failure(r, "cannot list the tasks of service " + op->service, &err);
    op->task_error = err;
  }
  if (arr) json_decref(arr);
  if (running) {
    op->t_running = uv_hrtime();
    if (p->host_mode) return probe_attempt(op);
    return op_end(op, 0, "");
  }
  if (!image_missing.empty())
    return op_end(op, -ENOENT,
                  "cannot start replica " + op->spec.name + ": Docker says \"" + image_missing +
                      "\" (the image must exist on every node that may run the task; build it with "
                      "`make images`, or pass another image)");
  if (uv_now(p->eng.loop) >= op->deadline)
    return op_end(op, -ETIMEDOUT, timeout_error(op, "did not run"));
  op_wait(op, kTaskPollMs);
}

static void poll_tasks(StartOp* op) {
  json_t* f = json_pack("{s:[s]}", "service", op->inst.id.c_str());
  docker_api_call(op->p->eng.api, "GET", "/tasks?filters=" + engine_filter_query(f), nullptr,
                  op->p->cfg.call_timeout_ms, [op](const DockerReply& r) { on_tasks(op, r); });
}

// ---- the ring id claim ----

// A start may lose its port this many times (each time to a service of another LB that took the
// same port at the same moment) before it gives up.
static const int kPortClaimsMax = 20;

// The claim lost op's port (host network) to service rival of another LB: op's service never had
// a task, so it is removed and created again on another port of the range. The lost port stays
// reserved here, since the rival holds it.
static void claim_port_lost(StartOp* op, const std::string& rival) {
  ProvSwarm* p = op->p;
  LOG_INFO("swarm: replica %s lost port %u to service %s; trying another port",
           op->spec.name.c_str(), op->inst.port, engine_short_id(rival).c_str());
  if (++op->port_claims > kPortClaimsMax)
    return op_end(op, -EADDRINUSE,
                  "no port for replica " + op->spec.name + ": " + std::to_string(kPortClaimsMax) +
                      " ports of the range were taken by other load balancers of pool " +
                      p->cfg.pool + " at the same moment");
  std::string lost = op->inst.id;
  remove_service(p, lost, [op, lost](const DockerReply& r) {
    ProvSwarm* p = op->p;
    if (!engine_removed_ok(r)) {
      std::string err;
      engine_reply_failure(r, "cannot remove service " + op->service + " after its port was taken",
                           &err);
      return op_end(op, -EIO, err);
    }
    p->starting.erase(lost);
    op->inst.id.clear();
    if (p->eng.closing) return op_end(op, -ECANCELED, "");
    op->inst.port = port_reserve(p, op->spec.ring_id);
    if (op->inst.port == 0)
      return op_end(op, -EADDRINUSE,
                    "no free port for replica " + op->spec.name + " in " +
                        std::to_string(p->cfg.port_min) + "-" + std::to_string(p->cfg.port_max));
    start_create(op);
  });
}

// The services of the pool: when one the manager created before ours holds this start's ring id
// (another LB's /add raced ours), ours is removed and the start fails with -EBUSY; when one that
// has its task or was created before ours holds its port (host network), ours is created again on
// another port. Every LB decides the same way from the same list.
static void on_claim_listed(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  if (p->eng.closing) return op_end(op, -ECANCELED, "");
  int st = 0;
  std::string err;
  json_t* arr = engine_reply_array(r, "cannot check the ring id claim of replica " + op->spec.name,
                                   &st, &err);
  if (!arr) return op_end(op, st, err);
  std::vector<ReplicaInstance> winners = pool_winners(p, arr, true, nullptr, nullptr);
  std::string port_winner = p->host_mode ? port_holder(p, arr, op->inst.id, op->inst.port) : "";
  json_decref(arr);
  for (const ReplicaInstance& w : winners) {
    if (w.ring_id == op->spec.ring_id && w.id != op->inst.id)
      return op_end(op, -EBUSY,
                    "ring id " + std::to_string(op->spec.ring_id) + " of pool " + p->cfg.pool +
                        " is held by replica " + w.name + " (service " + engine_short_id(w.id) +
                        ")");
  }
  if (!port_winner.empty()) return claim_port_lost(op, port_winner);
  // The claim holds: now the service gets its task.
  spec_update(
      p, op->inst.id,
      [](json_t* spec) {
        json_object_set_new(spec, "Mode", json_pack("{s:{s:i}}", "Replicated", "Replicas", 1));
      },
      3,
      [op](const std::string& err) {
        if (op->p->eng.closing) return op_end(op, -ECANCELED, "");
        if (!err.empty())
          return op_end(
              op, -EIO,
              "cannot give service " + op->service + " its task: Docker says \"" + err + "\"");
        poll_tasks(op);
      });
}

static void claim_check(StartOp* op) {
  ProvSwarm* p = op->p;
  // The whole pool: the rivals for the ring id and, on the host network, for the port.
  docker_api_call(p->eng.api, "GET", services_path(p), nullptr, p->cfg.call_timeout_ms,
                  [op](const DockerReply& r) { on_claim_listed(op, r); });
}

// ---- create ----

static json_t* string_array(const std::vector<std::string>& v) {
  json_t* a = json_array();
  for (const std::string& s : v) json_array_append_new(a, json_string(s.c_str()));
  return a;
}

static json_t* pool_labels(const ProvSwarm* p, const StartOp* op) {
  json_t* labels =
      json_pack("{s:s, s:s, s:s, s:s}", kLabelPool, p->cfg.pool.c_str(), kLabelName,
                op->spec.name.c_str(), kLabelRingId, std::to_string(op->spec.ring_id).c_str(),
                kLabelWeight, std::to_string(op->spec.weight).c_str());
  if (p->host_mode)
    json_object_set_new(labels, kLabelPort, json_string(std::to_string(op->inst.port).c_str()));
  return labels;
}

// The service: one task of the image with the replica spec, labelled (service and container),
// restarted by the engine whatever its exit, placed by the constraints.
static json_t* create_body(const ProvSwarm* p, const StartOp* op) {
  const std::string& name = op->spec.name;
  std::vector<std::string> env = {"SERVER_ID=" + name, "PORT=" + std::to_string(op->inst.port)};
  if (p->host_mode) env.push_back("ADDRESS=127.0.0.1");
  env.insert(env.end(), p->cfg.env.begin(), p->cfg.env.end());
  json_t* container = json_pack("{s:s, s:o, s:o, s:I}", "Image", p->cfg.image.c_str(), "Env",
                                string_array(env), "Labels", pool_labels(p, op), "StopGracePeriod",
                                static_cast<json_int_t>(p->cfg.stop_grace_s) * 1000000000);
  if (!p->cfg.cmd.empty()) json_object_set_new(container, "Args", string_array(p->cfg.cmd));
  if (!p->host_mode) json_object_set_new(container, "Hostname", json_string(name.c_str()));
  json_t* limits = json_object();
  if (p->cfg.nano_cpus > 0)
    json_object_set_new(limits, "NanoCPUs",
                        json_integer(static_cast<json_int_t>(p->cfg.nano_cpus)));
  if (p->cfg.memory > 0)
    json_object_set_new(limits, "MemoryBytes",
                        json_integer(static_cast<json_int_t>(p->cfg.memory)));
  std::vector<std::string> constraints = p->cfg.constraints;
  if (p->host_mode) constraints.push_back("node.id==" + p->node_id);
  json_t* prefs = json_array();
  for (const std::string& label : p->cfg.spread)
    json_array_append_new(prefs,
                          json_pack("{s:{s:s}}", "Spread", "SpreadDescriptor", label.c_str()));
  // No alias: on an overlay network the service name resolves to the service's virtual IP, which
  // stays while the service exists, so an address the LB resolved once still reaches the task the
  // engine restarts (an alias would resolve to the task's own IP, which a restart changes).
  json_t* network = json_pack("{s:s}", "Target", p->cfg.network.c_str());
  json_t* task = json_pack(
      "{s:o, s:{s:o}, s:{s:s, s:I, s:i}, s:{s:o, s:o}, s:[o]}", "ContainerSpec", container,
      "Resources", "Limits", limits, "RestartPolicy", "Condition", "any", "Delay",
      static_cast<json_int_t>(p->cfg.restart_delay_ms) * 1000000, "MaxAttempts", 0, "Placement",
      "Constraints", string_array(constraints), "Preferences", prefs, "Networks", network);
  return json_pack("{s:s, s:o, s:o, s:{s:{s:i}}}", "Name", op->service.c_str(), "Labels",
                   pool_labels(p, op), "TaskTemplate", task, "Mode", "Replicated", "Replicas", 0);
}

// A 409: says who holds the name (a service of this pool, or another one).
static void on_conflict_inspected(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  std::string owner, id;
  if (j) {
    id = docker_json_str(j, "ID");
    owner = docker_json_str(json_object_get(json_object_get(j, "Spec"), "Labels"), kLabelPool);
    json_decref(j);
  }
  std::string why = owner == p->cfg.pool
                        ? "pool " + p->cfg.pool + " already has a service of that name (" +
                              engine_short_id(id) + ")"
                        : "the name is taken by service " +
                              (id.empty() ? op->service : engine_short_id(id)) +
                              (owner.empty() ? "" : " of pool " + owner) + ", which pool " +
                              p->cfg.pool + " does not own";
  op_end(op, -EEXIST,
         "cannot create replica " + op->spec.name + " as service " + op->service + ": " + why);
}

// A create without an answer: the service of that name is removed when it is this start's (pool
// and ring id), then the start fails with the create's error.
static void on_create_lost_inspected(StartOp* op, const DockerReply& r, int status,
                                     const std::string& error) {
  ProvSwarm* p = op->p;
  json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (j) {
    json_t* labels = json_object_get(json_object_get(j, "Spec"), "Labels");
    if (std::string(docker_json_str(labels, kLabelPool)) == p->cfg.pool &&
        std::string(docker_json_str(labels, kLabelRingId)) == std::to_string(op->spec.ring_id))
      op->inst.id = docker_json_str(j, "ID");  // op_end removes it
    json_decref(j);
  }
  op_end(op, status, error);
}

static void on_created(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  if (r.status == 0 && r.http_status == 201) {
    op->inst.id = engine_reply_id(r, "ID");
    op->t_created = uv_hrtime();
    if (op->inst.id.empty())
      return op_end(op, -EIO, "Docker created service " + op->service + " without an ID");
    p->starting[op->inst.id] = op;
    if (p->eng.closing) return op_end(op, -ECANCELED, "");
    return claim_check(op);
  }
  std::string err;
  int st = engine_reply_failure(
      r, "cannot create replica " + op->spec.name + " as service " + op->service, &err);
  if (r.status != 0 && r.status != -ECANCELED) {
    docker_api_call(p->eng.api, "GET", "/services/" + docker_url_escape(op->service), nullptr,
                    p->cfg.call_timeout_ms, [op, st, err](const DockerReply& rr) {
                      on_create_lost_inspected(op, rr, st, err);
                    });
    return;
  }
  if (r.status == 0 && r.http_status == 409) {
    docker_api_call(p->eng.api, "GET", "/services/" + docker_url_escape(op->service), nullptr,
                    p->cfg.call_timeout_ms,
                    [op](const DockerReply& rr) { on_conflict_inspected(op, rr); });
    return;
  }
  op_end(op, st, err);
}

void ProvSwarm::start(const ReplicaSpec& spec, ProvStartCb cb) {
  eng.ops++;
  StartOp* op = new StartOp;
  op->p = this;
  op->spec = spec;
  op->cb = std::move(cb);
  op->t0 = uv_hrtime();
  op->service = cfg.name_prefix + spec.name;
  op->inst.name = spec.name;
  op->inst.ring_id = spec.ring_id;
  op->inst.weight = spec.weight;
  op->inst.host = host_mode ? "127.0.0.1" : op->service;
  op->inst.port = host_mode ? 0 : kOverlayPort;
  uv_timer_init(eng.loop, &op->timer);
  op->timer.data = op;
  starting_names[spec.name]++;
  op->deadline = uv_now(eng.loop) + cfg.ready_timeout_ms;
  if (eng.closing) return op_end(op, -ECANCELED, "the swarm provisioner is closing");
  if (!engine_valid_name(op->service))
    return op_end(op, -EINVAL,
                  "invalid service name \"" + op->service +
                      "\": use 2 to 63 of A-Z a-z 0-9 _ . -, starting with a letter or digit");
  if (host_mode && (op->inst.port = port_reserve(this, spec.ring_id)) == 0)
    return op_end(op, -EADDRINUSE,
                  "no free port for replica " + spec.name + " in " + std::to_string(cfg.port_min) +
                      "-" + std::to_string(cfg.port_max));
  start_create(op);
}

static void start_create(StartOp* op) {
  json_t* body = create_body(op->p, op);
  docker_api_call(op->p->eng.api, "POST", "/services/create", body, op->p->cfg.call_timeout_ms,
                  [op](const DockerReply& r) { on_created(op, r); });
  json_decref(body);
}

}  // namespace swarm_impl
