// mailbox: messages from any thread to one libuv loop. The only way the control loop and the
// data-plane workers talk to each other (lb/plane.h says what they say).
//
// Any thread may post; the owning loop receives every message in order of posting, in batches, from
// its uv_async callback: never on the poster's stack, so a message is a completion that runs at a
// safe point (the receiving loop is between callbacks). A mailbox is opened and closed on its owning
// loop's thread. Once closed, posts are refused (mailbox_post returns false and drops the message),
// so a sender never touches a closed handle; messages still queued at the close are dropped.
//
// The mutex is held only to move a message in or a batch out and to wake the loop: it is on the
// message path, never on the request path (a worker posts one batched report per interval, not one
// message per request).
#pragma once

#include <mutex>
#include <utility>
#include <vector>

#include <uv.h>

template <typename Msg>
struct Mailbox {
  uv_async_t async;  // owned by the receiving loop
  std::mutex mu;
  std::vector<Msg> queue;  // under mu
  bool open = false;       // under mu
  void* owner = nullptr;
  // Runs on the owning loop with the messages posted since the last batch, in order.
  void (*on_messages)(Mailbox* m, std::vector<Msg>* batch) = nullptr;
  void (*on_closed)(Mailbox* m) = nullptr;  // optional, after the handle is closed
  std::vector<Msg> batch;  // the receiving loop's copy; swapped with queue under mu
};

template <typename Msg>
void mailbox_on_async(uv_async_t* a) {
  auto* m = static_cast<Mailbox<Msg>*>(a->data);
  {
    std::lock_guard<std::mutex> lock(m->mu);
    m->batch.swap(m->queue);
  }
  if (!m->batch.empty()) m->on_messages(m, &m->batch);
  m->batch.clear();
}

// Opens m on loop (the owning loop's thread only). Returns 0 or a libuv code.
template <typename Msg>
int mailbox_open(Mailbox<Msg>* m, uv_loop_t* loop) {
  int rc = uv_async_init(loop, &m->async, mailbox_on_async<Msg>);
  if (rc != 0) return rc;
  m->async.data = m;
  std::lock_guard<std::mutex> lock(m->mu);
  m->open = true;
  return 0;
}

// Posts msg from any thread. Returns false (msg dropped) once the mailbox is closed or before it
// was opened.
template <typename Msg>
bool mailbox_post(Mailbox<Msg>* m, Msg&& msg) {
  std::lock_guard<std::mutex> lock(m->mu);
  if (!m->open) return false;
  m->queue.push_back(std::move(msg));
  uv_async_send(&m->async);
  return true;
}

// Keeps the loop from waiting on the mailbox alone (a worker's loop ends when its listeners and
// connections are gone even though its mailbox is open).
template <typename Msg>
void mailbox_unref(Mailbox<Msg>* m) {
  uv_unref(reinterpret_cast<uv_handle_t*>(&m->async));
}

// Closes m (the owning loop's thread only): later posts are refused, queued messages dropped.
template <typename Msg>
void mailbox_close(Mailbox<Msg>* m) {
  {
    std::lock_guard<std::mutex> lock(m->mu);
    if (!m->open) return;
    m->open = false;
    m->queue.clear();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&m->async), [](uv_handle_t* h) {
    auto* mb = static_cast<Mailbox<Msg>*>(h->data);
    if (mb->on_closed) mb->on_closed(mb);
  });
}
