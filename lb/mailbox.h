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
//
// The wake-up is an eventfd the loop polls, not a uv_async_t: libuv 1.44's async handle makes the
// receiving loop spin (997 rounds, then sched_yield, again and again) while a sender is between
// marking the handle pending and finishing its write, so a worker preempted in uv_async_send held
// the control loop busy-waiting; with several workers posting to the control loop that was the
// largest cost of a second worker (bench/RESULTS.md, "Every core"). An eventfd's counter needs no
// such handshake: a post writes to it when the queue was empty, the loop reads it before it takes
// the queue, so a message posted after that read wakes the loop again.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include <uv.h>

template <typename Msg>
struct Mailbox {
  uv_poll_t poll;     // the owning loop's watch on wake_fd
  int wake_fd = -1;   // an eventfd, readable once a message waits; closed with the handle
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
void mailbox_on_wake(uv_poll_t* p, int status, int) {
  auto* m = static_cast<Mailbox<Msg>*>(p->data);
  if (status == 0) {
    uint64_t count;
    ssize_t n = read(m->wake_fd, &count, sizeof count);  // rearms: posts from now on wake again
    (void)n;  // EAGAIN: nothing more was posted since the last read; the queue is taken anyway
  }
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
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return uv_translate_sys_error(errno);
  int rc = uv_poll_init(loop, &m->poll, fd);
  if (rc == 0) rc = uv_poll_start(&m->poll, UV_READABLE, mailbox_on_wake<Msg>);
  if (rc != 0) {
    close(fd);  // a poll handle that was initialised is left to the loop's teardown: it holds nothing
    return rc;
  }
  m->poll.data = m;
  m->wake_fd = fd;
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
  bool wake = m->queue.empty();  // otherwise a wake-up is on its way, or the loop is taking them
  m->queue.push_back(std::move(msg));
  if (wake) {
    // Under mu: the descriptor is open while the mailbox is. Cannot fail short of a counter at
    // 2^64 - 1 (EAGAIN), which one increment per batch does not reach.
    uint64_t one = 1;
    ssize_t n = write(m->wake_fd, &one, sizeof one);
    (void)n;
  }
  return true;
}

// Keeps the loop from waiting on the mailbox alone (a worker's loop ends when its listeners and
// connections are gone even though its mailbox is open).
template <typename Msg>
void mailbox_unref(Mailbox<Msg>* m) {
  uv_unref(reinterpret_cast<uv_handle_t*>(&m->poll));
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
  uv_close(reinterpret_cast<uv_handle_t*>(&m->poll), [](uv_handle_t* h) {
    auto* mb = static_cast<Mailbox<Msg>*>(h->data);
    close(mb->wake_fd);
    mb->wake_fd = -1;
    if (mb->on_closed) mb->on_closed(mb);
  });
}
