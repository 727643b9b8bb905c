#include "lb/control/snapshot.h"

MemberState snapshot_member_state(const Replica* r) {
  switch (r->state) {
    case ReplicaState::healthy:
      return r->addr_ok ? MemberState::usable : MemberState::starting;
    case ReplicaState::dead:
      return MemberState::dead;
    case ReplicaState::starting:
    case ReplicaState::draining:
      return MemberState::starting;
  }
  return MemberState::starting;
}

SnapshotPtr snapshot_build(const Registry* reg) {
  auto s = std::make_shared<Snapshot>();
  s->gen = reg->routing_gen;
  s->ring = reg->ring;
  size_t n = reg->ring_members.size();
  s->members.resize(n);
  s->skip.resize(n);
  for (size_t i = 0; i < n; i++) {
    const Replica* r = reg->ring_members[i];
    SnapMember& m = s->members[i];
    m.uid = r->uid;
    m.ring_id = r->ring_id;
    m.weight = r->weight;
    m.state = snapshot_member_state(r);
    m.addr = r->addr;
    m.name = r->name;
    m.replaces_uid = r->replaces_uid;
    m.usable_since_ms = r->usable_since_ms;
    s->skip[i] = m.state == MemberState::usable ? 0 : 1;
  }
  return s;
}
