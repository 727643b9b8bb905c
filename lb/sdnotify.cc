#include "lb/sdnotify.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

bool sdnotify(const char* state) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (!path || !path[0]) return false;
  size_t len = strlen(path);
  struct sockaddr_un addr {};
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  socklen_t alen = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + len);
  ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), alen);
  close(fd);
  return n == static_cast<ssize_t>(strlen(state));
}

unsigned long long sdnotify_watchdog_usec() {
  const char* usec = getenv("WATCHDOG_USEC");
  if (!usec) return 0;
  const char* pid = getenv("WATCHDOG_PID");
  if (pid && strtoll(pid, nullptr, 10) != getpid()) return 0;
  return strtoull(usec, nullptr, 10);
}
