#include "lb/control/control.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "lb/control/admin.h"
#include "lb/control/snapshot.h"
#include "lb/data/worker.h"
#include "lb/http/container_of.h"
#include "lb/http/http_server.h"
#include "lb/log.h"

namespace {

constexpr int kBacklog = 1024;
// --balance-factor: the in-flight sums go to the workers at most this often. Each worker reports
// at most every kReportIntervalMs (20 ms), so with several workers reports arrive more often than
// that; a shorter interval here keeps a worker's view of the others within about
// kReportIntervalMs + kLoadIntervalMs of the truth, for W messages per interval at most.
constexpr uint64_t kLoadIntervalMs = 5;

Control* control_of(uv_timer_t* t) { return container_of(t, &Control::publish); }

void on_publish(uv_timer_t* t);

// Routing changed or a sync waits: publish at the next safe point (this loop turn, after the
// current callback has returned).
void publish_soon(Control* ctl) {
  if (ctl->open_handles == 0 || uv_is_closing(reinterpret_cast<uv_handle_t*>(&ctl->publish))) return;
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&ctl->publish)))
    uv_timer_start(&ctl->publish, on_publish, 0, 0);
}

void post_all(Control* ctl, const ToWorker& msg) {
  for (WorkerSlot& w : ctl->workers) {
    if (!w.running) continue;
    ToWorker copy = msg;
    worker_post(w.worker, std::move(copy));
  }
}

// The oldest generation and sync any running worker has reported (UINT64_MAX with none running).
void oldest_reported(const Control* ctl, uint64_t* gen, uint64_t* synced) {
  *gen = *synced = UINT64_MAX;
  for (const WorkerSlot& w : ctl->workers) {
    if (!w.running) continue;
    *gen = std::min(*gen, w.gen);
    *synced = std::min(*synced, w.synced);
  }
}

void send_load(Control* ctl);

// Runs the syncs every running worker has answered. Each callback may add syncs or publish: the
// list is taken out first. In-flight sums held back by the rate limit go out before any answer, so
// a client that sends a request after an answer meets a worker that has them.
void run_syncs(Control* ctl) {
  uint64_t gen, synced;
  oldest_reported(ctl, &gen, &synced);
  bool any = false;
  for (const auto& s : ctl->syncs) any = any || (s.seq != 0 && s.seq <= synced);
  if (!any) return;
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&ctl->load_timer))) {
    uv_timer_stop(&ctl->load_timer);
    send_load(ctl);
  }
  std::vector<Control::PendingSync> ready;
  auto& list = ctl->syncs;
  bool again = false;
  for (size_t i = 0; i < list.size(); i++) {
    Control::PendingSync& s = list[i];
    if (s.seq == 0 || s.seq > synced) continue;
    if (s.snapshot->gen != ctl->reg->routing_gen && ++s.rounds < 8 && !ctl->stopping) {
      s.seq = 0;  // the registry moved on while this sync went round: one more round
      again = true;
      continue;
    }
    ready.push_back(std::move(s));
    list.erase(list.begin() + static_cast<long>(i));
    i--;
  }
  if (again) publish_soon(ctl);
  for (auto& s : ready) s.fn(*s.snapshot);
}

void on_publish(uv_timer_t* t) {
  Control* ctl = control_of(t);
  if (ctl->dirty) {
    ctl->dirty = false;
    SnapshotPtr before = std::move(ctl->current);
    ctl->current = snapshot_build(ctl->reg);
    metrics_ring_published(&ctl->metrics, before ? before->ring.get() : nullptr,
                           ctl->current->ring.get());
    ToWorker msg;
    msg.kind = ToWorker::Kind::snapshot;
    msg.snapshot = ctl->current;
    post_all(ctl, msg);
  }
  bool unsent = false;
  for (auto& s : ctl->syncs) unsent = unsent || s.seq == 0;
  if (unsent) {
    // One sync for every callback that joined since the last: posted after the snapshot above, so
    // a worker answers it only once it routes by that snapshot (a mailbox keeps posting order).
    uint64_t seq = ++ctl->sync_seq;
    for (auto& s : ctl->syncs) {
      if (s.seq != 0) continue;
      s.seq = seq;
      s.snapshot = ctl->current;
    }
    ToWorker msg;
    msg.kind = ToWorker::Kind::sync;
    msg.seq = seq;
    post_all(ctl, msg);
  }
  run_syncs(ctl);  // with no worker running every sync is answered at once
}

// Sends each worker, for --balance-factor, the in-flight count of each ring member summed over the
// OTHER workers' last reports (the worker adds its own exact count). The control plane subtracts
// exactly what it summed for that worker: a worker that subtracted its own last report itself
// would be wrong whenever a report of its was in flight while the sums were made (a count it had
// already replaced, or one not yet counted).
void send_load(Control* ctl) {
  Registry* reg = ctl->reg;
  ctl->load_sent_at = uv_now(ctl->loop);
  const std::vector<SnapMember>& members = ctl->current->members;
  std::vector<uint32_t> total(members.size(), 0);
  std::unordered_map<uint64_t, size_t> index;
  for (size_t i = 0; i < members.size(); i++) {
    const Replica* r = registry_by_uid(reg, members[i].uid);
    total[i] = r ? r->inflight : 0;
    index[members[i].uid] = i;
  }
  for (WorkerSlot& w : ctl->workers) {
    if (!w.running) continue;
    ToWorker msg;
    msg.kind = ToWorker::Kind::load;
    msg.gen = ctl->current->gen;
    msg.load = total;
    for (const auto& [uid, n] : w.inflight) {
      auto it = index.find(uid);
      if (it != index.end()) msg.load[it->second] -= std::min(n, msg.load[it->second]);
    }
    worker_post(w.worker, std::move(msg));
  }
}

void on_load_timer(uv_timer_t* t) { send_load(container_of(t, &Control::load_timer)); }

// Recomputes each replica's in-flight count over every worker's last report and the registry's
// routing_gen_everywhere; with --balance-factor the sums go to the workers, at most every
// kLoadIntervalMs (a change inside the interval goes out at its end).
void update_inflight(Control* ctl) {
  Registry* reg = ctl->reg;
  for (Replica* r : reg->replicas) r->inflight = 0;
  for (const WorkerSlot& w : ctl->workers) {
    if (!w.running) continue;
    for (const auto& [uid, n] : w.inflight)
      if (Replica* r = registry_by_uid(reg, uid)) r->inflight += n;
  }
  uint64_t gen, synced;
  oldest_reported(ctl, &gen, &synced);
  reg->routing_gen_everywhere = gen;
  if (ctl->cfg->balance_factor <= 0 || !ctl->current || ctl->stopping) return;
  uint64_t since = uv_now(ctl->loop) - ctl->load_sent_at;
  if (since >= kLoadIntervalMs) {
    send_load(ctl);
  } else if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&ctl->load_timer))) {
    uv_timer_start(&ctl->load_timer, on_load_timer, kLoadIntervalMs - since, 0);
  }
}

void apply_report(Control* ctl, FromWorker& m) {
  WorkerSlot& w = ctl->workers[m.worker];
  PlaneCounters& t = ctl->totals;
  const PlaneCounters& d = m.counters;
  t.requests += d.requests;
  for (int i = 0; i < 6; i++) t.responses[i] += d.responses[i];
  t.retries += d.retries;
  t.upstream_failures += d.upstream_failures;
  t.upstream_timeouts += d.upstream_timeouts;
  t.no_replica += d.no_replica;
  t.connections += d.connections;
  t.tunnels_opened += d.tunnels_opened;
  t.tunnels_closed += d.tunnels_closed;
  t.handoffs += d.handoffs;
  t.h2_connections += d.h2_connections;
  t.h2_streams += d.h2_streams;
  t.h2_client_resets += d.h2_client_resets;
  t.h2_calm_goaways += d.h2_calm_goaways;
  duration_add(&t.duration, d.duration);
  w.gen = std::max(w.gen, m.gen);
  w.synced = std::max(w.synced, m.synced);
  w.open_conns = m.open_conns;
  w.inflight.clear();
  for (const MemberReport& mr : m.members) {
    if (mr.inflight > 0) w.inflight.emplace_back(mr.uid, mr.inflight);
    Replica* r = registry_by_uid(ctl->reg, mr.uid);
    if (r == nullptr) continue;  // left the registry meanwhile
    metrics_add_member(&ctl->metrics, r->ring_id, mr);
    r->requests += mr.requests;
    r->failures += mr.failures;
    registry_passive_report(r, mr.ok_seen, mr.strikes, mr.cause);
  }
}

void finish_stop(Control* ctl);

void on_worker_stopped(Control* ctl, const FromWorker& m) {
  WorkerSlot& w = ctl->workers[m.worker];
  if (!w.running) return;
  w.running = false;
  w.inflight.clear();
  if (m.loop_close_rc != 0) {
    ctl->loops_clean = false;
    LOG_ERROR("worker %u: handles left open at exit (uv_loop_close: %s)", m.worker,
              uv_err_name(m.loop_close_rc));
  }
  finish_stop(ctl);
}

void on_messages(Mailbox<FromWorker>* mb, std::vector<FromWorker>* batch) {
  Control* ctl = static_cast<Control*>(mb->owner);
  bool reported = false;
  for (FromWorker& m : *batch) {
    if (m.worker >= ctl->workers.size()) continue;
    switch (m.kind) {
      case FromWorker::Kind::report:
        apply_report(ctl, m);
        reported = true;
        break;
      case FromWorker::Kind::admin_call:
        admin_handle(ctl, AdminCallRef{m.worker, m.call}, m.head, m.body, m.peer_ip);
        break;
      case FromWorker::Kind::stopped:
        on_worker_stopped(ctl, m);
        reported = true;
        break;
    }
  }
  if (reported) {
    update_inflight(ctl);
    run_syncs(ctl);
  }
}

void handle_closed(Control* ctl) {
  if (--ctl->open_handles == 0 && ctl->on_stopped) {
    std::function<void()> cb = std::move(ctl->on_stopped);
    ctl->on_stopped = nullptr;
    cb();
  }
}

// Once every worker has stopped: the pending syncs run (nothing is left to wait for), then the
// control plane's handles close.
void finish_stop(Control* ctl) {
  if (!ctl->stopping) return;
  for (const WorkerSlot& w : ctl->workers)
    if (w.running) return;
  // Joined together once every one stopped: until then another worker may still hand a client to
  // one that stopped (its mailbox refuses it), so none is freed before.
  for (WorkerSlot& w : ctl->workers) {
    if (w.worker != nullptr) worker_join(w.worker);
    w.worker = nullptr;
  }
  ctl->group.reset();
  run_syncs(ctl);
  ctl->inbox.on_closed = [](Mailbox<FromWorker>* mb) { handle_closed(static_cast<Control*>(mb->owner)); };
  mailbox_close(&ctl->inbox);
  uv_close(reinterpret_cast<uv_handle_t*>(&ctl->publish),
           [](uv_handle_t* h) { handle_closed(control_of(reinterpret_cast<uv_timer_t*>(h))); });
  uv_close(reinterpret_cast<uv_handle_t*>(&ctl->load_timer), [](uv_handle_t* h) {
    handle_closed(container_of(reinterpret_cast<uv_timer_t*>(h), &Control::load_timer));
  });
  ctl->reg->on_routing_changed = nullptr;
}

}  // namespace

int control_start(Control* ctl, uv_loop_t* loop, const Config* cfg, Registry* reg, std::string* err) {
  ctl->loop = loop;
  ctl->cfg = cfg;
  ctl->reg = reg;
  ctl->rng.seed(uv_hrtime() ^ static_cast<uint64_t>(getpid()));
  uint32_t n = cfg->workers > 0 ? cfg->workers : 1;
  std::vector<int> fds, admin_fds;
  std::string bound, admin_bound;
  int rc = http_bind_sockets(cfg->listen, static_cast<int>(n), kBacklog, &fds, &bound);
  if (rc != 0) {
    *err = "cannot listen on " + cfg->listen + ": " + uv_strerror(rc);
    return rc;
  }
  if (!cfg->admin_listen.empty()) {
    rc = http_bind_sockets(cfg->admin_listen, 1, kBacklog, &admin_fds, &admin_bound);
    if (rc != 0) {
      for (int fd : fds) close(fd);
      *err = "cannot listen on " + cfg->admin_listen + ": " + uv_strerror(rc);
      return rc;
    }
  }
  ctl->inbox.owner = ctl;
  ctl->inbox.on_messages = on_messages;
  mailbox_open(&ctl->inbox, loop);
  uv_timer_init(loop, &ctl->publish);
  uv_timer_init(loop, &ctl->load_timer);
  ctl->open_handles = 3;
  ctl->current = snapshot_build(reg);
  reg->on_routing_changed = [ctl]() {
    ctl->dirty = true;
    publish_soon(ctl);
  };
  ctl->workers.resize(n);
  if (n > 1) ctl->group = std::make_unique<WorkerGroup>(n);
  // The workers read a copy of their own: a reload changes *cfg on this loop while they run.
  auto worker_cfg = std::make_shared<const Config>(*cfg);
  for (uint32_t i = 0; i < n; i++) {
    WorkerSetup setup;
    setup.index = i;
    setup.cfg = worker_cfg;
    setup.access_log = ctl->access_log;
    setup.listen_fd = fds[i];
    setup.admin_fd = i == 0 && !admin_fds.empty() ? admin_fds[0] : -1;
    setup.control = &ctl->inbox;
    setup.snapshot = ctl->current;
    // One worker runs on this loop: a single-threaded daemon, as before the split.
    setup.loop = n == 1 ? loop : nullptr;
    setup.group = ctl->group.get();
    rc = worker_start(setup, &ctl->workers[i].worker);
    if (rc != 0) {
      for (uint32_t j = i + 1; j < n; j++) close(fds[j]);
      *err = "cannot start worker " + std::to_string(i) + ": " + uv_strerror(rc);
      // The workers already running stop (they have no client yet) and are joined here, before
      // the caller exits: none may outlive the mailbox it posts to.
      for (uint32_t j = 0; j < i; j++) {
        ToWorker stop;
        stop.kind = ToWorker::Kind::stop;
        worker_post(ctl->workers[j].worker, std::move(stop));
        worker_join(ctl->workers[j].worker);
      }
      ctl->workers.clear();
      ctl->group.reset();
      return rc;
    }
    if (ctl->group) ctl->group->members[i] = ctl->workers[i].worker;
    ctl->workers[i].running = true;
    ctl->workers[i].gen = ctl->current->gen;
  }
  if (ctl->group) ctl->group->complete.store(true, std::memory_order_release);
  ctl->listen_bound = bound;
  ctl->admin_bound = admin_bound;
  LOG_INFO("listening on %s (%u workers)", bound.c_str(), n);
  if (!admin_bound.empty()) LOG_INFO("admin routes on %s", admin_bound.c_str());
  return 0;
}

void control_stop(Control* ctl, std::function<void()> on_stopped) {
  if (ctl->stopping) return;
  ctl->stopping = true;
  ctl->on_stopped = std::move(on_stopped);
  ToWorker msg;
  msg.kind = ToWorker::Kind::stop;
  post_all(ctl, msg);
  finish_stop(ctl);  // no worker running: at once
}

void control_answer(Control* ctl, AdminCallRef ref, int status, std::string body,
                    std::string_view content_type, std::string_view extra) {
  if (ref.worker >= ctl->workers.size() || !ctl->workers[ref.worker].running) return;
  ToWorker msg;
  msg.kind = ToWorker::Kind::admin_answer;
  msg.call = ref.call;
  msg.answer.status = status;
  msg.answer.body = std::move(body);
  msg.answer.content_type = std::string(content_type);
  msg.answer.extra = std::string(extra);
  worker_post(ctl->workers[ref.worker].worker, std::move(msg));
}

void control_reconfigure(Control* ctl, AccessLogSinkPtr access_log) {
  ctl->access_log = std::move(access_log);
  ToWorker msg;
  msg.kind = ToWorker::Kind::config;
  msg.config = std::make_shared<const Config>(*ctl->cfg);
  msg.access_log = ctl->access_log;
  post_all(ctl, msg);
}

void control_after_sync(Control* ctl, std::function<void(const Snapshot&)> fn) {
  if (ctl->open_handles == 0) return;  // stopped: no worker is left to answer anyone
  ctl->syncs.push_back(Control::PendingSync{0, std::move(fn), nullptr});
  publish_soon(ctl);
}

uint64_t control_open_conns(const Control* ctl) {
  uint64_t n = 0;
  for (const WorkerSlot& w : ctl->workers)
    if (w.running) n += w.open_conns;
  return n;
}
