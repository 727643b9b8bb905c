#include "lb/provision/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>

#include "lb/log.h"

namespace {

struct ProcessProv;

struct Child {
  uv_process_t proc;  // first
  ProcessProv* prov;
  std::string name;
  std::string id;  // pid as text
  uv_timer_t kill_timer;
  bool timer_open = false;
  bool stopping = false;
  bool exited = false;
  ProvDoneCb stop_cb;
  // Until the deferred start callback ran: the answer to give. An exit before it turns the start
  // into a failure (the registry does not know this id yet, so on_exit would be lost).
  ProvStartCb start_cb;
  ReplicaInstance inst;
  uint64_t serial = 0;  // unique per start (a pid may be reused)
};

// Runs fn on a later loop iteration (no provisioner callback runs synchronously).
struct Deferred {
  uv_timer_t timer;
  std::function<void()> fn;
  ProcessProv* prov;
};

struct ProcessProv : Provisioner {
  uv_loop_t* loop;
  std::string bin;
  std::list<Child*> children;
  int open = 0;  // handles not yet closed
  std::function<void()> close_cb;
  bool closing = false;
  uint64_t next_serial = 1;

  const char* kind() const override { return "process"; }
  void start(const ReplicaSpec& spec, ProvStartCb cb) override;
  void stop(const ReplicaInstance& inst, ProvDoneCb cb) override;
  void list(ProvListCb cb) override {
    defer([cb]() { cb(0, "", {}); });
  }
  void close(std::function<void()> cb) override {
    closing = true;
    close_cb = std::move(cb);
    maybe_closed();
  }

  void defer(std::function<void()> fn);

  void maybe_closed() {
    if (closing && open == 0 && children.empty() && close_cb) {
      auto cb = std::move(close_cb);
      close_cb = nullptr;
      cb();
    }
  }
};

void on_deferred_closed(uv_handle_t* h) {
  Deferred* d = static_cast<Deferred*>(h->data);
  ProcessProv* p = d->prov;
  delete d;
  p->open--;
  p->maybe_closed();
}

void on_deferred(uv_timer_t* t) {
  Deferred* d = static_cast<Deferred*>(t->data);
  d->fn();
  uv_close(reinterpret_cast<uv_handle_t*>(t), on_deferred_closed);
}

void ProcessProv::defer(std::function<void()> fn) {
  Deferred* d = new Deferred();
  d->fn = std::move(fn);
  d->prov = this;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  open++;
  uv_timer_start(&d->timer, on_deferred, 0, 0);
}

void child_release(Child* c) {
  ProcessProv* p = c->prov;
  p->children.remove(c);
  delete c;
  p->maybe_closed();
}

void on_child_closed(uv_handle_t* h) {
  Child* c = static_cast<Child*>(h->data);
  if (c->timer_open) {
    c->timer_open = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->kill_timer), on_child_closed);
    return;
  }
  child_release(c);
}

void on_child_exit(uv_process_t* proc, int64_t status, int signal) {
  Child* c = static_cast<Child*>(proc->data);
  c->exited = true;
  std::string cause = signal ? std::string("signal ") + strsignal(signal)
                             : "exit code " + std::to_string(status);
  if (c->start_cb) {
    LOG_WARN("replica %s (pid %s) ended right after its start: %s", c->name.c_str(), c->id.c_str(),
             cause.c_str());
    auto cb = std::move(c->start_cb);
    c->start_cb = nullptr;
    cb(-EIO, "the replica process exited right after its start: " + cause, ReplicaInstance{});
  } else if (c->stopping) {
    if (c->stop_cb) {
      auto cb = std::move(c->stop_cb);
      c->stop_cb = nullptr;
      cb(0, "");
    }
  } else {
    LOG_WARN("replica %s (pid %s) ended: %s", c->name.c_str(), c->id.c_str(), cause.c_str());
    if (c->prov->on_exit) c->prov->on_exit(c->id, cause);
  }
  if (c->timer_open) uv_timer_stop(&c->kill_timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->proc), on_child_closed);
}

// A listening socket on 127.0.0.1, any free port. Returns the fd or a negative errno.
int listen_socket(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_in a {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 1024) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    int err = -errno;
    ::close(fd);
    return err;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

void ProcessProv::start(const ReplicaSpec& spec, ProvStartCb cb) {
  uint16_t port = 0;
  int fd = listen_socket(&port);
  if (fd < 0) {
    std::string err = std::string("cannot open a listening socket: ") + strerror(-fd);
    defer([cb, err]() { cb(-EIO, err, ReplicaInstance{}); });
    return;
  }
  Child* c = new Child();
  c->prov = this;
  c->name = spec.name;
  std::string id_arg = spec.name;
  std::string env_id = "SERVER_ID=" + spec.name;
  std::string env_port = "PORT=" + std::to_string(port);
  char listen_fds[] = "LISTEN_FDS=1";
  char* args[] = {const_cast<char*>(bin.c_str()), const_cast<char*>("--id"), id_arg.data(),
                  const_cast<char*>("--die-with-parent"), nullptr};
  char* env[] = {env_id.data(), env_port.data(), listen_fds, nullptr};
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 2;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = fd;
  uv_process_options_t opts {};
  opts.file = bin.c_str();
  opts.args = args;
  opts.env = env;
  opts.exit_cb = on_child_exit;
  opts.stdio = stdio;
  opts.stdio_count = 4;
  c->proc.data = c;
  int rc = uv_spawn(loop, &c->proc, &opts);
  ::close(fd);  // the child has its copy
  if (rc != 0) {
    std::string err = "cannot start " + bin + ": " + uv_strerror(rc);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->proc), [](uv_handle_t* h) { delete static_cast<Child*>(h->data); });
    defer([cb, err]() { cb(-EIO, err, ReplicaInstance{}); });
    return;
  }
  c->id = std::to_string(c->proc.pid);
  c->serial = next_serial++;
  children.push_back(c);
  c->inst.name = spec.name;
  c->inst.ring_id = spec.ring_id;
  c->inst.host = "127.0.0.1";
  c->inst.port = port;
  c->inst.id = c->id;
  c->start_cb = std::move(cb);
  LOG_INFO("replica %s: started pid %s on 127.0.0.1:%u", spec.name.c_str(), c->id.c_str(), port);
  defer([this, serial = c->serial]() {
    for (Child* ch : children) {
      if (ch->serial != serial || !ch->start_cb) continue;  // gone: on_child_exit answered
      auto start_cb = std::move(ch->start_cb);
      ch->start_cb = nullptr;
      start_cb(0, "", ch->inst);
      return;
    }
  });
}

void ProcessProv::stop(const ReplicaInstance& inst, ProvDoneCb cb) {
  for (Child* c : children) {
    if (c->id != inst.id || c->exited) continue;
    if (c->stopping) break;
    c->stopping = true;
    c->stop_cb = std::move(cb);
    uv_process_kill(&c->proc, SIGTERM);
    uv_timer_init(loop, &c->kill_timer);
    c->kill_timer.data = c;
    c->timer_open = true;
    uv_timer_start(&c->kill_timer, [](uv_timer_t* t) {
      Child* c = static_cast<Child*>(t->data);
      if (!c->exited) uv_process_kill(&c->proc, SIGKILL);  // did not stop within 2 s
    }, 2000, 0);
    return;
  }
  defer([cb]() { if (cb) cb(0, ""); });  // already gone
}

}  // namespace

Provisioner* prov_process_create(uv_loop_t* loop, const std::string& replica_bin) {
  ProcessProv* p = new ProcessProv();
  p->loop = loop;
  p->bin = replica_bin;
  return p;
}

std::string prov_process_default_bin(const char* argv0) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir;
  if (n > 0) {
    self[n] = 0;
    dir = self;
  } else {
    dir = argv0;
  }
  dir = dir.substr(0, dir.rfind('/') + 1);
  for (const char* rel : {"ringlb-replica", "../replica/ringlb-replica"}) {
    std::string path = dir + rel;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}
