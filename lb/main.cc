// ringlb: the load balancer daemon. Parses the configuration, creates the provisioner, the registry and
// the control plane on the main thread's loop, which starts the data-plane workers (one thread and
// loop each, --workers). Stops gracefully on SIGTERM or SIGINT: no new connections, every worker
// finishes its in-flight requests and closes its loop, then the replicas are stopped (or, with
// --on-exit keep, the counted Docker replicas are left for the next LB to adopt), every handle is
// closed, exit 0.
//
// Signals: SIGTERM/SIGINT start that shutdown. A second one hurries it: replicas are stopped at once
// (drains and in-flight requests are cut short) but still removed as --on-exit says. A third exits at
// once (exit 1), leaving whatever was not removed yet. SIGHUP reloads the configuration (reload
// below): the --config file and the environment the daemon started with are read again, the
// original flags still win, and what may change live is applied; the access log file is reopened.
//
// `ringlb --version` prints the version and the versions of the libraries it runs on.
//
// `ringlb --check URL` is the container healthcheck (the image has no shell or curl): GET URL
// (http://IPV4:PORT/PATH, or http://localhost:PORT/PATH), exit 0 on a 2xx and 1 otherwise, within
// 3 s; the body is printed. `ringlb --check-ready [HOST:PORT]` is --check http://HOST:PORT/readyz,
// HOST:PORT by default 127.0.0.1 and the port of RINGLB_LISTEN (only the environment is read, not
// the flags), else 5000.
//
// systemd (Type=notify, lb/sdnotify.h): READY=1 once the listeners are open and every replica
// counted at start is healthy with every worker routing to it (or, after --start-timeout, at
// least one is: a static backend that never comes up does not hold the service back forever);
// STOPPING=1 on the first SIGTERM/SIGINT; WATCHDOG=1 from the control loop every half of
// $WATCHDOG_USEC when the unit sets WatchdogSec.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sys/resource.h>

#include <curl/curl.h>
#include <jansson.h>
#include <llhttp.h>
#include <uv.h>

#include "lb/access_log.h"
#include "lb/config.h"
#include "lb/control/health.h"
#include "lb/http/container_of.h"
#include "lb/http/tls.h"
#include "lb/log.h"
#include "lb/sdnotify.h"
#include "lb/provision/process.h"
#include "lb/provision/static.h"
#include "lb/control/control.h"
#include "lb/control/registry.h"

namespace {

struct Daemon {
  uv_loop_t* loop;
  Config cfg;
  ConfigSources sources;  // the flags and environment at start, for SIGHUP
  ConfigGiven given;      // the text of every option in force
  Provisioner* prov = nullptr;
  Registry reg;
  Control control;
  uv_signal_t sigterm, sigint, sighup;
  int stop_signals = 0;  // SIGTERM/SIGINT received so far
  bool workers_stopped = false, registry_closed = false, signals_closed = false;
  // systemd notification: ready_timer looks for readiness until READY=1 is sent; watchdog pings.
  uv_timer_t ready_timer, watchdog;
  uint64_t started_at = 0;
  bool ready_asked = false;
  bool ready_sent = false;  // READY=1 went: a reload may say it again (not before: see reload)
};

// Readiness, checked every 50 ms from the start until it holds: every replica counted at start is
// healthy (or, once --start-timeout has passed, at least one). READY=1 goes once every worker
// routes by that (control_after_sync): a client that starts sending on READY=1 meets no 503.
void on_ready_check(uv_timer_t* t) {
  Daemon* d = container_of(t, &Daemon::ready_timer);
  if (d->stop_signals > 0 || d->ready_asked) {
    uv_timer_stop(t);
    return;
  }
  std::vector<const Replica*> counted = registry_counted(&d->reg);
  size_t healthy = 0;
  for (const Replica* r : counted) healthy += r->state == ReplicaState::healthy ? 1 : 0;
  bool late = uv_now(d->loop) - d->started_at >= d->cfg.start_timeout_ms;
  if (healthy < counted.size() && !(late && healthy > 0)) return;
  uv_timer_stop(t);
  d->ready_asked = true;
  size_t total = counted.size();
  control_after_sync(&d->control, [d, healthy, total](const Snapshot&) {
    if (d->stop_signals > 0) return;
    char state[128];
    snprintf(state, sizeof state, "READY=1\nSTATUS=serving, %zu of %zu replicas healthy", healthy, total);
    bool sent = sdnotify(state);
    d->ready_sent = true;
    if (healthy < total)
      LOG_WARN("ready with %zu of %zu replicas healthy (--start-timeout passed)%s", healthy, total,
               sent ? "; told systemd" : "");
    else
      LOG_INFO("ready: %zu replicas healthy%s", total, sent ? "; told systemd" : "");
  });
}

void on_watchdog(uv_timer_t*) { sdnotify("WATCHDOG=1"); }

// The signal handles go last, once both the workers and the registry are closed: a signal during
// shutdown (a third one while hurried workers still finish) never meets the default action. Closing
// them restores the default action (libuv), so from then on these signals are ignored: everything
// is stopped and the process is only leaving, with its exit status (a SIGTERM in that moment made
// it die by the signal, exit -15, in CI).
void close_signals_when_done(Daemon* d) {
  if (!d->workers_stopped || !d->registry_closed || d->signals_closed) return;
  d->signals_closed = true;
  LOG_INFO("stopped");
  for (uv_signal_t* s : {&d->sigterm, &d->sigint, &d->sighup})
    uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) signal(sig, SIG_IGN);
  uv_close(reinterpret_cast<uv_handle_t*>(&d->ready_timer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&d->watchdog), nullptr);
}

// The registry is closed once: after the workers drained (first signal) or at once (second signal).
void close_registry(Daemon* d) {
  registry_close(&d->reg, d->cfg.on_exit_keep, [d]() {
    d->registry_closed = true;
    close_signals_when_done(d);
  });
}

void on_workers_stopped(Daemon* d) {
  d->workers_stopped = true;
  close_registry(d);  // no-op when a second signal closed it already
  close_signals_when_done(d);
}

// Loads the TLS contexts cfg's certificate and key files name (none for a listener without TLS)
// into cfg->tls and cfg->admin_tls, after checking the options go together (here rather than in
// config.cc's cross-checks: a file is read here anyway, and the pair is one check). False with *err naming the file at fault; cfg is then unchanged.
bool load_tls(Config* cfg, std::string* err) {
  if (cfg->tls_cert.empty() != cfg->tls_key.empty()) {
    *err = "--tls-cert and --tls-key go together";
    return false;
  }
  if (cfg->admin_tls_cert.empty() != cfg->admin_tls_key.empty()) {
    *err = "--admin-tls-cert and --admin-tls-key go together";
    return false;
  }
  if (!cfg->admin_tls_cert.empty() && cfg->admin_listen.empty()) {
    *err = "--admin-tls-cert needs --admin-listen (without it admin routes follow --tls-cert)";
    return false;
  }
  std::shared_ptr<TlsContext> main_ctx, admin_ctx;
  if (!cfg->tls_cert.empty()) {
    main_ctx = tls_context_load(cfg->tls_cert, cfg->tls_key, "--tls-cert", "--tls-key", err);
    if (main_ctx == nullptr) return false;
  }
  if (!cfg->admin_tls_cert.empty()) {
    admin_ctx = tls_context_load(cfg->admin_tls_cert, cfg->admin_tls_key, "--admin-tls-cert",
                                 "--admin-tls-key", err);
    if (admin_ctx == nullptr) return false;
  }
  cfg->tls = std::move(main_ctx);
  cfg->admin_tls = std::move(admin_ctx);
  return true;
}

// SIGHUP: reads the configuration again from the sources it started with and applies what may
// change live, one log line per changed option; an option that needs a restart is logged and
// left. An invalid file (or an access log that cannot be opened) changes nothing and says why.
// The workers get the new values by message (control_reconfigure), the heartbeat timers are
// re-armed with the new interval. systemd hears RELOADING=1 before and READY=1 after, once the
// daemon said it was ready (a reload during the start must not end systemd's wait for readiness).
void reload(Daemon* d) {
  char notify[64];
  snprintf(notify, sizeof notify, "RELOADING=1\nMONOTONIC_USEC=%llu",
           static_cast<unsigned long long>(uv_hrtime() / 1000));
  if (d->ready_sent) sdnotify(notify);
  LOG_INFO("reload (SIGHUP): reading %s%s", d->cfg.config_file.empty() ? "" : d->cfg.config_file.c_str(),
           d->cfg.config_file.empty() ? "the environment and flags (no --config file)"
                                      : ", then the environment and flags it started with");
  Config fresh;
  ConfigGiven fresh_given;
  std::string err;
  Config next = d->cfg;
  ConfigGiven next_given = d->given;
  std::vector<std::string> changed, ignored;
  AccessLogSinkPtr sink;
  int rc = config_load(d->sources, &fresh, &fresh_given, &err);
  bool ok = rc == 0 && config_reload(&next, &next_given, fresh, fresh_given, &changed, &ignored, &err);
  if (rc != 0 && err.empty()) err = "--help or --version among the flags";
  // The certificates are read again (renewed files in place): new connections get them, open ones
  // keep theirs. A pair that does not load fails the reload like any invalid value.
  if (ok) ok = load_tls(&next, &err);
  if (ok && next.access_log != AccessLogMode::off) {
    sink = access_log_open(next.access_log_file, &err);  // reopened on every reload (logrotate)
    ok = sink != nullptr;
  }
  if (!ok) {
    LOG_ERROR("reload failed: %s; the running configuration is kept", err.c_str());
    if (d->ready_sent) sdnotify("READY=1");  // a reload before readiness must not announce it
    return;
  }
  // Said under the level in force before the reload (a new one applies from the next line on).
  for (const std::string& line : ignored) LOG_WARN("reload: %s", line.c_str());
  for (const std::string& line : changed) LOG_INFO("reload: %s", line.c_str());
  bool hb_changed = next.hb_interval_ms != d->cfg.hb_interval_ms;
  d->prov->set_template(ReplicaTemplate{next.replica_image, next.replica_env, next.replica_cmd,
                                next.replica_nano_cpus, next.replica_memory});
  d->cfg = std::move(next);  // in place: the registry and the control plane point at it
  d->given = std::move(next_given);
  LogLevel level = LogLevel::info;
  log_parse_level(d->cfg.log_level, &level);
  log_set_level(level);
  if (hb_changed)
    for (Replica* r : d->reg.replicas) health_rearm(r);
  control_reconfigure(&d->control, sink);
  LOG_INFO("reload done: %zu changed, %zu left until a restart", changed.size(), ignored.size());
  if (d->ready_sent) sdnotify("READY=1");  // a reload before readiness must not announce it
}

void on_signal(uv_signal_t* sig, int signum) {
  Daemon* d = static_cast<Daemon*>(sig->data);
  if (signum == SIGHUP) {
    if (d->stop_signals > 0) {
      LOG_WARN("signal %d (SIGHUP) while stopping: not reloaded", signum);
      return;
    }
    reload(d);
    return;
  }
  d->stop_signals++;
  if (d->stop_signals == 1) {
    sdnotify("STOPPING=1");
    LOG_INFO("signal %d: stopping (finishing in-flight requests, then %s the replicas)", signum,
             d->cfg.on_exit_keep ? "keeping" : "removing");
    control_stop(&d->control, [d]() { on_workers_stopped(d); });
  } else if (d->stop_signals == 2) {
    LOG_WARN("signal %d again: hurrying (drains and in-flight requests cut short), still %s the "
             "replicas; a third signal exits at once", signum,
             d->cfg.on_exit_keep ? "keeping" : "removing");
    close_registry(d);  // no-op when it already runs; the workers finish as the replicas go
  } else {
    LOG_ERROR("signal %d a third time: exiting now, replicas not yet removed are left behind", signum);
    _exit(1);
  }
}

// --check URL: see the top of the file. Blocking sockets: it runs alone, outside any loop. Only
// plain http to an IPv4 address or localhost: the healthcheck of a container asks its own daemon.
int check_url(const std::string& url) {
  const std::string scheme = "http://";
  std::string rest = url.rfind(scheme, 0) == 0 ? url.substr(scheme.size()) : "";
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  size_t colon = hostport.rfind(':');
  std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  char* end = nullptr;
  long port = colon == std::string::npos ? 80 : strtol(hostport.c_str() + colon + 1, &end, 10);
  struct sockaddr_in sa {};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  bool path_ok = path.find_first_of(" \r\n") == std::string::npos;
  if (rest.empty() || port <= 0 || port > 65535 || (end != nullptr && *end != 0) || !path_ok ||
      inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
    fprintf(stderr, "ringlb: --check needs http://IPV4:PORT/PATH (or localhost), not '%s'\n", url.c_str());
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv {3, 0};
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: ringlb\r\n\r\n";
  char buf[4096];
  ssize_t got = 0;
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    fprintf(stderr, "ringlb: --check: cannot reach %s: %s\n", url.c_str(), strerror(errno));
    if (fd >= 0) close(fd);
    return 1;
  }
  while (got < static_cast<ssize_t>(sizeof buf - 1)) {
    ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
    if (n <= 0) break;
    got += n;
  }
  close(fd);
  buf[got] = 0;
  bool ok = got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && buf[8] == ' ' && buf[9] == '2';
  const char* body = strstr(buf, "\r\n\r\n");
  printf("%s\n", body ? body + 4 : "no answer");
  return ok ? 0 : 1;
}

// --check-ready [HOST:PORT]: --check http://HOST:PORT/readyz.
int check_ready(int argc, char** argv) {
  std::string target = argc > 2 ? argv[2] : "";
  if (target.empty()) {
    const char* listen = getenv("RINGLB_LISTEN");
    std::string l = listen ? listen : "0.0.0.0:5000";
    target = "127.0.0.1:" + l.substr(l.rfind(':') + 1);
  }
  return check_url("http://" + target + "/readyz");
}

// --version: the daemon's version (meson's project version) and the libraries' it runs on (the
// linked ones as they report themselves; llhttp is compiled in, so its headers').
void print_version() {
  const curl_version_info_data* curl = curl_version_info(CURLVERSION_NOW);
  printf("ringlb %s\n", RINGLB_VERSION);
  printf("libuv %s\n", uv_version_string());
  printf("llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
  printf("libcurl %s\n", curl && curl->version ? curl->version : "unknown");
  printf("jansson %s\n", jansson_version_str());
  printf("openssl %s\n", tls_library_version());
}

Provisioner* make_provisioner(Daemon* d, const char* argv0, std::string* err);

// Raises the soft RLIMIT_NOFILE to the hard limit (the default soft limit, often 1024, is what runs
// out under many idle clients) and returns the limit now in force, for the --max-conns default.
uint64_t raise_fd_limit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
    else LOG_WARN("cannot raise the open-file limit from %llu to %llu",
                  static_cast<unsigned long long>(rl.rlim_cur),
                  static_cast<unsigned long long>(rl.rlim_max));
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : static_cast<uint64_t>(rl.rlim_cur);
}

}  // namespace

// The Docker provisioner lives in its own library; main links it through this hook.
Provisioner* make_docker_provisioner(uv_loop_t* loop, const Config& cfg, std::string* err);
Provisioner* make_swarm_provisioner(uv_loop_t* loop, const Config& cfg, std::string* err);

namespace {

Provisioner* make_provisioner(Daemon* d, const char* argv0, std::string* err) {
  switch (d->cfg.provisioner) {
    case ProvKind::process: {
      std::string bin = d->cfg.replica_bin.empty() ? prov_process_default_bin(argv0) : d->cfg.replica_bin;
      if (bin.empty()) {
        *err = "cannot find ringlb-replica next to ringlb: give --replica-bin PATH";
        return nullptr;
      }
      return prov_process_create(d->loop, bin);
    }
    case ProvKind::static_list:
      return prov_static_create(d->loop, d->cfg.backends);
    case ProvKind::docker:
      return make_docker_provisioner(d->loop, d->cfg, err);
    case ProvKind::swarm:
      return make_swarm_provisioner(d->loop, d->cfg, err);
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "--check-ready") == 0) return check_ready(argc, argv);
  if (argc > 1 && strncmp(argv[1], "--check", 7) == 0 && (argv[1][7] == 0 || argv[1][7] == '=')) {
    if (argv[1][7] == '=') return check_url(argv[1] + 8);
    if (argc != 3) {
      fprintf(stderr, "ringlb: --check needs a URL: ringlb --check http://127.0.0.1:5000/readyz\n");
      return 2;
    }
    return check_url(argv[2]);
  }
  static Daemon d;
  int rc = config_parse(argc, argv, &d.cfg, &d.sources, &d.given);
  if (rc == CONFIG_HELP) return 0;
  if (rc == CONFIG_VERSION) {
    print_version();
    return 0;
  }
  if (rc != 0) return rc;
  LogLevel level = LogLevel::info;
  log_parse_level(d.cfg.log_level, &level);
  log_set_level(level);
  if (d.cfg.access_log != AccessLogMode::off) {
    std::string why;
    d.control.access_log = access_log_open(d.cfg.access_log_file, &why);
    if (d.control.access_log == nullptr) {
      fprintf(stderr, "ringlb: --access-log-file: %s\n", why.c_str());
      return 2;
    }
  }
  {
    std::string why;
    if (!load_tls(&d.cfg, &why)) {
      fprintf(stderr, "ringlb: %s\n", why.c_str());
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  uint64_t fd_limit = raise_fd_limit();
  if (d.cfg.max_conns == 0) d.cfg.max_conns = config_default_max_conns(d.cfg, fd_limit);
  if (d.cfg.workers == 0) d.cfg.workers = config_default_workers();
  LOG_INFO("open-file limit %llu: at most %u client connections",
           static_cast<unsigned long long>(fd_limit), d.cfg.max_conns);
  setenv("UV_THREADPOOL_SIZE", "8", 0);  // Docker calls run on the threadpool; leave room for DNS
  d.loop = uv_default_loop();
  // Signals are caught from here on: one that arrives while the provisioner pings the engine or the
  // replicas are listed waits for the loop instead of killing the daemon (exit -15, nothing
  // logged). on_signal runs only inside uv_run, once everything below is set up.
  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_init(d.loop, &d.sigint);
  uv_signal_init(d.loop, &d.sighup);
  d.sigterm.data = d.sigint.data = d.sighup.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  uv_signal_start(&d.sighup, on_signal, SIGHUP);

  std::string err;
  d.prov = make_provisioner(&d, argv[0], &err);
  if (d.prov == nullptr) {
    fprintf(stderr, "ringlb: %s\n", err.c_str());
    return 2;
  }
  if (registry_init(&d.reg, d.loop, &d.cfg, d.prov, &err) != 0 ||
      control_start(&d.control, d.loop, &d.cfg, &d.reg, &err) != 0) {
    fprintf(stderr, "ringlb: %s\n", err.c_str());
    return 1;
  }
  LOG_INFO("ringlb: %s provisioner, %s ring, %u replicas", d.prov->kind(), ring_mode_name(d.cfg.ring.mode),
           d.cfg.provisioner == ProvKind::static_list ? static_cast<unsigned>(d.cfg.backends.size())
                                                      : d.cfg.replicas);

  d.started_at = uv_now(d.loop);
  uv_timer_init(d.loop, &d.ready_timer);
  uv_timer_start(&d.ready_timer, on_ready_check, 0, 50);
  uv_timer_init(d.loop, &d.watchdog);
  if (unsigned long long usec = sdnotify_watchdog_usec(); usec > 0) {
    uint64_t ms = usec / 2000 > 0 ? usec / 2000 : 1;  // half of WatchdogSec, as sd_watchdog_enabled(3) advises
    uv_timer_start(&d.watchdog, on_watchdog, 0, ms);
    LOG_INFO("systemd watchdog: WATCHDOG=1 every %llu ms", static_cast<unsigned long long>(ms));
  }

  uv_run(d.loop, UV_RUN_DEFAULT);
  delete d.prov;
  if (uv_loop_close(d.loop) != 0 || !d.control.loops_clean) {
    LOG_ERROR("handles left open at exit");
    return 1;
  }
  return 0;
}
