#include "lb/data/spread.h"

#include "lb/data/exchange.h"
#include "lb/data/worker_state.h"

bool spread_should_hand_off(Worker* w) {
  WorkerGroup* g = w->group;
  if (g == nullptr || !g->complete.load(std::memory_order_acquire)) return false;
  uint32_t n = static_cast<uint32_t>(g->members.size());
  uint32_t mine = g->conns[w->index].load(std::memory_order_relaxed);
  uint32_t least = w->index, least_conns = mine;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = g->conns[i].load(std::memory_order_relaxed);
    if (c < least_conns) {
      least = i;
      least_conns = c;
    }
  }
  // mine counts this client already (exchange_accept ran): hand it on when, without it, this
  // worker holds 2 or more more than the least loaded one.
  if (mine < least_conns + 3) return false;
  // Counted at the target from now on, so the next clients see it on its way there.
  g->conns[least].fetch_add(1, std::memory_order_relaxed);
  w->hand_to = least;
  return true;
}

bool spread_hand_off(Worker* w, HttpConn* c, int fd, bool idle) {
  WorkerGroup* g = w->group;
  uint32_t to = w->hand_to;
  bool posted = false;
  if (fd >= 0) {
    ToWorker msg;
    msg.kind = ToWorker::Kind::adopt;
    msg.client = std::make_shared<HandedClient>(fd, idle);
    // A stopping target refuses the post: the message is dropped, the duplicate closed with it.
    posted = worker_post(g->members[to], std::move(msg));
  }
  if (!posted) {  // not on its way there after all: served here
    g->conns[to].fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  // Accepted here (exchange_accept counted it) and closed here at once: from now on it is the
  // target's alone. Uncounted here now, not at its close callback: a burst of accepts must not see
  // this worker busier than it is and hand on too many.
  w->counters.connections--;
  w->counters.handoffs++;
  g->conns[w->index].fetch_sub(1, std::memory_order_relaxed);
  exchange_handed_off(c);
  return true;
}

void spread_adopt(Worker* w, ToWorker& msg) {
  // On its way no more: exchange_accept counts it as this worker's own, if it is served.
  w->group->conns[w->index].fetch_sub(1, std::memory_order_relaxed);
  bool idle = msg.client->idle;
  http_server_adopt(&w->server, msg.client->take(), idle);
}

void spread_opened(Worker* w) {
  if (w->group != nullptr) w->group->conns[w->index].fetch_add(1, std::memory_order_relaxed);
}

void spread_closed(Worker* w) {
  if (w->group != nullptr) w->group->conns[w->index].fetch_sub(1, std::memory_order_relaxed);
}
