// ringlb: the load balancer daemon. Parses the configuration, creates the provisioner, the registry and
// the proxy on one libuv loop, and stops gracefully on SIGTERM or SIGINT: no new connections, in-flight
// requests finish, replicas are stopped, every handle is closed, exit 0.
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <sys/resource.h>

#include <uv.h>

#include "lb/config.h"
#include "lb/log.h"
#include "lb/prov_process.h"
#include "lb/prov_static.h"
#include "lb/proxy.h"
#include "lb/registry.h"

namespace {

struct Daemon {
  uv_loop_t* loop;
  Config cfg;
  Provisioner* prov = nullptr;
  Registry reg;
  Proxy proxy;
  uv_signal_t sigterm, sigint;
  bool stopping = false;
};

void on_signal(uv_signal_t* sig, int signum) {
  Daemon* d = static_cast<Daemon*>(sig->data);
  if (d->stopping) return;
  d->stopping = true;
  LOG_INFO("signal %d: stopping (finishing in-flight requests)", signum);
  uv_close(reinterpret_cast<uv_handle_t*>(&d->sigterm), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&d->sigint), nullptr);
  proxy_stop(&d->proxy, [d]() {
    registry_close(&d->reg, [d]() { LOG_INFO("stopped"); });
  });
}

LogLevel parse_level(const std::string& s) {
  if (s == "debug") return LogLevel::debug;
  if (s == "warn") return LogLevel::warn;
  if (s == "error") return LogLevel::error;
  return LogLevel::info;
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
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  static Daemon d;
  int rc = config_parse(argc, argv, &d.cfg);
  if (rc == 1) return 0;
  if (rc != 0) return rc;
  log_set_level(parse_level(d.cfg.log_level));
  signal(SIGPIPE, SIG_IGN);
  uint64_t fd_limit = raise_fd_limit();
  if (d.cfg.max_conns == 0) d.cfg.max_conns = config_default_max_conns(d.cfg, fd_limit);
  LOG_INFO("open-file limit %llu: at most %u client connections",
           static_cast<unsigned long long>(fd_limit), d.cfg.max_conns);
  setenv("UV_THREADPOOL_SIZE", "8", 0);  // Docker calls run on the threadpool; leave room for DNS
  d.loop = uv_default_loop();

  std::string err;
  d.prov = make_provisioner(&d, argv[0], &err);
  if (d.prov == nullptr) {
    fprintf(stderr, "ringlb: %s\n", err.c_str());
    return 2;
  }
  if (registry_init(&d.reg, d.loop, &d.cfg, d.prov, &err) != 0 ||
      proxy_start(&d.proxy, d.loop, &d.cfg, &d.reg, &err) != 0) {
    fprintf(stderr, "ringlb: %s\n", err.c_str());
    return 1;
  }
  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_init(d.loop, &d.sigint);
  d.sigterm.data = d.sigint.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  LOG_INFO("ringlb: %s provisioner, %s ring, %u replicas", d.prov->kind(), ring_mode_name(d.cfg.ring.mode),
           d.cfg.provisioner == ProvKind::static_list ? static_cast<unsigned>(d.cfg.backends.size())
                                                      : d.cfg.replicas);

  uv_run(d.loop, UV_RUN_DEFAULT);
  delete d.prov;
  if (uv_loop_close(d.loop) != 0) {
    LOG_ERROR("handles left open at exit");
    return 1;
  }
  return 0;
}
