#include "lb/provision/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
  // The replica's stdout and stderr: one pipe read by the loop, each line logged as
  // "replica NAME: ..." (log_replica_line) so that it stays apart from the LB's own lines.
  uv_pipe_t out;
  bool out_open = false;
  int handles = 1;      // proc, plus kill_timer and out while open: freed when none is left
  std::string partial;  // the start of a line whose end has not come yet
  char rbuf[4096];
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
  if (h == reinterpret_cast<uv_handle_t*>(&c->proc) && c->timer_open) {
    c->timer_open = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->kill_timer), on_child_closed);
  }
  if (--c->handles == 0) child_release(c);
}

// Longest replica output line kept whole; a longer one is logged in pieces of this size.
constexpr size_t kOutLineMax = 1900;

// Logs every complete line of the replica's output in data (and what partial held before).
void output_feed(Child* c, const char* data, size_t len) {
  while (len > 0) {
    const char* nl = static_cast<const char*>(memchr(data, '\n', len));
    size_t take = nl ? static_cast<size_t>(nl - data) : len;
    c->partial.append(data, take);
    if (nl || c->partial.size() >= kOutLineMax) {
      size_t n = c->partial.size();
      if (n > 0 && c->partial[n - 1] == '\r') n--;
      log_replica_line(c->name, c->partial.data(), std::min(n, kOutLineMax));
      c->partial.clear();
    }
    if (nl) take++;
    data += take;
    len -= take;
  }
}

void on_output_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  Child* c = static_cast<Child*>(h->data);
  *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

void output_close(Child* c) {
  if (!c->out_open) return;
  c->out_open = false;
  if (!c->partial.empty()) {  // a last line without its newline
    log_replica_line(c->name, c->partial.data(), c->partial.size());
    c->partial.clear();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&c->out), on_child_closed);
}

void on_output(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  Child* c = static_cast<Child*>(s->data);
  if (n > 0) output_feed(c, buf->base, static_cast<size_t>(n));
  else if (n < 0) output_close(c);  // EOF: the replica and everything it started closed it
}

// The replica exited: everything it wrote is in the pipe now. It is read to the end here, without
// waiting for an EOF that a process the replica left behind (holding the pipe) would delay.
void output_drain(Child* c) {
  if (!c->out_open) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->out));
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->out), &fd) == 0) {
    for (int i = 0; i < 64; i++) {  // at most 256 KiB: a pipe holds 64 KiB by default
      ssize_t n = read(fd, c->rbuf, sizeof c->rbuf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      output_feed(c, c->rbuf, static_cast<size_t>(n));
    }
  }
  output_close(c);
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
  output_drain(c);
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
  // Its stdout and stderr: the write end of one pipe (both streams in the order it writes them);
  // the read end is ours. Without a pipe its output goes to our stderr unprefixed.
  uv_file pipe_fds[2] = {-1, -1};
  bool piped = uv_pipe(pipe_fds, 0, 0) == 0;
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = piped ? pipe_fds[1] : 2;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = piped ? pipe_fds[1] : 2;
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
  if (piped) ::close(pipe_fds[1]);  // and of this one
  if (piped && rc != 0) ::close(pipe_fds[0]);
  if (piped && rc == 0) {
    uv_pipe_init(loop, &c->out, 0);
    c->out.data = c;
    c->handles++;
    int orc = uv_pipe_open(&c->out, pipe_fds[0]);
    if (orc != 0) ::close(pipe_fds[0]);
    if (orc == 0 &&
        uv_read_start(reinterpret_cast<uv_stream_t*>(&c->out), on_output_alloc, on_output) == 0) {
      c->out_open = true;
    } else {
      uv_close(reinterpret_cast<uv_handle_t*>(&c->out), on_child_closed);
    }
  }
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
    c->handles++;
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
