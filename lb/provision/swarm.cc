#include "lb/provision/swarm.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <set>

#include "lb/log.h"
#include "lb/provision/docker_api.h"
#include "ring/ring.h"  // kRingMaxWeight

static const char kLabelPool[] = "ringlb.pool";
static const char kLabelName[] = "ringlb.name";
static const char kLabelRingId[] = "ringlb.ring-id";
static const char kLabelPort[] = "ringlb.port";
static const char kLabelWeight[] = "ringlb.weight";
// Set by release_name when /rm drains the replica: every LB of the pool takes it out (on_gone), and
// an LB that starts adopts no service that carries it (its LB stopped in the middle of a drain).
static const char kLabelDraining[] = "ringlb.draining";
// Task containers carry the service's id as this label (set by the engine).
static const char kLabelServiceId[] = "com.docker.swarm.service.id";
static const uint16_t kOverlayPort = 5000;
static const int kTaskPollMs = 100;     // between task lists while a start waits for its task
static const int kProbeIntervalMs = 20;  // between connects while a host-network task comes up
static const int kResyncDelayMs = 50;   // service events within this are one re-list
// A re-list this long after the last, whatever the events said: the engine drops events for a slow
// reader, and a stream that reconnects may have missed some.
static const int kResyncPeriodMs = 10000;
static const size_t kQuietMax = 512;
static const int kEventsRetryMaxMs = 30000;

struct ProvSwarm;

// One start(): create the service, wait until its task runs, and on the host network until it
// accepts connections. Owned by its chain of callbacks; freed once its timer is closed.
struct StartOp {
  ProvSwarm* p = nullptr;
  ReplicaSpec spec;
  ProvStartCb cb;
  ReplicaInstance inst;
  std::string service;  // the service's name (prefix + replica name)
  uint64_t t0 = 0, t_created = 0, t_running = 0;
  uint64_t deadline = 0;  // loop time
  uv_timer_t timer;       // between task polls and probes; closing it ends the op
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  bool waiting = false;     // the timer runs (nothing else is in flight)
  bool connecting = false;  // a probe's tcp handle is open
  bool connected = false;
  bool ending = false;
  std::string task_error;  // the last failure of one of its tasks, for the timeout's message
  int status = 0;
  std::string error;
};

struct ProvSwarm final : Provisioner {
  uv_loop_t* loop = nullptr;
  ProvSwarmConfig cfg;
  DockerApi* api = nullptr;
  bool host_mode = true;
  std::string node_id;  // the LB's own node (host mode constrains tasks to it)
  DockerStream* container_events = nullptr;
  DockerStream* service_events = nullptr;
  uv_timer_t events_retry;  // reopens a stream that ended; data = this
  int events_retry_ms = 1000;
  uv_timer_t resync;  // a re-list of the pool's services after service events; data = this
  bool resync_running = false;
  bool resync_again = false;
  // list() has answered: re-lists compare with what the registry adopted. Before it, a re-list
  // would report the pool's services as other LBs' (on_appear) instead of letting list adopt them.
  bool listed = false;
  std::set<uint16_t> ports_used;
  std::map<std::string, StartOp*> starting;  // by service id
  // Replica names of starts not yet answered, also before the create's answer gave their service
  // id: a re-list in that moment must not report our own new service as another LB's.
  std::map<std::string, int> starting_names;
  // The pool's services this LB's registry knows (started, adopted, or reported by on_appear),
  // by service id: what a re-list is compared with.
  std::map<std::string, ReplicaInstance> members;
  std::set<std::string> quiet;  // service ids we remove ourselves: their task deaths are ours
  std::deque<std::string> quiet_order;
  int ops = 0;  // start, stop, list and resync calls whose callback has not run yet
  bool closing = false;
  bool api_closing = false;
  int close_pending = 0;
  std::function<void()> close_cb;

  const char* kind() const override { return "swarm"; }
  bool heals_itself() const override { return true; }
  void start(const ReplicaSpec& spec, ProvStartCb cb) override;
  void stop(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void list(ProvListCb cb) override;
  void close(std::function<void()> cb) override;
  bool release_name(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void set_template(const ReplicaTemplate& t) override {
    cfg.image = t.image;
    cfg.env = t.env;
    cfg.cmd = t.cmd;
    cfg.nano_cpus = t.nano_cpus;
    cfg.memory = t.memory;
  }
};

// ---- small helpers ----

static void quiet_add(ProvSwarm* p, const std::string& id) {
  if (id.empty() || !p->quiet.insert(id).second) return;
  p->quiet_order.push_back(id);
  if (p->quiet_order.size() > kQuietMax) {
    p->quiet.erase(p->quiet_order.front());
    p->quiet_order.pop_front();
  }
}

// Docker's rule for names ([a-zA-Z0-9][a-zA-Z0-9_.-]+) within 63 characters (a service name is
// also a DNS label on an overlay network).
static bool valid_name(const std::string& n) {
  if (n.size() < 2 || n.size() > 63) return false;
  for (size_t i = 0; i < n.size(); i++) {
    char c = n[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) return false;
  }
  return true;
}

// A replica name as the registry accepts it: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}.
static bool replica_name_ok(const std::string& n) {
  return !n.empty() && (n.size() == 1 ? isalnum(static_cast<unsigned char>(n[0])) != 0 : valid_name(n));
}

static std::string short_id(const std::string& id) { return id.substr(0, 12); }

static double ms_since(uint64_t t) { return (uv_hrtime() - t) / 1e6; }

static const char* json_str(json_t* obj, const char* key) {
  const char* s = json_string_value(json_object_get(obj, key));
  return s ? s : "";
}

static bool parse_u32(const char* s, uint32_t max, uint32_t* out) {
  if (!s || !*s) return false;
  char* end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v > max) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

static bool port_bindable(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}

// A free port of the range (not labelled on a service of the pool, bindable now) for ring id
// ring_id; 0 when none is. Ports follow ring ids, which the engine keeps unique in the pool (the
// claim), so two LBs of one pool that start replicas at the same moment do not pick one port: the
// range is cut in 8 generations of span/8 ports, and ring id k takes its port of the first
// generation that is free (a replica of id k that still drains after /rm holds the first, so its
// successor takes the second). Only when all 8 are taken does it scan the range.
static uint16_t port_reserve(ProvSwarm* p, uint32_t ring_id) {
  uint32_t span = static_cast<uint32_t>(p->cfg.port_max) - p->cfg.port_min + 1;
  uint32_t gen = span >= 8 ? span / 8 : span;
  uint32_t k = ring_id > 0 ? (ring_id - 1) % gen : 0;
  auto take = [p](uint32_t offset) -> uint16_t {
    uint16_t port = static_cast<uint16_t>(p->cfg.port_min + offset);
    if (p->ports_used.count(port) || !port_bindable(port)) return 0;
    p->ports_used.insert(port);
    return port;
  };
  for (uint32_t g = 0; g < 8 && k + g * gen < span; g++)
    if (uint16_t port = take(k + g * gen)) return port;
  for (uint32_t i = 0; i < span; i++)
    if (uint16_t port = take((k + i) % span)) return port;
  return 0;
}

static std::string filter_query(json_t* f) {
  char* s = json_dumps(f, JSON_COMPACT);
  std::string out = docker_url_escape(s ? s : "{}");
  free(s);
  json_decref(f);
  return out;
}

static std::string pool_label(const ProvSwarm* p) { return std::string(kLabelPool) + "=" + p->cfg.pool; }

static int reply_failure(const DockerReply& r, const std::string& what, std::string* err) {
  if (r.status != 0) {
    *err = what + ": " + r.error;
    return r.status == -ECANCELED ? -ECANCELED : -EIO;
  }
  std::string msg = docker_error_message(r);
  *err = what + ": Docker says \"" + msg + "\"";
  if (r.http_status == 503 && msg.find("not a swarm manager") != std::string::npos)
    *err += " (run `docker swarm init` on this node, or point ringlb at a manager)";
  if (r.http_status == 404) return -ENOENT;
  if (r.http_status == 400) return -EINVAL;
  if (r.http_status == 409) return -EEXIST;
  return -EIO;
}

static bool removed_ok(const DockerReply& r) {
  return r.status == 0 && (r.http_status == 200 || r.http_status == 204 || r.http_status == 404);
}

// Removes a service of the pool (DELETE /services/ID), quiet first: its task's death is ours.
static void remove_service(ProvSwarm* p, const std::string& id, DockerCallCb cb) {
  quiet_add(p, id);
  docker_api_call(p->api, "DELETE", "/services/" + docker_url_escape(id), nullptr,
                  p->cfg.call_timeout_ms, std::move(cb));
}

// When the manager created svc, as a string that sorts in time order (the fraction padded to 9
// digits: the engine trims trailing zeros), then its id: the order of a ring id claim.
static std::string created_key(json_t* svc) {
  std::string t = json_str(svc, "CreatedAt");
  size_t dot = t.find('.'), z = t.find('Z');
  if (z == std::string::npos) z = t.size();
  std::string whole = t.substr(0, dot == std::string::npos ? z : dot);
  std::string frac = dot == std::string::npos ? "" : t.substr(dot + 1, z - dot - 1);
  frac.resize(9, '0');
  return whole + "." + frac + " " + json_str(svc, "ID");
}

// Spec.Mode.Replicated.Replicas: 0 while the service's ring id claim is being checked (start
// creates it without a task, so a service that loses its claim never runs one), 1 afterwards.
static json_int_t task_count(json_t* svc) {
  return json_integer_value(json_object_get(
      json_object_get(json_object_get(json_object_get(svc, "Spec"), "Mode"), "Replicated"), "Replicas"));
}

// A service still without a task this long after its creation: its LB stopped between the create
// and the claim's outcome. It holds no claim, and list() removes it.
static const int kClaimStaleS = 60;

static bool stale_claim(json_t* svc) {
  if (task_count(svc) != 0) return false;
  time_t t = time(nullptr) - kClaimStaleS;
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000000000", &tm);
  return created_key(svc) < std::string(buf);
}

static bool draining(json_t* svc) {
  return json_object_get(json_object_get(json_object_get(svc, "Spec"), "Labels"), kLabelDraining) != nullptr;
}

// A service of the pool as a replica instance, from its labels (list and re-list). False when its
// labels do not make one (not ringlb's, or damaged).
static bool service_instance(const ProvSwarm* p, json_t* svc, ReplicaInstance* inst) {
  json_t* spec = json_object_get(svc, "Spec");
  json_t* labels = json_object_get(spec, "Labels");
  if (std::string(json_str(labels, kLabelPool)) != p->cfg.pool) return false;
  inst->id = json_str(svc, "ID");
  std::string service = json_str(spec, "Name");
  inst->name = json_str(labels, kLabelName);
  std::string weight = json_str(labels, kLabelWeight);
  uint32_t ring_id = 0, port = 0, w = 1;
  if (inst->id.empty() || !replica_name_ok(inst->name) ||
      !parse_u32(json_str(labels, kLabelRingId), UINT32_MAX, &ring_id) || ring_id == 0 ||
      (!weight.empty() && (!parse_u32(weight.c_str(), kRingMaxWeight, &w) || w == 0)))
    return false;
  if (p->host_mode) {
    if (!parse_u32(json_str(labels, kLabelPort), 65535, &port) || port == 0) return false;
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
using SpecMutate = std::function<void(json_t* spec)>;
using SpecDone = std::function<void(const std::string& err)>;

static void spec_update(ProvSwarm* p, const std::string& id, SpecMutate mutate, int tries, SpecDone done);

static void on_spec_read(ProvSwarm* p, const std::string& id, SpecMutate mutate, int tries, SpecDone done,
                         const DockerReply& r) {
  json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  json_t* spec = json_object_get(j, "Spec");
  json_int_t version = json_integer_value(json_object_get(json_object_get(j, "Version"), "Index"));
  if (!json_is_object(spec) || p->closing) {
    if (j) json_decref(j);
    return done(p->closing ? "the provisioner is closing" : docker_error_message(r));
  }
  mutate(spec);
  docker_api_call(p->api, "POST",
                  "/services/" + docker_url_escape(id) + "/update?version=" + std::to_string(version), spec,
                  p->cfg.call_timeout_ms, [p, id, mutate, tries, done](const DockerReply& rr) {
                    if (rr.status == 0 && rr.http_status == 200) return done("");
                    if (tries > 1 && rr.status == 0 && rr.http_status == 500)
                      return spec_update(p, id, mutate, tries - 1, done);
                    done(docker_error_message(rr));
                  });
  json_decref(j);
}

static void spec_update(ProvSwarm* p, const std::string& id, SpecMutate mutate, int tries, SpecDone done) {
  docker_api_call(p->api, "GET", "/services/" + docker_url_escape(id), nullptr, p->cfg.call_timeout_ms,
                  [p, id, mutate, tries, done](const DockerReply& r) { on_spec_read(p, id, mutate, tries, done, r); });
}

static std::string services_path(const ProvSwarm* p) {
  return "/services?filters=" + filter_query(json_pack("{s:[s]}", "label", pool_label(p).c_str()));
}

// The services of arr that are replicas of the pool (not draining), one per ring id: the one the
// manager created first holds it (the claim every LB of the pool reads alike). *losers gets the
// ids of services that lost their claim, *bad those whose labels do not make a replica.
// with_unscaled: services still without a task (a claim being checked) take part, as they do in
// a claim check; elsewhere only services with their task are replicas.
static std::vector<ReplicaInstance> pool_winners(const ProvSwarm* p, json_t* arr, bool with_unscaled,
                                                 std::vector<std::string>* losers,
                                                 std::vector<std::string>* bad,
                                                 std::vector<std::string>* drained) {
  std::map<uint32_t, std::pair<std::string, ReplicaInstance>> by_id;
  size_t i;
  json_t* svc;
  json_array_foreach(arr, i, svc) {
    ReplicaInstance inst;
    if (!service_instance(p, svc, &inst)) {
      if (bad) bad->push_back(json_str(svc, "ID"));
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
    if (it == by_id.end()) {
      by_id[inst.ring_id] = {key, inst};
    } else if (key < it->second.first) {
      if (losers) losers->push_back(it->second.second.id);
      it->second = {key, inst};
    } else if (losers) {
      losers->push_back(inst.id);
    }
  }
  std::vector<ReplicaInstance> out;
  for (auto& kv : by_id) out.push_back(kv.second.second);
  return out;
}

// ---- start ----

static void maybe_close_api(ProvSwarm* p);
static void poll_tasks(StartOp* op);
static void claim_check(StartOp* op);
static void probe_attempt(StartOp* op);

static void on_op_timer_closed(uv_handle_t* h) {
  StartOp* op = static_cast<StartOp*>(h->data);
  ProvSwarm* p = op->p;
  if (op->status != 0) {
    if (p->host_mode && op->inst.port) p->ports_used.erase(op->inst.port);
    LOG_WARN("swarm: start of replica %s failed: %s", op->spec.name.c_str(), op->error.c_str());
  } else {
    p->members[op->inst.id] = op->inst;
    LOG_INFO("swarm: replica %s up as service %s (%s) at %s:%u in %.0f ms (create %.0f, task "
             "running %.0f, listen %.0f)",
             op->spec.name.c_str(), op->service.c_str(), short_id(op->inst.id).c_str(),
             op->inst.host.c_str(), op->inst.port, ms_since(op->t0), (op->t_created - op->t0) / 1e6,
             (op->t_running - op->t_created) / 1e6, (uv_hrtime() - op->t_running) / 1e6);
  }
  ReplicaInstance none;
  op->cb(op->status, op->error, op->status == 0 ? op->inst : none);
  delete op;
  p->ops--;
  maybe_close_api(p);
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
static void op_end(StartOp* op, int status, const std::string& error) {
  ProvSwarm* p = op->p;
  if (op->ending) return;
  op->ending = true;
  if (status == 0 && p->closing) {
    status = -ECANCELED;
  }
  if (status == -ECANCELED && op->error.empty())
    op->error = "the swarm provisioner closed while replica " + op->spec.name + " was starting";
  op->status = status;
  if (status != 0 && error.size()) op->error = error;
  if (status == 0 || op->inst.id.empty()) return op_deliver(op);
  remove_service(p, op->inst.id, [op](const DockerReply& r) {
    if (!removed_ok(r))
      LOG_WARN("swarm: could not remove service %s of failed replica %s: %s", op->service.c_str(),
               op->spec.name.c_str(), docker_error_message(r).c_str());
    op_deliver(op);
  });
}

static void on_op_timer(uv_timer_t* t) {
  StartOp* op = static_cast<StartOp*>(t->data);
  op->waiting = false;
  if (op->t_running == 0) poll_tasks(op);
  else probe_attempt(op);
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

static void on_probe_closed(uv_handle_t* h) {
  StartOp* op = static_cast<StartOp*>(h->data);
  op->connecting = false;
  ProvSwarm* p = op->p;
  if (p->closing) return op_end(op, -ECANCELED, "");
  if (op->connected) return op_end(op, 0, "");
  if (uv_now(p->loop) >= op->deadline)
    return op_end(op, -ETIMEDOUT,
                  timeout_error(op, ("did not listen on 127.0.0.1:" + std::to_string(op->inst.port)).c_str()));
  op_wait(op, kProbeIntervalMs);
}

static void on_probe_connect(uv_connect_t* req, int status) {
  StartOp* op = static_cast<StartOp*>(req->data);
  op->connected = status == 0;
  uv_close(reinterpret_cast<uv_handle_t*>(&op->tcp), on_probe_closed);
}

static void probe_attempt(StartOp* op) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", op->inst.port, &addr);
  uv_tcp_init(op->p->loop, &op->tcp);
  op->tcp.data = op;
  op->connect_req.data = op;
  op->connecting = true;
  op->connected = false;
  if (uv_tcp_connect(&op->connect_req, &op->tcp, reinterpret_cast<const sockaddr*>(&addr),
                     on_probe_connect) != 0)
    uv_close(reinterpret_cast<uv_handle_t*>(&op->tcp), on_probe_closed);
}

// ---- waiting for the task ----

// The service's tasks: running → the replica is placed (host network: probe it); rejected with
// "No such image" → fail at once (the engine would retry forever); anything else → poll again.
static void on_tasks(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  if (p->closing) return op_end(op, -ECANCELED, "");
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  bool running = false;
  std::string image_missing;
  if (json_is_array(arr)) {
    size_t i;
    json_t* t;
    json_array_foreach(arr, i, t) {
      json_t* st = json_object_get(t, "Status");
      std::string state = json_str(st, "State");
      std::string err = json_str(st, "Err");
      if (state == "running" && std::string(json_str(t, "DesiredState")) == "running") running = true;
      if (!err.empty()) {
        op->task_error = state + ": " + err;
        if (err.rfind("No such image", 0) == 0) image_missing = err;
      }
    }
  } else {
    std::string err;
    reply_failure(r, "cannot list the tasks of service " + op->service, &err);
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
  if (uv_now(p->loop) >= op->deadline) return op_end(op, -ETIMEDOUT, timeout_error(op, "did not run"));
  op_wait(op, kTaskPollMs);
}

static void poll_tasks(StartOp* op) {
  json_t* f = json_pack("{s:[s]}", "service", op->inst.id.c_str());
  docker_api_call(op->p->api, "GET", "/tasks?filters=" + filter_query(f), nullptr,
                  op->p->cfg.call_timeout_ms, [op](const DockerReply& r) { on_tasks(op, r); });
}

// ---- the ring id claim ----

// The services of the pool labelled with this start's ring id: when one the manager created
// before ours holds it (another LB's /add raced ours), ours is removed and the start fails with
// -EBUSY; every LB decides the same way from the same list.
static void on_claim_listed(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  if (p->closing) return op_end(op, -ECANCELED, "");
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (!json_is_array(arr)) {
    if (arr) json_decref(arr);
    std::string err;
    int st = reply_failure(r, "cannot check the ring id claim of replica " + op->spec.name, &err);
    return op_end(op, st == 0 || st == -ENOENT ? -EIO : st, err);
  }
  std::vector<ReplicaInstance> winners = pool_winners(p, arr, true, nullptr, nullptr, nullptr);
  json_decref(arr);
  for (const ReplicaInstance& w : winners) {
    if (w.ring_id == op->spec.ring_id && w.id != op->inst.id)
      return op_end(op, -EBUSY,
                    "ring id " + std::to_string(op->spec.ring_id) + " of pool " + p->cfg.pool +
                        " is held by replica " + w.name + " (service " + short_id(w.id) + ")");
  }
  // The claim holds: now the service gets its task.
  spec_update(p, op->inst.id,
              [](json_t* spec) {
                json_object_set_new(spec, "Mode", json_pack("{s:{s:i}}", "Replicated", "Replicas", 1));
              },
              3, [op](const std::string& err) {
                if (op->p->closing) return op_end(op, -ECANCELED, "");
                if (!err.empty())
                  return op_end(op, -EIO, "cannot give service " + op->service + " its task: Docker says \"" + err + "\"");
                poll_tasks(op);
              });
}

static void claim_check(StartOp* op) {
  ProvSwarm* p = op->p;
  json_t* f = json_pack("{s:[s,s]}", "label", pool_label(p).c_str(),
                        (std::string(kLabelRingId) + "=" + std::to_string(op->spec.ring_id)).c_str());
  docker_api_call(p->api, "GET", "/services?filters=" + filter_query(f), nullptr, p->cfg.call_timeout_ms,
                  [op](const DockerReply& r) { on_claim_listed(op, r); });
}

// ---- create ----

static json_t* string_array(const std::vector<std::string>& v) {
  json_t* a = json_array();
  for (const std::string& s : v) json_array_append_new(a, json_string(s.c_str()));
  return a;
}

static json_t* pool_labels(const ProvSwarm* p, const StartOp* op) {
  json_t* labels = json_pack("{s:s, s:s, s:s, s:s}", kLabelPool, p->cfg.pool.c_str(), kLabelName,
                             op->spec.name.c_str(), kLabelRingId,
                             std::to_string(op->spec.ring_id).c_str(), kLabelWeight,
                             std::to_string(op->spec.weight).c_str());
  if (p->host_mode)
    json_object_set_new(labels, kLabelPort, json_string(std::to_string(op->inst.port).c_str()));
  return labels;
}

// The service: one task of the image with the replica spec, labelled (service and container),
// restarted by the engine whatever its exit, placed by the constraints.
static json_t* create_body(const ProvSwarm* p, const StartOp* op) {
  const std::string& name = op->spec.name;
  std::vector<std::string> env = {"SERVER_ID=" + name,
                                  "PORT=" + std::to_string(op->inst.port)};
  if (p->host_mode) env.push_back("ADDRESS=127.0.0.1");
  env.insert(env.end(), p->cfg.env.begin(), p->cfg.env.end());
  json_t* container = json_pack("{s:s, s:o, s:o, s:I}", "Image", p->cfg.image.c_str(), "Env",
                                string_array(env), "Labels", pool_labels(p, op), "StopGracePeriod",
                                static_cast<json_int_t>(p->cfg.stop_grace_s) * 1000000000);
  if (!p->cfg.cmd.empty()) json_object_set_new(container, "Args", string_array(p->cfg.cmd));
  if (!p->host_mode) json_object_set_new(container, "Hostname", json_string(name.c_str()));
  json_t* limits = json_object();
  if (p->cfg.nano_cpus > 0)
    json_object_set_new(limits, "NanoCPUs", json_integer(static_cast<json_int_t>(p->cfg.nano_cpus)));
  if (p->cfg.memory > 0)
    json_object_set_new(limits, "MemoryBytes", json_integer(static_cast<json_int_t>(p->cfg.memory)));
  std::vector<std::string> constraints = p->cfg.constraints;
  if (p->host_mode) constraints.push_back("node.id==" + p->node_id);
  json_t* prefs = json_array();
  for (const std::string& label : p->cfg.spread)
    json_array_append_new(prefs, json_pack("{s:{s:s}}", "Spread", "SpreadDescriptor", label.c_str()));
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
    id = json_str(j, "ID");
    owner = json_str(json_object_get(json_object_get(j, "Spec"), "Labels"), kLabelPool);
    json_decref(j);
  }
  std::string why = owner == p->cfg.pool
                        ? "pool " + p->cfg.pool + " already has a service of that name (" + short_id(id) + ")"
                        : "the name is taken by service " + (id.empty() ? op->service : short_id(id)) +
                              (owner.empty() ? "" : " of pool " + owner) + ", which pool " +
                              p->cfg.pool + " does not own";
  op_end(op, -EEXIST, "cannot create replica " + op->spec.name + " as service " + op->service + ": " + why);
}

// A create without an answer: the service of that name is removed when it is this start's (pool
// and ring id), then the start fails with the create's error.
static void on_create_lost_inspected(StartOp* op, const DockerReply& r, int status, const std::string& error) {
  ProvSwarm* p = op->p;
  json_t* j = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (j) {
    json_t* labels = json_object_get(json_object_get(j, "Spec"), "Labels");
    if (std::string(json_str(labels, kLabelPool)) == p->cfg.pool &&
        std::string(json_str(labels, kLabelRingId)) == std::to_string(op->spec.ring_id))
      op->inst.id = json_str(j, "ID");  // op_end removes it
    json_decref(j);
  }
  op_end(op, status, error);
}

static void on_created(StartOp* op, const DockerReply& r) {
  ProvSwarm* p = op->p;
  if (r.status == 0 && r.http_status == 201) {
    json_t* j = docker_reply_json(r);
    op->inst.id = j ? json_str(j, "ID") : "";
    if (j) json_decref(j);
    op->t_created = uv_hrtime();
    if (op->inst.id.empty()) return op_end(op, -EIO, "Docker created service " + op->service + " without an ID");
    p->starting[op->inst.id] = op;
    if (p->closing) return op_end(op, -ECANCELED, "");
    return claim_check(op);
  }
  std::string err;
  int st = reply_failure(r, "cannot create replica " + op->spec.name + " as service " + op->service, &err);
  if (r.status != 0 && r.status != -ECANCELED) {
    docker_api_call(p->api, "GET", "/services/" + docker_url_escape(op->service), nullptr,
                    p->cfg.call_timeout_ms,
                    [op, st, err](const DockerReply& rr) { on_create_lost_inspected(op, rr, st, err); });
    return;
  }
  if (r.status == 0 && r.http_status == 409) {
    docker_api_call(p->api, "GET", "/services/" + docker_url_escape(op->service), nullptr,
                    p->cfg.call_timeout_ms, [op](const DockerReply& rr) { on_conflict_inspected(op, rr); });
    return;
  }
  op_end(op, st, err);
}

void ProvSwarm::start(const ReplicaSpec& spec, ProvStartCb cb) {
  ops++;
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
  uv_timer_init(loop, &op->timer);
  op->timer.data = op;
  starting_names[spec.name]++;
  op->deadline = uv_now(loop) + cfg.ready_timeout_ms;
  if (closing) return op_end(op, -ECANCELED, "the swarm provisioner is closing");
  if (!valid_name(op->service))
    return op_end(op, -EINVAL,
                  "invalid service name \"" + op->service +
                      "\": use 2 to 63 of A-Z a-z 0-9 _ . -, starting with a letter or digit");
  if (host_mode && (op->inst.port = port_reserve(this, spec.ring_id)) == 0)
    return op_end(op, -EADDRINUSE,
                  "no free port for replica " + spec.name + " in " + std::to_string(cfg.port_min) +
                      "-" + std::to_string(cfg.port_max));
  json_t* body = create_body(this, op);
  docker_api_call(api, "POST", "/services/create", body, cfg.call_timeout_ms,
                  [op](const DockerReply& r) { on_created(op, r); });
  json_decref(body);
}

// ---- stop ----

// Removes the service: the engine stops its task (SIGTERM, the stop grace, then SIGKILL) and
// removes its container by itself; the name is free at once.
void ProvSwarm::stop(const ReplicaInstance& inst, ProvDoneCb cb) {
  std::string id = inst.id.empty() ? cfg.name_prefix + inst.name : inst.id;
  if (closing) {
    docker_api_defer(api, [cb] { cb(-ECANCELED, "the swarm provisioner is closing"); });
    return;
  }
  ops++;
  members.erase(id);
  uint64_t t0 = uv_hrtime();
  uint16_t port = host_mode ? inst.port : 0;
  std::string name = inst.name;
  remove_service(this, id, [this, name, port, t0, cb](const DockerReply& r) {
    if (!removed_ok(r)) {
      std::string err;
      int st = reply_failure(r, "cannot remove the service of replica " + name, &err);
      LOG_WARN("swarm: %s", err.c_str());
      cb(st == -ENOENT ? -EIO : st, err);
    } else {
      // The port stays out of use until its task has let it go: port_reserve checks that it binds.
      if (port) ports_used.erase(port);
      LOG_INFO("swarm: replica %s: service removed in %.0f ms", name.c_str(), ms_since(t0));
      cb(0, "");
    }
    ops--;
    maybe_close_api(this);
  });
}

// /rm: labels the service ringlb.draining, so every other LB of the pool takes it out of its ring
// now (on_gone) rather than when the service is removed. A service cannot be renamed: it keeps its
// name until stop() removes it, and an /add of the same name waits for that (the registry's name
// hold), so cb always reports that the name is not free yet. The label is a service update
// (Spec.Labels: the task is not redeployed).
bool ProvSwarm::release_name(const ReplicaInstance& inst, ProvDoneCb cb) {
  std::string service = cfg.name_prefix + inst.name;
  if (closing || inst.id.empty()) {
    docker_api_defer(api, [cb, service] { cb(-EBUSY, "service " + service + " keeps its name until removed"); });
    return true;
  }
  ops++;
  members.erase(inst.id);
  quiet_add(this, inst.id);  // its end is ours from now on
  spec_update(this, inst.id, [](json_t* spec) {
    json_t* labels = json_object_get(spec, "Labels");
    if (!json_is_object(labels)) {
      labels = json_object();
      json_object_set_new(spec, "Labels", labels);
    }
    json_object_set_new(labels, kLabelDraining, json_string("1"));
  }, 2, [this, cb, service](const std::string& err) {
    if (!err.empty())
      LOG_WARN("swarm: cannot label service %s as draining (%s): other LBs of the pool take it out "
               "only once it is removed", service.c_str(), err.c_str());
    cb(-EBUSY, "service " + service + " keeps its name while it drains (services cannot be renamed)");
    ops--;
    maybe_close_api(this);
  });
  return true;
}

// ---- list (adoption) ----

// Every service of the pool, whatever its task does now: the engine heals it, so it is adopted
// and comes in through heartbeats. One whose labels do not make a replica is removed.
static void on_listed(ProvSwarm* p, ProvListCb cb, const DockerReply& r) {
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (!json_is_array(arr)) {
    if (arr) json_decref(arr);
    std::string err;
    int st = reply_failure(r, "cannot list the services of pool " + p->cfg.pool, &err);
    cb(st == 0 || st == -ENOENT ? -EIO : st, err, {});
  } else {
    // Losers of a ring id claim are left alone: the LB that made one removes it itself.
    std::vector<std::string> bad, drained;
    std::vector<ReplicaInstance> running = pool_winners(p, arr, false, nullptr, &bad, &drained);
    json_decref(arr);
    for (const std::string& id : bad) {
      LOG_INFO("swarm: removing service %s of pool %s: its labels do not make a replica",
               short_id(id).c_str(), p->cfg.pool.c_str());
    }
    for (const std::string& id : drained) {
      LOG_INFO("swarm: removing service %s of pool %s: it was draining after /rm",
               short_id(id).c_str(), p->cfg.pool.c_str());
    }
    bad.insert(bad.end(), drained.begin(), drained.end());
    for (const std::string& id : bad) {
      if (id.empty()) continue;
      p->ops++;
      remove_service(p, id, [p](const DockerReply&) {
        p->ops--;
        maybe_close_api(p);
      });
    }
    for (const ReplicaInstance& inst : running) {
      if (p->host_mode) p->ports_used.insert(inst.port);
      p->members[inst.id] = inst;
    }
    cb(0, "", running);
  }
  p->listed = true;
  p->ops--;
  maybe_close_api(p);
}


void ProvSwarm::list(ProvListCb cb) {
  ops++;
  docker_api_call(api, "GET", services_path(this), nullptr, cfg.call_timeout_ms,
                  [this, cb](const DockerReply& r) { on_listed(this, cb, r); });
}

// ---- re-list after service events: replicas other LBs of the pool added or removed ----

static void resync_run(ProvSwarm* p);
static void on_resync_timer(uv_timer_t* t);

static void on_resynced(ProvSwarm* p, const DockerReply& r) {
  p->resync_running = false;
  p->ops--;
  json_t* arr = r.status == 0 && r.http_status == 200 ? docker_reply_json(r) : nullptr;
  if (json_is_array(arr) && !p->closing) {
    std::map<std::string, ReplicaInstance> listed;
    for (const ReplicaInstance& inst : pool_winners(p, arr, false, nullptr, nullptr, nullptr))
      listed[inst.id] = inst;
    for (auto& kv : listed) {
      if (p->members.count(kv.first) || p->starting.count(kv.first) || p->quiet.count(kv.first) ||
          p->starting_names.count(kv.second.name))
        continue;
      if (p->host_mode) p->ports_used.insert(kv.second.port);
      p->members[kv.first] = kv.second;
      LOG_INFO("swarm: replica %s (service %s, ring id %u) appeared in pool %s",
               kv.second.name.c_str(), short_id(kv.first).c_str(), kv.second.ring_id, p->cfg.pool.c_str());
      if (p->on_appear) p->on_appear(kv.second);
    }
    std::vector<ReplicaInstance> gone;
    for (auto& kv : p->members)
      if (!listed.count(kv.first)) gone.push_back(kv.second);
    for (const ReplicaInstance& inst : gone) {
      p->members.erase(inst.id);
      if (p->quiet.count(inst.id)) continue;  // ours: stop() took it out already
      if (p->host_mode) p->ports_used.erase(inst.port);
      LOG_INFO("swarm: replica %s (service %s) left pool %s", inst.name.c_str(),
               short_id(inst.id).c_str(), p->cfg.pool.c_str());
      if (p->on_gone) p->on_gone(inst.id, "another load balancer of the pool removed it");
    }
  } else if (!p->closing) {
    LOG_WARN("swarm: cannot re-list the services of pool %s: %s", p->cfg.pool.c_str(),
             docker_error_message(r).c_str());
  }
  if (arr) json_decref(arr);
  if (p->resync_again && !p->closing) {
    p->resync_again = false;
    resync_run(p);
  } else if (!p->closing && !uv_is_active(reinterpret_cast<uv_handle_t*>(&p->resync))) {
    uv_timer_start(&p->resync, on_resync_timer, kResyncPeriodMs, 0);
  }
  maybe_close_api(p);
}

static void resync_run(ProvSwarm* p) {
  if (!p->listed) {  // list() is in flight: it is the fresh view; look again after it
    uv_timer_start(&p->resync, on_resync_timer, kResyncDelayMs, 0);
    return;
  }
  if (p->resync_running) {
    p->resync_again = true;
    return;
  }
  p->resync_running = true;
  p->ops++;
  docker_api_call(p->api, "GET", services_path(p), nullptr, p->cfg.call_timeout_ms,
                  [p](const DockerReply& r) { on_resynced(p, r); });
}

static void on_resync_timer(uv_timer_t* t) {
  ProvSwarm* p = static_cast<ProvSwarm*>(t->data);
  if (!p->closing) resync_run(p);
}

// ---- events ----

static void events_open(ProvSwarm* p);

// A task container of the pool died: report its service as failed at once (the registry routes
// around it; the engine restarts the task). Deaths of services we remove are ours.
static void on_container_event(ProvSwarm* p, const std::string& line) {
  p->events_retry_ms = 1000;
  json_t* e = json_loadb(line.data(), line.size(), 0, nullptr);
  if (!e) return;
  json_t* attrs = json_object_get(json_object_get(e, "Actor"), "Attributes");
  std::string action = json_str(e, "Action");
  std::string service_id = json_str(attrs, kLabelServiceId);
  std::string name = json_str(attrs, kLabelName);
  std::string container = json_str(attrs, "name");
  std::string code = json_str(attrs, "exitCode");
  json_decref(e);
  if (action != "die" || service_id.empty() || p->quiet.count(service_id)) return;
  std::string cause = "task container " + container + " exited with code " + (code.empty() ? "?" : code);
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
  p->events_retry_ms = 1000;
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&p->resync);
  if (!p->closing && (!uv_is_active(h) || uv_timer_get_due_in(&p->resync) > kResyncDelayMs))
    uv_timer_start(&p->resync, on_resync_timer, kResyncDelayMs, 0);
}

static void on_events_retry(uv_timer_t* t) {
  ProvSwarm* p = static_cast<ProvSwarm*>(t->data);
  if (!p->closing) events_open(p);
}

static void on_events_end(ProvSwarm* p, DockerStream** which, const DockerReply& r) {
  *which = nullptr;
  if (p->closing) return;
  std::string why = r.status != 0 ? r.error : r.http_status != 200 ? docker_error_message(r) : "the engine ended it";
  LOG_WARN("swarm: an events stream ended (%s); reconnecting in %d ms", why.c_str(), p->events_retry_ms);
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&p->events_retry))) {
    uv_timer_start(&p->events_retry, on_events_retry, p->events_retry_ms, 0);
    p->events_retry_ms = p->events_retry_ms * 2 > kEventsRetryMaxMs ? kEventsRetryMaxMs : p->events_retry_ms * 2;
  }
}

// Opens whichever of the two streams is not open. A reopened service stream re-lists at once,
// since events may have been missed while it was down.
static void events_open(ProvSwarm* p) {
  if (!p->container_events) {
    std::string path = "/events?filters=" +
                       filter_query(json_pack("{s:[s], s:[s], s:[s]}", "type", "container", "event",
                                              "die", "label", pool_label(p).c_str()));
    int rc = docker_stream_open(
        p->api, path, [p](const std::string& l) { on_container_event(p, l); },
        [p](const DockerReply& r) { on_events_end(p, &p->container_events, r); }, &p->container_events);
    if (rc != 0) LOG_WARN("swarm: cannot watch container events: %s", uv_strerror(rc));
  }
  if (!p->service_events) {
    std::string path = "/events?filters=" + filter_query(json_pack("{s:[s]}", "type", "service"));
    int rc = docker_stream_open(
        p->api, path, [p](const std::string& l) { on_service_event(p, l); },
        [p](const DockerReply& r) { on_events_end(p, &p->service_events, r); }, &p->service_events);
    if (rc != 0) LOG_WARN("swarm: cannot watch service events: %s", uv_strerror(rc));
    else on_service_event(p, "");
  }
  if ((!p->container_events || !p->service_events) &&
      !uv_is_active(reinterpret_cast<uv_handle_t*>(&p->events_retry)))
    uv_timer_start(&p->events_retry, on_events_retry, p->events_retry_ms, 0);
}

// ---- close ----

static void close_step_done(ProvSwarm* p) {
  if (--p->close_pending > 0) return;
  std::function<void()> cb = std::move(p->close_cb);
  if (cb) cb();
}

static void maybe_close_api(ProvSwarm* p) {
  if (!p->closing || p->api_closing || p->ops > 0) return;
  p->api_closing = true;
  docker_api_close(p->api, [p] {
    p->api = nullptr;
    close_step_done(p);
  });
}

static void on_timer_closed(uv_handle_t* h) { close_step_done(static_cast<ProvSwarm*>(h->data)); }

void ProvSwarm::close(std::function<void()> cb) {
  if (closing) return;
  closing = true;
  close_cb = std::move(cb);
  close_pending = 3;  // two timers and the client
  uv_close(reinterpret_cast<uv_handle_t*>(&events_retry), on_timer_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&resync), on_timer_closed);
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
  maybe_close_api(this);
}

// ---- create ----

static std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

Provisioner* prov_swarm_create(uv_loop_t* loop, const ProvSwarmConfig& cfg, std::string* err) {
  if (cfg.image.empty()) {
    *err = "the swarm provisioner needs an image";
    return nullptr;
  }
  bool pool_ok = !cfg.pool.empty() && cfg.pool.size() <= 63;
  for (char c : cfg.pool) pool_ok = pool_ok && (isalnum(static_cast<unsigned char>(c)) || strchr("_.-", c));
  if (!pool_ok) {
    *err = "invalid pool name \"" + cfg.pool + "\": use 1 to 63 of A-Z a-z 0-9 _ . -";
    return nullptr;
  }
  bool host_mode = cfg.network == "host";
  if (cfg.network.empty()) {
    *err = "the swarm provisioner needs a network: host (one node), or an overlay network's name";
    return nullptr;
  }
  if (host_mode && (cfg.port_min == 0 || cfg.port_min > cfg.port_max)) {
    *err = "invalid replica port range " + std::to_string(cfg.port_min) + "-" + std::to_string(cfg.port_max);
    return nullptr;
  }
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
  std::string state = json_str(swarm, "LocalNodeState");
  bool manager = json_is_true(json_object_get(swarm, "ControlAvailable"));
  std::string node_id = json_str(swarm, "NodeID");
  if (j) json_decref(j);
  if (!j || state != "active" || !manager || node_id.empty()) {
    *err = !j ? "cannot read /info from the Docker engine at unix://" + std::string(docker_api_socket(api)) +
                    ": " + docker_error_message(info)
              : "the Docker engine at unix://" + std::string(docker_api_socket(api)) +
                    (state != "active" ? " is not part of a swarm (Swarm.LocalNodeState " + (state.empty() ? "?" : state) +
                                             "): run `docker swarm init`, or use --provisioner docker"
                                       : " is a swarm worker: run ringlb on a manager node (placement "
                                         "constraint node.role==manager)");
    docker_api_close(api, nullptr);
    // The client's close completes on the loop; the caller exits without running it.
    return nullptr;
  }
  ProvSwarm* p = new ProvSwarm;
  p->loop = loop;
  p->cfg = cfg;
  p->api = api;
  p->host_mode = host_mode;
  p->node_id = node_id;
  uv_timer_init(loop, &p->events_retry);
  p->events_retry.data = p;
  uv_timer_init(loop, &p->resync);
  p->resync.data = p;
  if (cfg.watch_events) events_open(p);
  LOG_INFO("swarm: provisioner for pool %s on node %s, image %s, network %s%s%s%s", cfg.pool.c_str(),
           short_id(node_id).c_str(), cfg.image.c_str(), cfg.network.c_str(),
           host_mode ? (" (ports " + std::to_string(cfg.port_min) + "-" + std::to_string(cfg.port_max) +
                        " on this node)").c_str()
                     : " (replicas by service name on port 5000)",
           cfg.constraints.empty() ? "" : (", constraints " + join(cfg.constraints)).c_str(),
           cfg.spread.empty() ? "" : (", spread over " + join(cfg.spread)).c_str());
  return p;
}
