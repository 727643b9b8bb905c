// upstream: connections from the load balancer to one replica, and the replica's keep-alive pool.
//
// A connection is either in use by one client exchange (client != nullptr), idle in its replica's pool
// (reading, so a close by the replica is noticed at once), or closing. Connections hold a reference on
// their replica, so a removed replica lives until its last connection is closed.
#pragma once

#include <cstdint>

#include <uv.h>

#include "lb/http/http_conn.h"

struct Replica;

struct UpstreamConn {
  HttpConn conn;  // first: http_conn_of(handle) is an UpstreamConn
  Replica* replica = nullptr;
  void* client = nullptr;  // the exchange using it (a ClientConn), nullptr while idle
  UpstreamConn* pool_next = nullptr;
  uv_connect_t connect_req;
  void (*on_connected)(UpstreamConn* u, int status) = nullptr;
  bool connected = false;
  bool in_pool = false;
  uint32_t served = 0;  // exchanges completed on this connection
  uint64_t idle_since = 0;
};

// True for an error that says this process ran out of something (descriptors, socket buffers,
// memory): EMFILE, ENFILE, ENOBUFS, ENOMEM. Such an error is never the replica's fault: a request
// that meets it is answered 503 naming the cause, a heartbeat that meets it has no result.
inline bool upstream_local_error(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM;
}

// Returns a connection to replica r for the caller's exchange: an idle pooled one (connected, served > 0)
// or a new one whose on_connected(u, status) runs once the TCP connect finishes. handlers are the
// caller's HTTP callbacks. Returns nullptr on immediate failure (*err set to a libuv code).
UpstreamConn* upstream_acquire(Replica* r, const HttpConnHandlers* handlers, size_t read_buffer,
                               void (*on_connected)(UpstreamConn*, int), int* err);

// Gives back a connection whose exchange completed cleanly with a kept-alive response: pooled when the
// replica is routable and the pool has room, else closed.
void upstream_release(UpstreamConn* u, uint32_t pool_max);

// Closes a connection (in use or idle); it leaves the pool at once.
void upstream_close(UpstreamConn* u);

// Closes pooled connections idle since before cutoff (loop time), or all with cutoff UINT64_MAX.
void upstream_pool_reap(Replica* r, uint64_t cutoff);

// Called by the owner's on_close handler for every upstream connection: drops the replica reference
// and frees the connection.
void upstream_free(UpstreamConn* u);
