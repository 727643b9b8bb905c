// container_of: from a member embedded by value back to the struct that embeds it, checked by type:
// `ClientConn* c = container_of(hc, &ClientConn::conn)` compiles only when hc points to the type of
// ClientConn::conn. Owners recover themselves this way from the HttpConn or libuv handle they embed
// (libuv's and the Linux kernel's idiom), wherever the member sits in the struct; a reinterpret_cast
// of a first member breaks silently the day a field is added above it.
#pragma once

#include <cstddef>

template <typename Outer, typename Inner>
inline Outer* container_of(Inner* inner, Inner Outer::*member) {
  // The member's offset, taken on suitably aligned storage of Outer's size: an address computation
  // only (nothing is read), and constant-folded by the compiler.
  alignas(Outer) static const unsigned char storage[sizeof(Outer)] = {};
  const Outer* probe = reinterpret_cast<const Outer*>(storage);
  std::ptrdiff_t offset = reinterpret_cast<const unsigned char*>(&(probe->*member)) - storage;
  return reinterpret_cast<Outer*>(reinterpret_cast<unsigned char*>(inner) - offset);
}
