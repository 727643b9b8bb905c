#include "lb/data/upstream.h"

#include "lb/control/registry.h"

namespace {

void pool_remove(UpstreamConn* u) {
  if (!u->in_pool) return;
  Replica* r = u->replica;
  for (UpstreamConn** p = &r->idle; *p != nullptr; p = &(*p)->pool_next) {
    if (*p == u) {
      *p = u->pool_next;
      break;
    }
  }
  u->pool_next = nullptr;
  u->in_pool = false;
  r->idle_count--;
}

void on_connect(uv_connect_t* req, int status) {
  UpstreamConn* u = static_cast<UpstreamConn*>(req->data);
  if (status == UV_ECANCELED || u->conn.closing) return;
  if (status == 0) {
    u->connected = true;
    uv_tcp_nodelay(&u->conn.tcp, 1);
  }
  u->on_connected(u, status);
}

}  // namespace

UpstreamConn* upstream_acquire(Replica* r, const HttpConnHandlers* handlers, size_t read_buffer,
                               void (*on_connected)(UpstreamConn*, int), int* err) {
  while (r->idle != nullptr) {
    UpstreamConn* u = r->idle;
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
  int rc = http_conn_init(r->reg->loop, &u->conn, HTTP_RESPONSE, handlers, read_buffer);
  if (rc != 0) {
    delete u;
    *err = rc;
    return nullptr;
  }
  u->replica = r;
  replica_ref(r);
  u->on_connected = on_connected;
  u->connect_req.data = u;
  rc = uv_tcp_connect(&u->connect_req, &u->conn.tcp, reinterpret_cast<struct sockaddr*>(&r->addr),
                      on_connect);
  if (rc != 0) {
    *err = rc;
    http_conn_close(&u->conn);  // the handler's on_close frees it
    return nullptr;
  }
  return u;
}

void upstream_release(UpstreamConn* u, uint32_t pool_max) {
  Replica* r = u->replica;
  u->client = nullptr;
  u->served++;
  if (u->conn.closing) return;
  if (r->state != ReplicaState::healthy || r->removed || r->idle_count >= pool_max ||
      u->conn.in_start != u->conn.in_end) {
    http_conn_close(&u->conn);
    return;
  }
  http_conn_reset_parser(&u->conn);
  u->idle_since = uv_now(r->reg->loop);
  u->pool_next = r->idle;
  r->idle = u;
  r->idle_count++;
  u->in_pool = true;
  http_conn_start(&u->conn);  // notice the replica closing it
}

void upstream_close(UpstreamConn* u) {
  pool_remove(u);
  http_conn_close(&u->conn);
}

void upstream_pool_reap(Replica* r, uint64_t cutoff) {
  UpstreamConn* u = r->idle;
  while (u != nullptr) {
    UpstreamConn* next = u->pool_next;
    if (u->idle_since < cutoff) upstream_close(u);
    u = next;
  }
}

void upstream_free(UpstreamConn* u) {
  pool_remove(u);
  Replica* r = u->replica;
  delete u;
  if (r) replica_unref(r);
}
