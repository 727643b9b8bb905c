// proxy: the client side of the load balancer. Accepts client connections, routes each request to a
// replica through the ring, forwards it over a pooled upstream connection, streams the response back,
// fails over to the next replica clockwise when one fails before answering, and hands admin routes to
// admin.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include <uv.h>

#include "lb/config.h"
#include "lb/http/http_server.h"
#include "lb/control/metrics.h"
#include "lb/control/registry.h"

struct ClientConn;

struct Proxy {
  uv_loop_t* loop = nullptr;
  const Config* cfg = nullptr;
  Registry* reg = nullptr;
  HttpServer server;        // clients (and admin routes unless --admin-listen)
  HttpServer admin_server;  // --admin-listen
  bool admin_separate = false;
  uv_timer_t sweep;         // exchange timeouts: connect, request body, response, response body
  ClientConn* active = nullptr;  // exchanges waiting on a replica, for the sweep
  std::mt19937_64 rng;
  Metrics metrics;
  int open = 0;  // servers and timers not yet closed
  bool full_logged = false;   // --max-conns was reached and said so
  uint64_t full_logged_at = 0;
  std::function<void()> on_stopped;
};

// Listens on cfg->listen (and cfg->admin_listen). Returns 0 or a libuv code with *err naming the address.
int proxy_start(Proxy* p, uv_loop_t* loop, const Config* cfg, Registry* reg, std::string* err);

// Graceful stop: no new connections, in-flight exchanges finish; on_stopped once all is closed.
void proxy_stop(Proxy* p, std::function<void()> on_stopped);

// Answers the client's current exchange with a complete response of the proxy's own (admin routes,
// errors). alive is the token admin.cc keeps across asynchronous work; responding to a closed client is
// a no-op.
struct ClientRef {
  std::shared_ptr<bool> alive;
  ClientConn* conn;
};
// extra: complete header lines to add, each ending in \r\n (Allow on a 405), or empty.
void proxy_respond(const ClientRef& ref, int status, const std::string& body,
                   std::string_view content_type = "application/json", std::string_view extra = {});

// The JSON error body every ringlb error uses: {"message": "<Error> TEXT", "status": "failure"}.
std::string proxy_error_json(const std::string& text);
