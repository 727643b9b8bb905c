#include "lb/provision/static.h"

#include <cerrno>

namespace {

struct Deferred {
  uv_timer_t timer;
  std::function<void()> fn;
};

void on_closed(uv_handle_t* h) { delete static_cast<Deferred*>(h->data); }

void on_timer(uv_timer_t* t) {
  Deferred* d = static_cast<Deferred*>(t->data);
  d->fn();
  uv_close(reinterpret_cast<uv_handle_t*>(t), on_closed);
}

struct StaticProv : Provisioner {
  uv_loop_t* loop;
  std::vector<ReplicaInstance> backends;

  void defer(std::function<void()> fn) {
    Deferred* d = new Deferred();
    d->fn = std::move(fn);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_timer, 0, 0);
  }
  const char* kind() const override { return "static"; }
  bool can_scale() const override { return false; }
  void start(const ReplicaSpec&, ProvStartCb cb) override {
    defer([cb]() { cb(-ENOTSUP, "the static pool cannot start replicas", ReplicaInstance{}); });
  }
  void stop(const ReplicaInstance&, ProvDoneCb cb) override {
    defer([cb]() { cb(0, ""); });
  }
  void list(ProvListCb cb) override {
    std::vector<ReplicaInstance> list = backends;
    defer([cb, list]() { cb(0, "", list); });
  }
  void close(std::function<void()> cb) override { defer(cb); }
};

}  // namespace

Provisioner* prov_static_create(uv_loop_t* loop, const std::vector<std::string>& backends) {
  StaticProv* p = new StaticProv();
  p->loop = loop;
  uint32_t id = 1;
  for (const std::string& b : backends) {
    ReplicaInstance inst;
    size_t colon = b.rfind(':');
    inst.host = b.substr(0, colon);
    if (inst.host.size() > 2 && inst.host.front() == '[') inst.host = inst.host.substr(1, inst.host.size() - 2);
    inst.port = static_cast<uint16_t>(atoi(b.c_str() + colon + 1));
    inst.ring_id = id;
    inst.name = "backend" + std::to_string(id);
    inst.id = b;
    id++;
    p->backends.push_back(inst);
  }
  return p;
}
