// Snapshot publication (lb/plane.h over lb/mailbox.h) between threads, as the control plane and the
// data-plane workers do it: the test's thread is the publisher; 4 receiver threads each run their
// own libuv loop with a Mailbox<ToWorker> on it, as a worker does.
//
// The publisher builds Snapshots whole (a ring from ring_build over a varying member set in every
// ring mode, or the previous ring again with new member states as a health change does; members and
// skip the size of the ring; gen increasing by one) and posts each one to every receiver, in bursts
// so that batches of several arrive. Each receiver checks every snapshot it installs: it is whole
// (ring_size == members.size() == skip.size(), every member's ring id and name those of
// ring_member(ring, i), its uid made for this gen, skip matching its state), and its gen follows the
// previous one (in order, none lost); then it routes keys by it with ring_lookup.
//
// Freeing: the publisher keeps only a std::weak_ptr to each snapshot it published. While the run
// goes on, every snapshot older than the oldest one a receiver has installed must already be freed
// (a retired snapshot is freed once no worker holds it, on whichever thread lets go last); at the
// end every snapshot and every ring is. Stopping: a stop message makes each receiver drop its
// snapshot and close its mailbox while the publisher keeps posting, until posts are refused; every
// loop then closes with uv_loop_close == 0, a post after mailbox_close returns false, and the
// messages refused or dropped at the close kept no snapshot alive. Run under ASan (make test-asan) a use after free or a leak of a
// snapshot fails here too.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <uv.h>

#include "lb/http/container_of.h"
#include "lb/mailbox.h"
#include "lb/plane.h"
#include "ring/ring.h"

namespace {

constexpr int kReceivers = 4;
constexpr uint64_t kSnapshots = 5000;
constexpr uint32_t kMaxId = 12;    // member ring ids are drawn from 1..kMaxId
constexpr uint64_t kWindow = 32;   // the publisher waits while a receiver is this many behind
constexpr int kKeys = 32;          // keys each receiver routes by every snapshot it installs

// A member's uid says which gen built it: a member list left over from another gen shows.
uint64_t member_uid(uint64_t gen, uint32_t ring_id) { return gen * 1000 + ring_id; }

struct Receiver {
  uv_loop_t loop;
  Mailbox<ToWorker> mailbox;
  std::thread thread;
  std::atomic<bool> ready{false};
  std::atomic<uint64_t> installed_gen{0};  // stored after the previous snapshot was let go
  int open_rc = -1;
  int loop_close_rc = -1;
  // The receiver thread's own, read by the test's thread only after the join.
  SnapshotPtr current;
  uint64_t installs = 0;
  uint64_t lookups = 0;
  uint64_t routed = 0;  // lookups that found a usable member
  bool stopped = false;
  std::vector<std::string> keys;
};

// Checks that s is whole and follows the snapshot rx holds, then installs it and routes by it.
void receiver_install(Receiver* rx, SnapshotPtr s) {
  ASSERT_NE(s, nullptr);
  ASSERT_NE(s->ring, nullptr);
  const Ring* ring = s->ring.get();
  ASSERT_EQ(ring_size(ring), s->members.size()) << "gen " << s->gen;
  ASSERT_EQ(s->skip.size(), s->members.size()) << "gen " << s->gen;
  for (size_t i = 0; i < s->members.size(); i++) {
    const SnapMember& m = s->members[i];
    ASSERT_EQ(m.ring_id, ring_member(ring, i).id) << "gen " << s->gen << " index " << i;
    ASSERT_EQ(m.name, ring_member(ring, i).name) << "gen " << s->gen << " index " << i;
    ASSERT_EQ(m.uid, member_uid(s->gen, m.ring_id)) << "gen " << s->gen << " index " << i;
    ASSERT_EQ(s->skip[i], m.state == MemberState::usable ? 0 : 1) << "gen " << s->gen;
  }
  uint64_t previous = rx->current ? rx->current->gen : 0;
  ASSERT_EQ(s->gen, previous + 1) << "snapshots out of order or lost";

  rx->current = std::move(s);  // lets the previous snapshot go: freed here unless another holds it
  rx->installs++;
  rx->installed_gen.store(rx->current->gen, std::memory_order_release);

  const Snapshot& cur = *rx->current;
  bool any_usable = std::find(cur.skip.begin(), cur.skip.end(), 0) != cur.skip.end();
  for (const std::string& key : rx->keys) {
    int idx = ring_lookup(cur.ring.get(), ring_position(cur.ring.get(), key), cur.skip.data());
    rx->lookups++;
    if (!any_usable) {
      EXPECT_EQ(idx, -1) << "gen " << cur.gen;
      continue;
    }
    ASSERT_GE(idx, 0) << "gen " << cur.gen;
    ASSERT_LT(static_cast<size_t>(idx), cur.members.size());
    EXPECT_EQ(cur.members[idx].state, MemberState::usable) << "gen " << cur.gen;
    rx->routed++;
  }
}

void on_messages(Mailbox<ToWorker>* m, std::vector<ToWorker>* batch) {
  Receiver* rx = container_of(m, &Receiver::mailbox);
  for (ToWorker& msg : *batch) {
    if (rx->stopped) return;  // what came after the stop is dropped with the batch
    if (msg.kind == ToWorker::Kind::stop) {
      rx->stopped = true;
      rx->current.reset();
      mailbox_close(&rx->mailbox);  // the loop ends once the async handle is closed
      return;
    }
    ASSERT_EQ(msg.kind, ToWorker::Kind::snapshot);
    receiver_install(rx, std::move(msg.snapshot));
  }
}

void receiver_run(Receiver* rx) {
  EXPECT_EQ(uv_loop_init(&rx->loop), 0);
  rx->mailbox.on_messages = on_messages;
  rx->open_rc = mailbox_open(&rx->mailbox, &rx->loop);
  rx->ready.store(true, std::memory_order_release);
  if (rx->open_rc == 0) uv_run(&rx->loop, UV_RUN_DEFAULT);
  rx->loop_close_rc = uv_loop_close(&rx->loop);
}

// Snapshot gen: a new ring over a random member set (any of 1..kMaxId, possibly none) in one of
// the three modes, or, every third gen, the previous ring with new member states (a health change).
SnapshotPtr snapshot_build(uint64_t gen, const std::shared_ptr<const Ring>& previous_ring,
                           std::mt19937_64* rng) {
  auto s = std::make_shared<Snapshot>();
  s->gen = gen;
  if (previous_ring && gen % 3 == 0) {
    s->ring = previous_ring;
  } else {
    RingConfig cfg;
    cfg.mode = gen % 3 == 1 ? RingMode::ketama : (gen % 3 == 2 ? RingMode::slots : RingMode::maglev);
    cfg.table_size = 251;  // maglev: a prime above kMaxId, small enough to build fast
    std::vector<RingMember> members;
    for (uint32_t id = 1; id <= kMaxId; id++)
      if ((*rng)() % 10 < 6) members.push_back({id, "r" + std::to_string(id)});
    std::shuffle(members.begin(), members.end(), *rng);  // ring index order is the order given
    std::string err;
    RingPtr ring = ring_build(cfg, members, &err);
    EXPECT_NE(ring, nullptr) << err;
    if (!ring) return nullptr;
    s->ring = std::shared_ptr<const Ring>(std::move(ring));
  }
  size_t n = ring_size(s->ring.get());
  s->members.resize(n);
  s->skip.resize(n);
  for (size_t i = 0; i < n; i++) {
    SnapMember& m = s->members[i];
    const RingMember& rm = ring_member(s->ring.get(), i);
    m.ring_id = rm.id;
    m.name = rm.name;
    m.uid = member_uid(gen, rm.id);
    uint64_t roll = (*rng)() % 10;
    m.state = roll < 7 ? MemberState::usable : (roll < 9 ? MemberState::starting : MemberState::dead);
    s->skip[i] = m.state == MemberState::usable ? 0 : 1;
  }
  return s;
}

ToWorker snapshot_message(const SnapshotPtr& s) {
  ToWorker msg;
  msg.kind = ToWorker::Kind::snapshot;
  msg.snapshot = s;
  return msg;
}

uint64_t min_installed(Receiver* rx) {
  uint64_t low = UINT64_MAX;
  for (int i = 0; i < kReceivers; i++)
    low = std::min(low, rx[i].installed_gen.load(std::memory_order_acquire));
  return low;
}

TEST(SnapshotPublication, WorkersSeeOnlyWholeSnapshotsAndRetiredOnesAreFreed) {
  Receiver rx[kReceivers];
  for (int i = 0; i < kReceivers; i++) {
    for (int k = 0; k < kKeys; k++) rx[i].keys.push_back(std::to_string(100000 + i * 7919 + k * 104729));
    rx[i].thread = std::thread(receiver_run, &rx[i]);
  }
  auto until = [](auto done, double seconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
  };
  for (int i = 0; i < kReceivers; i++) {
    ASSERT_TRUE(until([&] { return rx[i].ready.load(std::memory_order_acquire); }, 10));
    ASSERT_EQ(rx[i].open_rc, 0);
  }

  std::mt19937_64 rng(12);
  std::vector<std::weak_ptr<const Snapshot>> published;  // index gen - 1
  std::vector<std::weak_ptr<const Ring>> rings;
  std::shared_ptr<const Ring> last_ring;
  uint64_t checked_below = 1;  // every gen below this was seen freed
  uint64_t gen = 0;
  while (gen < kSnapshots) {
    // A burst of 1-8 publications, then a check of what is retired.
    uint64_t burst = 1 + rng() % 8;
    for (uint64_t b = 0; b < burst && gen < kSnapshots; b++) {
      ASSERT_TRUE(until([&] { return gen - min_installed(rx) < kWindow; }, 30))
          << "a receiver stopped installing snapshots";
      gen++;
      SnapshotPtr s = snapshot_build(gen, last_ring, &rng);
      ASSERT_NE(s, nullptr);
      if (s->ring != last_ring) rings.push_back(s->ring);
      last_ring = s->ring;
      published.push_back(s);
      for (int i = 0; i < kReceivers; i++) ASSERT_TRUE(mailbox_post(&rx[i].mailbox, snapshot_message(s)));
      // s goes out of scope: from here on only the receivers (and their queues) hold it.
    }
    // Every receiver installed gen `low` or later, so no one holds an older snapshot.
    uint64_t low = min_installed(rx);
    for (; checked_below < low; checked_below++)
      ASSERT_TRUE(published[checked_below - 1].expired())
          << "snapshot " << checked_below << " retired by every receiver but not freed";
    if (rng() % 4 == 0) std::this_thread::yield();
  }
  ASSERT_TRUE(until([&] { return min_installed(rx) == kSnapshots; }, 30));
  last_ring.reset();

  // Stop every receiver while the publisher keeps posting: posts are refused once it closed; what
  // was queued at the close is dropped (and freed).
  SnapshotPtr late = snapshot_build(kSnapshots + 1, nullptr, &rng);
  ASSERT_NE(late, nullptr);
  std::weak_ptr<const Snapshot> late_weak = late;
  for (int i = 0; i < kReceivers; i++) {
    ToWorker stop;
    stop.kind = ToWorker::Kind::stop;
    ASSERT_TRUE(mailbox_post(&rx[i].mailbox, std::move(stop)));
    // Bounded: 30 s of posts 100 us apart.
    int posts = 0;
    while (mailbox_post(&rx[i].mailbox, snapshot_message(late))) {
      ASSERT_LT(++posts, 300000) << "receiver " << i << " never closed its mailbox";
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  for (int i = 0; i < kReceivers; i++) rx[i].thread.join();

  for (int i = 0; i < kReceivers; i++) {
    SCOPED_TRACE("receiver " + std::to_string(i));
    EXPECT_EQ(rx[i].loop_close_rc, 0);
    EXPECT_EQ(rx[i].installs, kSnapshots);
    EXPECT_EQ(rx[i].current, nullptr);
    EXPECT_EQ(rx[i].lookups, kSnapshots * kKeys);
    EXPECT_GT(rx[i].routed, 0u);
    // After mailbox_close a post is refused (and its snapshot is not kept: checked below).
    EXPECT_FALSE(mailbox_post(&rx[i].mailbox, snapshot_message(late)));
  }
  late.reset();
  EXPECT_TRUE(late_weak.expired()) << "a message dropped at the close kept its snapshot";
  for (uint64_t g = 1; g <= kSnapshots; g++)
    EXPECT_TRUE(published[g - 1].expired()) << "snapshot " << g << " was never freed";
  for (size_t r = 0; r < rings.size(); r++) EXPECT_TRUE(rings[r].expired()) << "ring " << r;
}

}  // namespace
