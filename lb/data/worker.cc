#include "lb/data/worker.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <utility>

#include "lb/data/exchange.h"
#include "lb/data/worker_state.h"
#include "lb/http/container_of.h"
#include "lb/http/tls.h"
#include "lb/log.h"

namespace {

constexpr uint64_t kSweepMs = 100;

// The --max-conns warning is said once, then at most once a minute, for the whole process: every
// worker reaches its share of the cap under the same flood, and an fd attack must not flood the
// log. The one value shared between workers, touched only when a listener is full (never on the
// request path).
std::atomic<uint64_t> g_full_logged_at{0};  // hrtime in ms + 1 of the last warning; 0: never
// --max-conns caps the client connections open over every worker's main listener together: the
// kernel spreads new clients over the SO_REUSEPORT sockets by a hash, not by load, so a per-worker
// share turned clients away (left them in a backlog) while other workers had room. Touched by the
// HTTP layer on accept and close only (HttpServerConfig::shared_count), never per request. The
// --admin-listen server is one server: it takes the whole cap alone.
std::atomic<uint32_t> g_open_clients{0};

bool counters_zero(const PlaneCounters& c) {
  for (int i = 0; i < 6; i++)
    if (c.responses[i] != 0) return false;
  return c.requests == 0 && c.retries == 0 && c.upstream_failures == 0 &&
         c.upstream_timeouts == 0 && c.no_replica == 0 && c.connections == 0 && c.handoffs == 0 &&
         c.tunnels_opened == 0 && c.tunnels_closed == 0 && c.h2_connections == 0 &&
         c.h2_streams == 0 && c.h2_client_resets == 0 && c.h2_calm_goaways == 0;
}

// Sends a report to the control plane: counter deltas, the pools with something to say, the
// snapshot installed, the connections open. Unless forced (a sync, a snapshot installed, the
// final report), only when something changed since the last one.
void worker_report(Worker* w, bool force) {
  if (!force && counters_zero(w->counters) && w->open_conns == w->reported_conns &&
      !pools_changed(&w->pools))
    return;
  FromWorker m;
  m.kind = FromWorker::Kind::report;
  m.worker = w->index;
  m.gen = w->snap->gen;
  m.synced = w->synced;
  m.counters = w->counters;
  m.open_conns = w->open_conns;
  pools_report(&w->pools, &m.members);
  w->counters = PlaneCounters{};
  w->reported_conns = w->open_conns;
  w->last_report_at = uv_now(w->loop);
  mailbox_post(w->control, std::move(m));
}

void on_report(uv_timer_t* t) {
  Worker* w = container_of(t, &Worker::report);
  w->report_armed = false;
  worker_report(w, false);
}

void on_sweep(uv_timer_t* t) {
  Worker* w = container_of(t, &Worker::sweep);
  exchange_sweep(w);
  pools_reap(&w->pools, uv_now(w->loop));
  access_log_tick(&w->access_log);
}

// A reload: the new configuration is read from the next request on (exchanges in progress read
// their timeouts from it too), new client connections get its header and idle timeouts, the pools
// its idle cap, and the access log its mode and file. The old configuration is freed by the
// last worker that lets go of it.
void worker_configure(Worker* w, std::shared_ptr<const Config> cfg, AccessLogSinkPtr sink) {
  if (cfg == nullptr) return;
  w->cfg_hold = std::move(cfg);
  w->cfg = w->cfg_hold.get();
  for (HttpServer* s : {&w->server, &w->admin_server}) {
    s->config.header_timeout_ms = w->cfg->header_timeout_ms;
    s->config.idle_timeout_ms = w->cfg->idle_timeout_ms;
  }
  // New TLS connections get the certificate read at this reload (cfg_hold keeps it alive).
  w->server.config.tls = w->cfg->tls.get();
  w->admin_server.config.tls = w->cfg->admin_tls.get();
  w->pools.idle_max = w->cfg->pool_idle_max;
  access_log_configure(&w->access_log, w->cfg->access_log, std::move(sink));
}

// Installs snapshot s: routing uses it from the next pick on (retries of exchanges in progress
// included), the pools follow its membership and states, and the control plane hears at once
// which generation this worker routes by.
void worker_install(Worker* w, SnapshotPtr s) {
  if (s == nullptr) return;
  w->snap = std::move(s);
  pools_install(&w->pools, *w->snap);
  routing_install(&w->routing, *w->snap);
  worker_report(w, true);
}

// The `stopped` message of a worker on the caller's loop, once nothing of it is left on that loop:
// its mailbox's close callback ran (the timers, check and idle handles were closed with it, in the
// same loop turn) and every upstream connection was freed (their close callbacks use the pools).
// The control plane reads it in a later loop turn, when those close callbacks are all done.
void worker_stopped_on_caller_loop(Worker* w) {
  if (!w->inbox_closed || w->pools.conns != 0 || access_log_busy(&w->access_log)) return;
  w->inbox_closed = false;  // said once
  FromWorker m;
  m.kind = FromWorker::Kind::stopped;
  m.worker = w->index;
  mailbox_post(w->control, std::move(m));
}

void on_inbox_closed(Mailbox<ToWorker>* mb) {
  Worker* w = container_of(mb, &Worker::inbox);
  w->inbox_closed = true;
  worker_stopped_on_caller_loop(w);
}

void on_pools_empty(Pools* ps) { worker_stopped_on_caller_loop(container_of(ps, &Worker::pools)); }

void on_access_log_drained(AccessLog* al) {
  worker_stopped_on_caller_loop(container_of(al, &Worker::access_log));
}

// Every connection is closed and both servers are stopped: the last report, then the worker's own
// handles close: uv_run returns in worker_main, or (on the caller's loop) `stopped` follows them.
void worker_finish(Worker* w) {
  worker_report(w, true);
  // The last lines are written; the loop runs until that write is done (on the caller's loop,
  // `stopped` waits for it: on_access_log_drained).
  if (w->on_caller_loop) w->access_log.on_drained = on_access_log_drained;
  access_log_close(&w->access_log);
  w->finishing = true;
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&w->sweep),
                         reinterpret_cast<uv_handle_t*>(&w->report),
                         reinterpret_cast<uv_handle_t*>(&w->check),
                         reinterpret_cast<uv_handle_t*>(&w->idle)})
    uv_close(h, nullptr);
  if (w->on_caller_loop) {
    w->inbox.on_closed = on_inbox_closed;
    w->pools.on_empty = on_pools_empty;
  }
  mailbox_close(&w->inbox);
}

void server_stopped(Worker* w) {
  if (--w->servers_open == 0) worker_finish(w);
}

void on_server_stopped(HttpServer* s) { server_stopped(container_of(s, &Worker::server)); }

void on_admin_server_stopped(HttpServer* s) {
  server_stopped(container_of(s, &Worker::admin_server));
}

// ToWorker::stop: no new connections (idle ones close), exchanges in progress finish with
// Connection: close, nothing is pooled any more; worker_finish once all is closed.
void worker_stop(Worker* w) {
  if (w->stopping) return;
  w->stopping = true;
  pools_close(&w->pools);
  http_server_stop(&w->server);
  if (w->has_admin_server) http_server_stop(&w->admin_server);
}

void on_messages(Mailbox<ToWorker>* m, std::vector<ToWorker>* batch) {
  Worker* w = container_of(m, &Worker::inbox);
  for (ToWorker& msg : *batch) {
    switch (msg.kind) {
      case ToWorker::Kind::snapshot:
        worker_install(w, std::move(msg.snapshot));
        break;
      case ToWorker::Kind::load:
        routing_apply_load(&w->pools, *w->snap, msg.gen, msg.load);
        break;
      case ToWorker::Kind::admin_answer:
        exchange_admin_answer(w, msg.call, msg.answer);
        break;
      case ToWorker::Kind::sync:
        w->synced = msg.seq;
        worker_report(w, true);
        break;
      case ToWorker::Kind::stop:
        worker_stop(w);
        break;
      case ToWorker::Kind::adopt:
        spread_adopt(w, msg);
        break;
      case ToWorker::Kind::config:
        worker_configure(w, std::move(msg.config), std::move(msg.access_log));
        break;
    }
  }
}

HttpConn* on_accept(HttpServer* s) { return exchange_accept(container_of(s, &Worker::server), false); }

bool on_should_hand_off(HttpServer* s) { return spread_should_hand_off(container_of(s, &Worker::server)); }

bool on_handed_off(HttpServer* s, HttpConn* c, int fd, bool idle) {
  return spread_hand_off(container_of(s, &Worker::server), c, fd, idle);
}

HttpConn* on_accept_admin(HttpServer* s) {
  return exchange_accept(container_of(s, &Worker::admin_server), true);
}

// A listener reached this worker's share of --max-conns and stopped accepting (see
// g_full_logged_at for how often that is said).
void server_full(Worker* w, HttpServer* s) {
  uint64_t now = uv_hrtime() / 1000000 + 1;
  uint64_t last = g_full_logged_at.load(std::memory_order_relaxed);
  if (last != 0 && now - last < 60000) return;
  if (!g_full_logged_at.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  LOG_WARN("%u client connections open over %u workers (--max-conns %u; seen on worker %u): new "
           "clients wait in the listen backlog until one closes",
           s->config.max_conns, w->workers, w->cfg->max_conns, w->index);
}

void on_server_full(HttpServer* s) { server_full(container_of(s, &Worker::server), s); }

void on_admin_server_full(HttpServer* s) { server_full(container_of(s, &Worker::admin_server), s); }

void worker_main(void* arg) {
  Worker* w = static_cast<Worker*>(arg);
  // "ringlb-w0", "ringlb-w1"...: per-thread figures (top -H, /proc/PID/task) name the worker.
  char name[16];
  snprintf(name, sizeof name, "ringlb-w%u", w->index);
  pthread_setname_np(pthread_self(), name);
  uv_run(w->loop, UV_RUN_DEFAULT);
  pools_free(&w->pools);
  exchange_free_spares(w);
  w->snap.reset();
  FromWorker m;
  m.kind = FromWorker::Kind::stopped;
  m.worker = w->index;
  m.loop_close_rc = uv_loop_close(w->loop);
  if (m.loop_close_rc != 0) LOG_ERROR("worker %u: handles left open at exit", w->index);
  mailbox_post(w->control, std::move(m));
}

// Undoes a worker_start that failed after its loop was initialised: every handle is closed (the
// listening sockets with them, or directly when no handle took them) and the loop is closed.
// On the caller's loop the loop is not the worker's to close: the daemon exits with the error
// without running that loop again, so the sockets are closed here (a listener that took its socket
// is closed as a handle) and w stays allocated, its handles still linked into that loop.
void worker_abort(Worker* w, int listen_fd, int admin_fd) {
  uv_os_fd_t fd;
  for (auto [s, sfd] : {std::pair{&w->server, listen_fd}, std::pair{&w->admin_server, admin_fd}}) {
    auto* listener = reinterpret_cast<uv_handle_t*>(&s->listener);
    bool taken = uv_fileno(listener, &fd) == 0;
    if (sfd >= 0 && !taken) close(sfd);
    if (taken && w->on_caller_loop) uv_close(listener, nullptr);
    if (s->spare_fd >= 0) close(s->spare_fd);
  }
  if (w->on_caller_loop) return;
  uv_walk(
      w->loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(w->loop, UV_RUN_DEFAULT);
  uv_loop_close(w->loop);
  pools_free(&w->pools);
  exchange_free_spares(w);
  delete w;
}

// Serves listening socket fd with s, one of w's two servers (admin: --admin-listen's).
int server_open(Worker* w, HttpServer* s, int fd, bool admin) {
  const Config* cfg = w->cfg;
  HttpServerConfig sc;
  sc.header_timeout_ms = cfg->header_timeout_ms;
  sc.idle_timeout_ms = cfg->idle_timeout_ms;
  // --max-conns is the total over the workers (g_open_clients).
  sc.max_conns = cfg->max_conns;
  sc.shared_count = admin ? nullptr : &g_open_clients;
  sc.tls = admin ? cfg->admin_tls.get() : cfg->tls.get();
  sc.tls_attach = tls_attach;
  s->config = sc;
  s->on_accept = admin ? on_accept_admin : on_accept;
  s->on_stopped = admin ? on_admin_server_stopped : on_server_stopped;
  s->on_full = admin ? on_admin_server_full : on_server_full;
  if (!admin && w->group != nullptr) {
    s->should_hand_off = on_should_hand_off;
    s->on_handed_off = on_handed_off;
  }
  std::string bound;
  int rc = http_server_listen_fd(s, w->loop, fd, &bound);
  if (rc != 0) return rc;
  w->servers_open++;
  LOG_DEBUG("worker %u: %s on %s", w->index, admin ? "admin routes" : "listening",
            bound.c_str());
  return 0;
}

}  // namespace

void worker_report_soon(Worker* w) {
  if (w->report_armed || w->finishing) return;
  uint64_t now = uv_now(w->loop);
  uint64_t due = w->last_report_at + kReportIntervalMs;
  uv_timer_start(&w->report, on_report, due > now ? due - now : 0, 0);
  w->report_armed = true;
}

// Everything the worker's loop needs is set up here, on the caller's thread, before the worker's
// thread exists (its creation orders these writes before everything the thread does): the inbox
// is open when worker_start returns, so the control plane may post to it at once.
int worker_start(const WorkerSetup& setup, Worker** out) {
  Worker* w = new Worker();
  w->index = setup.index;
  w->cfg_hold = setup.cfg;
  w->cfg = w->cfg_hold.get();
  w->workers = setup.cfg->workers > 0 ? setup.cfg->workers : 1;
  w->control = setup.control;
  w->group = setup.group;
  w->snap = setup.snapshot;
  w->admin_separate = !setup.cfg->admin_listen.empty();
  w->on_caller_loop = setup.loop != nullptr;
  w->loop = w->on_caller_loop ? setup.loop : &w->own_loop;
  int rc = w->on_caller_loop ? 0 : uv_loop_init(w->loop);
  if (rc != 0) {
    if (setup.listen_fd >= 0) close(setup.listen_fd);
    if (setup.admin_fd >= 0) close(setup.admin_fd);
    delete w;
    return rc;
  }
  w->rng.seed(uv_hrtime() ^ static_cast<uint64_t>(getpid()) ^
              (static_cast<uint64_t>(setup.index) * 0x9e3779b97f4a7c15ull));
  w->pools.loop = w->loop;
  w->pools.idle_max = setup.cfg->pool_idle_max;
  access_log_init(&w->access_log, w->loop, setup.index);
  access_log_configure(&w->access_log, setup.cfg->access_log, setup.access_log);
  if (w->snap != nullptr) {
    pools_install(&w->pools, *w->snap);
    routing_install(&w->routing, *w->snap);
  }
  uv_timer_init(w->loop, &w->sweep);
  uv_timer_init(w->loop, &w->report);
  uv_check_init(w->loop, &w->check);
  uv_idle_init(w->loop, &w->idle);
  w->inbox.on_messages = on_messages;
  rc = w->snap == nullptr ? UV_EINVAL : mailbox_open(&w->inbox, w->loop);
  if (rc == 0) rc = server_open(w, &w->server, setup.listen_fd, false);
  if (rc == 0 && setup.admin_fd >= 0) {
    w->has_admin_server = true;
    rc = server_open(w, &w->admin_server, setup.admin_fd, true);
  }
  if (rc == 0) {
    uv_timer_start(&w->sweep, on_sweep, kSweepMs, kSweepMs);
    if (!w->on_caller_loop) rc = uv_thread_create(&w->thread, worker_main, w);
  }
  if (rc != 0) {
    {
      std::lock_guard<std::mutex> lock(w->inbox.mu);
      w->inbox.open = false;
    }
    worker_abort(w, setup.listen_fd, setup.admin_fd);
    return rc;
  }
  *out = w;
  return 0;
}

bool worker_post(Worker* w, ToWorker&& msg) { return mailbox_post(&w->inbox, std::move(msg)); }

void worker_join(Worker* w) {
  if (w->on_caller_loop) {
    pools_free(&w->pools);
    exchange_free_spares(w);
  } else {
    uv_thread_join(&w->thread);
  }
  delete w;
}
