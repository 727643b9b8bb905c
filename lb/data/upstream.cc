#include "lb/data/upstream.h"

#include <cstring>

#include "lb/http/container_of.h"

namespace {

constexpr uint64_t kPoolIdleMs = 30000;  // pooled connections idle longer are closed
constexpr uint64_t kReapEveryMs = 1000;

void pool_remove(UpstreamConn* u) {
  if (!u->in_pool) return;
  Pool* p = u->pool;
  for (UpstreamConn** at = &p->idle; *at != nullptr; at = &(*at)->pool_next) {
    if (*at == u) {
      *at = u->pool_next;
      break;
    }
  }
  u->pool_next = nullptr;
  u->in_pool = false;
  p->idle_count--;
}

// Closes the pooled connections idle since before cutoff (loop time), or all with UINT64_MAX.
void pool_reap(Pool* p, uint64_t cutoff) {
  UpstreamConn* u = p->idle;
  while (u != nullptr) {
    UpstreamConn* next = u->pool_next;
    if (u->idle_since < cutoff) upstream_close(u);
    u = next;
  }
}

PoolState pool_state_of(MemberState s) {
  switch (s) {
    case MemberState::usable: return PoolState::usable;
    case MemberState::starting: return PoolState::starting;
    case MemberState::dead: return PoolState::dead;
  }
  return PoolState::starting;
}

// Responses or durations counted since the last report (a 404 turned into 400 counts a response
// and a duration without a completed request).
bool pool_answered(const Pool* p) {
  for (int i = 1; i <= 5; i++)
    if (p->responses[i] != 0) return true;
  return p->duration.sum_us != 0 || p->duration.counts[0] != 0;
}

bool pool_has_news(const Pool* p) {
  return p->requests != 0 || p->failures != 0 || p->retries != 0 || pool_answered(p) || p->ok_seen ||
         p->strikes != 0 ||
         p->inflight != p->reported_inflight ||
         (p->state == PoolState::retired && p->inflight == 0 && p->conns == 0);
}

void on_connect(uv_connect_t* req, int status) {
  UpstreamConn* u = container_of(req, &UpstreamConn::connect_req);
  if (status == UV_ECANCELED || u->conn.closing) return;
  if (status == 0) {
    u->connected = true;
    uv_tcp_nodelay(&u->conn.tcp, 1);
  }
  u->on_connected(u, status);
}

}  // namespace

void pools_install(Pools* ps, const Snapshot& s) {
  for (auto& [uid, p] : ps->by_uid) p->index = -1;
  ps->by_index.assign(s.members.size(), nullptr);
  for (size_t i = 0; i < s.members.size(); i++) {
    const SnapMember& m = s.members[i];
    Pool*& p = ps->by_uid[m.uid];
    if (p == nullptr) {
      p = new Pool();
      p->pools = ps;
      p->uid = m.uid;
    }
    p->index = static_cast<int>(i);
    p->ring_id = m.ring_id;
    p->weight = m.weight;
    if (p->name != m.name) p->name = m.name;
    p->state = pool_state_of(m.state);
    p->was_dead = p->state == PoolState::dead;
    if (p->state == PoolState::usable) p->addr = m.addr;
    ps->by_index[i] = p;
  }
  // A replica replaced after it died is dead to this worker even if it never saw it marked so.
  for (const SnapMember& m : s.members) {
    if (m.replaces_uid == 0) continue;
    auto it = ps->by_uid.find(m.replaces_uid);
    if (it != ps->by_uid.end() && it->second->index < 0) it->second->was_dead = true;
  }
  for (auto& [uid, p] : ps->by_uid) {
    if (p->index < 0) p->state = PoolState::retired;
    // A replica that may not take new requests keeps no idle connection: a dead one's are
    // useless, a retired one's would keep it (and its descriptors) alive.
    if (p->state != PoolState::usable) pool_reap(p, UINT64_MAX);
  }
}

void pools_reap(Pools* ps, uint64_t now) {
  if (now - ps->last_reap < kReapEveryMs) return;
  ps->last_reap = now;
  uint64_t cutoff = now > kPoolIdleMs ? now - kPoolIdleMs : 0;
  for (auto& [uid, p] : ps->by_uid) pool_reap(p, cutoff);
}

void pools_close(Pools* ps) {
  ps->closing = true;
  for (auto& [uid, p] : ps->by_uid) pool_reap(p, UINT64_MAX);
}

bool pools_changed(const Pools* ps) {
  for (const auto& [uid, p] : ps->by_uid)
    if (pool_has_news(p)) return true;
  return false;
}

bool pools_report(Pools* ps, std::vector<MemberReport>* out) {
  bool changed = false;
  out->reserve(ps->by_uid.size());  // one allocation per report, not one per doubling
  for (auto it = ps->by_uid.begin(); it != ps->by_uid.end();) {
    Pool* p = it->second;
    changed = changed || pool_has_news(p);
    bool retired = p->state == PoolState::retired;
    if (p->requests != 0 || p->failures != 0 || p->retries != 0 || pool_answered(p) || p->ok_seen ||
        p->strikes != 0 || p->inflight > 0 || p->reported_inflight > 0 || retired) {
      MemberReport m;
      m.uid = p->uid;
      m.requests = p->requests;
      m.failures = p->failures;
      m.retries = p->retries;
      memcpy(m.responses, p->responses, sizeof m.responses);
      m.duration = p->duration;
      m.inflight = p->inflight;
      m.ok_seen = p->ok_seen;
      m.strikes = p->strikes;
      m.cause = std::move(p->cause);
      out->push_back(std::move(m));
    }
    p->requests = p->failures = p->retries = 0;
    memset(p->responses, 0, sizeof p->responses);
    p->duration = DurationHist{};
    p->ok_seen = false;
    p->strikes = 0;
    p->cause.clear();
    p->reported_inflight = p->inflight;
    if (retired && p->inflight == 0 && p->conns == 0) {
      delete p;
      it = ps->by_uid.erase(it);
    } else {
      ++it;
    }
  }
  return changed;
}

void pools_free(Pools* ps) {
  for (auto& [uid, p] : ps->by_uid) delete p;
  ps->by_uid.clear();
  ps->by_index.clear();
}

void pool_strike(Pool* p, const std::string& cause) {
  p->strikes++;
  p->cause = cause;
}

UpstreamConn* upstream_acquire(Pool* p, const HttpConnHandlers* handlers, size_t read_buffer,
                               void (*on_connected)(UpstreamConn*, int), int* err) {
  while (p->idle != nullptr) {
    UpstreamConn* u = p->idle;
    pool_remove(u);
    if (u->conn.closing || u->conn.peer_error != 0) {
      http_conn_close(&u->conn);
      continue;
    }
    u->conn.h = handlers;
    http_conn_reset_parser(&u->conn);
    return u;
  }
  UpstreamConn* u = new UpstreamConn();
  int rc = http_conn_init(p->pools->loop, &u->conn, HTTP_RESPONSE, handlers, read_buffer);
  if (rc != 0) {
    delete u;
    *err = rc;
    return nullptr;
  }
  u->pool = p;
  p->conns++;
  p->pools->conns++;
  u->on_connected = on_connected;
  rc = uv_tcp_connect(&u->connect_req, &u->conn.tcp, reinterpret_cast<struct sockaddr*>(&p->addr),
                      on_connect);
  if (rc != 0) {
    *err = rc;
    http_conn_close(&u->conn);  // the handler's on_close frees it
    return nullptr;
  }
  return u;
}

void upstream_release(UpstreamConn* u) {
  Pool* p = u->pool;
  u->client = nullptr;
  u->served++;
  if (u->conn.closing) return;
  // A connection that switched protocols (a tunnel after a 101) never speaks HTTP again.
  if (u->conn.raw || p->state != PoolState::usable || p->pools->closing ||
      p->idle_count >= p->pools->idle_max || u->conn.in_start != u->conn.in_end) {
    http_conn_close(&u->conn);
    return;
  }
  http_conn_reset_parser(&u->conn);
  u->idle_since = uv_now(p->pools->loop);
  u->pool_next = p->idle;
  p->idle = u;
  p->idle_count++;
  u->in_pool = true;
  http_conn_start(&u->conn);  // notice the replica closing it
}

void upstream_close(UpstreamConn* u) {
  pool_remove(u);
  http_conn_close(&u->conn);
}

void upstream_free(UpstreamConn* u) {
  pool_remove(u);
  Pool* p = u->pool;
  delete u;
  if (p == nullptr) return;
  p->conns--;
  Pools* ps = p->pools;
  if (--ps->conns == 0 && ps->closing && ps->on_empty != nullptr) ps->on_empty(ps);
}
