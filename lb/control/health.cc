#include "lb/control/health.h"

#include "lb/http/container_of.h"
#include "lb/http/http_conn.h"
#include "lb/log.h"

namespace {

struct Probe {
  HttpConn conn;
  Replica* replica;
  uv_connect_t connect_req;
  uv_timer_t timer;
  bool done = false;
  int open = 2;  // conn and timer
  std::string request;  // the heartbeat request (--health-path), alive until the probe is freed
};

void probe_closed(Probe* pr) {
  if (--pr->open > 0) return;
  replica_unref(pr->replica);
  delete pr;
}

void on_timer_closed(uv_handle_t* h) { probe_closed(static_cast<Probe*>(h->data)); }

enum class Result : uint8_t { ok, failed, inconclusive };

// Ends the probe once. An inconclusive probe (this process could not make one: no descriptor, no
// buffer, no memory) reports nothing, so it neither counts toward --fall nor toward --rise.
void probe_finish(Probe* pr, Result result, const char* cause) {
  if (pr->done) return;
  pr->done = true;
  Replica* r = pr->replica;
  r->hb_probe_running = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&pr->timer), on_timer_closed);
  http_conn_close(&pr->conn);
  if (result == Result::inconclusive) {
    LOG_DEBUG("heartbeat of %s inconclusive: %s (a local error, not the replica's)", r->name.c_str(),
              cause);
    return;
  }
  bool ok = result == Result::ok;
  if (!r->removed && r->hb_timer_open) registry_heartbeat_result(r, ok, ok ? "" : cause);
}

// A failed probe: inconclusive for a local resource error, a failure otherwise.
void probe_fail(Probe* pr, int err) {
  probe_finish(pr, http_local_error(err) ? Result::inconclusive : Result::failed,
               err == HTTP_E_PARSE ? "malformed heartbeat answer" : uv_err_name(err));
}

Probe* probe_of(HttpConn* c) { return container_of(c, &Probe::conn); }

void on_head(HttpConn*) {}
void on_body(HttpConn*, const char*, size_t) {}
HttpNext on_message_end(HttpConn* c) {
  int status = c->head.status;
  if (status == 200) {
    probe_finish(probe_of(c), Result::ok, "");
  } else {
    std::string cause = "heartbeat answered " + std::to_string(status);
    probe_of(c)->replica->last_cause = cause;
    probe_finish(probe_of(c), Result::failed, "heartbeat status");
  }
  return HttpNext::pause;
}
void on_error(HttpConn* c, int err) { probe_fail(probe_of(c), err); }
void on_close(HttpConn* c) { probe_closed(probe_of(c)); }

const HttpConnHandlers kHandlers = {on_head, on_body, on_message_end, on_error, nullptr, on_close};

void on_timeout(uv_timer_t* t) {
  probe_finish(static_cast<Probe*>(t->data), Result::failed, "heartbeat timeout");
}

void on_connect(uv_connect_t* req, int status) {
  Probe* pr = static_cast<Probe*>(req->data);
  if (pr->done) return;
  if (status != 0) {
    probe_fail(pr, status);
    return;
  }
  pr->request = "GET " + pr->replica->reg->cfg->health_path +
                " HTTP/1.1\r\nHost: ringlb\r\nConnection: close\r\n\r\n";
  int rc = http_conn_write(&pr->conn, pr->request.data(), pr->request.size());
  if (rc == 0) rc = http_conn_start(&pr->conn);
  if (rc != 0) probe_fail(pr, rc);
}

void probe_start(Replica* r) {
  if (r->hb_probe_running || !r->addr_ok) return;
  Probe* pr = new Probe();
  pr->replica = r;
  replica_ref(r);
  if (http_conn_init(r->reg->loop, &pr->conn, HTTP_RESPONSE, &kHandlers, 4096) != 0) {
    replica_unref(r);  // no memory for a probe: no result either way
    delete pr;
    return;
  }
  r->hb_probe_running = true;
  uv_timer_init(r->reg->loop, &pr->timer);
  pr->timer.data = pr;
  uv_timer_start(&pr->timer, on_timeout, r->reg->cfg->hb_timeout_ms, 0);
  pr->connect_req.data = pr;
  int rc = uv_tcp_connect(&pr->connect_req, &pr->conn.tcp, reinterpret_cast<sockaddr*>(&r->addr),
                          on_connect);
  if (rc != 0) probe_fail(pr, rc);  // EMFILE here: the socket could not be created
}

void on_tick(uv_timer_t* t) { probe_start(static_cast<Replica*>(t->data)); }

void on_hb_timer_closed(uv_handle_t* h) { replica_unref(static_cast<Replica*>(h->data)); }

}  // namespace

void health_start(Replica* r) {
  if (r->hb_timer_open) return;
  uv_timer_init(r->reg->loop, &r->hb_timer);
  r->hb_timer.data = r;
  r->hb_timer_open = true;
  replica_ref(r);
  uv_timer_start(&r->hb_timer, on_tick, 0, r->reg->cfg->hb_interval_ms);
}

void health_rearm(Replica* r) {
  if (!r->hb_timer_open) return;
  uint64_t every = r->reg->cfg->hb_interval_ms;
  uv_timer_start(&r->hb_timer, on_tick, every, every);
}

void health_stop(Replica* r) {
  if (!r->hb_timer_open) return;
  r->hb_timer_open = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&r->hb_timer), on_hb_timer_closed);
}
