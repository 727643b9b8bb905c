// exchange_accept: a client connection's memory (its ClientConn, exchange.h), made at accept and
// given back at close. Closed clients are kept per worker for the next accepts: a new connection
// per request (HTTP/1.0, ab, Connection: close) then costs no allocation for the connection, its
// read buffer, its head and its strings (about 3,000 user-space instructions of malloc and free per
// connection, measured with callgrind). Bounded: 64 x ~20 KiB per worker (with 32, 64 clients
// reconnecting at once on one worker allocated half of them anew); spares not taken for
// kSpareTrimMs are freed, so memory kept for a burst of clients is given back once the burst is
// over. (An HTTP/2 stream's exchange is allocated on its own: exchange_stream_open.)
#include <algorithm>
#include <new>
#include <string>

#include "lb/data/exchange_impl.h"
#include "lb/http/container_of.h"

namespace {

constexpr size_t kReqHeadReserve = 1024;
constexpr size_t kOutReserve = 512;
constexpr size_t kSpareClients = 64;
constexpr uint64_t kSpareTrimMs = 1000;
// A spare keeps a string's buffer up to this size; a larger one (a big head, an admin answer) is
// freed, so the spares' memory stays bounded by the reserves above whatever the last clients sent.
constexpr size_t kSpareKeepMax = 4096;

}  // namespace

// Takes the memory of a closed client (its on_close ran, or its set-up failed) for the next accept:
// every field starts afresh, as for a new ClientConn, while the read buffer and the strings' and the
// head's capacity are kept (up to kSpareKeepMax); freed when the worker already keeps enough.
void exchange_recycle(Worker* w, ClientConn* c) {
  if (w->spare_clients.size() >= kSpareClients) {
    delete c;
    return;
  }
  auto keep = [](std::string& s) {
    std::string kept;
    if (s.capacity() <= kSpareKeepMax) kept.swap(s);
    kept.clear();
    return kept;
  };
  char* in = c->conn.in;
  uint32_t in_cap = c->conn.in_cap;
  c->conn.in = nullptr;
  HttpHead head;
  if (c->conn.head.buf.capacity() <= kSpareKeepMax) head = std::move(c->conn.head);
  std::string req_head = keep(c->req_head), out = keep(c->out);
  c->~ClientConn();
  new (c) ClientConn();
  c->conn.in = in;
  c->conn.in_cap = in_cap;
  c->conn.head = std::move(head);
  c->req_head = std::move(req_head);
  c->out = std::move(out);
  if (c->req_head.capacity() < kReqHeadReserve) c->req_head.reserve(kReqHeadReserve);
  if (c->out.capacity() < kOutReserve) c->out.reserve(kOutReserve);
  w->spare_clients.push_back(c);
}

HttpConn* exchange_accept(Worker* w, bool admin_listener) {
  ClientConn* c;
  if (!w->spare_clients.empty()) {
    c = w->spare_clients.back();
    w->spare_clients.pop_back();
    w->spare_low = std::min(w->spare_low, w->spare_clients.size());
  } else {
    c = new ClientConn();
    c->req_head.reserve(kReqHeadReserve);  // one allocation per connection, not one per doubling
    c->out.reserve(kOutReserve);
  }
  c->w = w;
  c->admin_listener = admin_listener;
  if (http_conn_init(w->loop, &c->conn, HTTP_REQUEST, &kClientHandlers, kReadBuffer) != 0) {
    exchange_recycle(w, c);
    return nullptr;
  }
  w->counters.connections++;
  w->open_conns++;
  if (!admin_listener) spread_opened(w);
  worker_report_soon(w);
  return &c->conn;
}

void exchange_free_spares(Worker* w) {
  for (ClientConn* c : w->spare_clients) delete c;
  w->spare_clients.clear();
}

// Frees the spares that no accept needed since the last trim (the fewest held meanwhile), the
// longest kept first (they are at the front: accepts take from the back).
void exchange_spares_trim(Worker* w, uint64_t now) {
  if (now < w->spare_trim_at) return;
  w->spare_trim_at = now + kSpareTrimMs;
  size_t unused = std::min(w->spare_low, w->spare_clients.size());
  for (size_t i = 0; i < unused; i++) delete w->spare_clients[i];
  w->spare_clients.erase(w->spare_clients.begin(), w->spare_clients.begin() + unused);
  w->spare_low = w->spare_clients.size();
}

void exchange_handed_off(HttpConn* hc) { container_of(hc, &ClientConn::conn)->handed_off = true; }
