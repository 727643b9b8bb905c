// http_server: a listening socket and the connections it accepted. Shared by the replica and the load
// balancer (client side and admin listener).
//
// The owner supplies on_accept, which allocates whatever embeds an HttpConn, initialises it with
// http_conn_init and returns it; the server accepts into it, links it for timeouts and shutdown, and
// starts reading. A one-second sweep closes connections past their deadline (header read, idle).
// With config.max_conns the server takes at most that many connections at once (see there).
// http_server_stop stops accepting, closes idle connections, lets busy ones finish their exchange
// (the owner should answer with Connection: close once http_server_stopping is true) and calls back
// once every connection and the listener are closed.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <uv.h>

#include "lb/http/http_conn.h"

struct TlsContext;

struct HttpServerConfig {
  uint32_t header_timeout_ms = 10000;
  uint32_t idle_timeout_ms = 60000;
  uint32_t read_buffer = 16 * 1024;
  int backlog = 1024;
  // Most connections open at once (0: no cap). At the cap the server stops taking connections off
  // the listener (libuv stops polling it while an accepted socket waits for uv_accept), so the
  // kernel's backlog holds new clients until a connection closes; none is accepted and dropped.
  uint32_t max_conns = 0;
  // Set when several servers (one per data-plane worker, on one address) share max_conns: the
  // count of connections open over all of them, on any thread. Touched when a connection is
  // accepted or closes, never per request. A server at the shared cap looks again every 50 ms
  // (another server's close cannot wake its loop), so a client waits at most that long after a
  // place frees anywhere. Null: max_conns caps this server alone.
  std::atomic<uint32_t>* shared_count = nullptr;
  HttpHeadLimits limits;
  // TLS (lb/http/tls.h): when tls is set, tls_attach(c, tls) makes every connection the server
  // serves a TLS one before it reads (the owner sets tls_attach = ::tls_attach; a pointer, so that
  // the HTTP layer's users without TLS do not link OpenSSL). The handshake runs under
  // header_timeout_ms, armed at accept. Changing tls affects new connections only.
  const TlsContext* tls = nullptr;
  int (*tls_attach)(HttpConn* c, const TlsContext* tls) = nullptr;
};

struct HttpServer {
  uv_loop_t* loop = nullptr;
  uv_tcp_t listener;
  uv_timer_t sweep;
  HttpServerConfig config;
  void* owner = nullptr;
  // Allocates and initialises (http_conn_init) a connection; nullptr refuses the client.
  HttpConn* (*on_accept)(HttpServer* s) = nullptr;
  // Called once by http_server_stop when everything is closed.
  void (*on_stopped)(HttpServer* s) = nullptr;
  // Called each time the server reaches config.max_conns and stops accepting (optional; the owner
  // decides how often to say so).
  void (*on_full)(HttpServer* s) = nullptr;
  // Optional, for spreading clients over several servers on one address (one per data-plane
  // worker). should_hand_off is asked for a client of a TLS server as it is accepted (its TLS state
  // cannot move later), and for any other at its first idle moment (http_server_hand_off). True
  // means "serve it elsewhere": the server hands a duplicate of its descriptor to on_handed_off,
  // which owns it from then on (for http_server_adopt on the other server's loop; idle: between
  // requests). on_handed_off returns true when the other server has it: this one closes its own
  // descriptor, and the client's place under max_conns stays taken. False (fd -1: no descriptor
  // for the duplicate; or the other server is gone, and the duplicate closed with its message):
  // the client is served here after all. The owner's on_accept ran for it either way.
  bool (*should_hand_off)(HttpServer* s) = nullptr;
  bool (*on_handed_off)(HttpServer* s, HttpConn* c, int fd, bool idle) = nullptr;  // true: c closes
  HttpConn* conns = nullptr;  // linked through HttpConn::prev/next
  size_t conn_count = 0;
  int open_handles = 0;
  bool stopping = false;
  bool accept_waiting = false;  // at the cap: libuv holds one accepted socket until a slot frees
  // Out of descriptors (accept failed with EMFILE/ENFILE): the listener handle is closed for a
  // sweep period and then opened again on spare_fd, a duplicate of the listening socket kept for
  // that (the socket and its backlog live on meanwhile). 0 listening, 1 closing, 2 closed.
  uint8_t accept_pause = 0;
  int spare_fd = -1;
};

// Parses "HOST:PORT", "[V6]:PORT" or ":PORT"/"PORT" (host 0.0.0.0) into addr. Returns 0 or UV_EINVAL.
int http_parse_address(const std::string& text, struct sockaddr_storage* addr);
// "127.0.0.1:5000" for a bound address.
std::string http_format_address(const struct sockaddr* addr);
// The IP address alone, "127.0.0.1" or "::1" (no brackets). IPv4 is formatted without printf: the
// proxy formats the address of every client it accepts.
std::string http_format_ip(const struct sockaddr* addr);

// Listens on address (http_parse_address form). Returns 0 or a negative libuv code; *bound gets the
// actual address (useful with port 0).
int http_server_listen(HttpServer* s, uv_loop_t* loop, const std::string& address, std::string* bound);
// Opens count listening sockets on one address (http_parse_address form), each bound with
// SO_REUSEPORT when count > 1 so the kernel spreads new connections over them (one per data-plane
// worker). Port 0 is resolved by the first socket and the others bind that same port. Blocking
// system calls: for start-up, before any loop runs. Returns 0 with the descriptors in *fds and the
// bound address in *bound, or a negative errno (nothing left open).
int http_bind_sockets(const std::string& address, int count, int backlog, std::vector<int>* fds,
                      std::string* bound);
// Listens on an already bound and listening socket handed down by a parent (LISTEN_FDS style) or
// opened by http_bind_sockets. The server owns fd from then on.
int http_server_listen_fd(HttpServer* s, uv_loop_t* loop, int fd, std::string* bound);

// Serves fd, a client another server on the same address accepted and handed off (see
// should_hand_off; it holds a place under the shared max_conns): a new one, under the header
// timeout, or (idle) one between requests, under the idle timeout. Owns fd: a stopping server, or
// one whose owner refuses the client, closes it. Returns 0 or a libuv code.
int http_server_adopt(HttpServer* s, int fd, bool idle);

// c, a plain (not TLS) client of s, is between requests with nothing read and nothing to write:
// hands it to another server if should_hand_off says so. True: c is handed off and closing (its
// owner's on_close follows); false: it stays.
bool http_server_hand_off(HttpServer* s, HttpConn* c);

bool http_server_stopping(const HttpServer* s);
void http_server_stop(HttpServer* s);

// Internal to the HTTP layer: unlinks a closed connection.
void http_server_forget(HttpServer* s, HttpConn* c);
// True when the connection is between messages with nothing queued (safe to close at shutdown).
bool http_conn_idle(const HttpConn* c);
