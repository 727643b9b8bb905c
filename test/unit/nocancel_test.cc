// lb/nocancel.cc: the daemon's socket calls without glibc's cancellation bookkeeping keep glibc's
// contract (the result, or -1 and errno), and they are the ones the process's libraries reach.
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>
#include <uv.h>

namespace {

struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() { EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0); }
  ~Pipe() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
};

TEST(Nocancel, LibrariesReachTheDaemonsDefinitions) {
  // libuv (linked here, as in the daemon) calls these through the dynamic linker: the executable's
  // definitions come first.
  (void)uv_version();
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "read"), reinterpret_cast<void*>(&read));
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "write"), reinterpret_cast<void*>(&write));
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "writev"), reinterpret_cast<void*>(&writev));
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "accept4"), reinterpret_cast<void*>(&accept4));
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "connect"), reinterpret_cast<void*>(&connect));
  // ...and they are not glibc's.
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(libc, nullptr);
  EXPECT_NE(dlsym(libc, "read"), reinterpret_cast<void*>(&read));
  dlclose(libc);
}

TEST(Nocancel, ReadWriteWritevCarryBytes) {
  Pipe p;
  ASSERT_EQ(write(p.fds[1], "abc", 3), 3);
  char a[] = "de", b[] = "fgh";
  struct iovec iov[2] = {{a, 2}, {b, 3}};
  ASSERT_EQ(writev(p.fds[1], iov, 2), 5);
  char got[16] = {};
  ASSERT_EQ(read(p.fds[0], got, sizeof got), 8);
  EXPECT_STREQ(got, "abcdefgh");
}

TEST(Nocancel, FailuresSetErrno) {
  char c;
  errno = 0;
  EXPECT_EQ(read(-1, &c, 1), -1);
  EXPECT_EQ(errno, EBADF);

  Pipe p;
  ASSERT_EQ(fcntl(p.fds[0], F_SETFL, O_NONBLOCK), 0);
  errno = 0;
  EXPECT_EQ(read(p.fds[0], &c, 1), -1);  // nothing written yet
  EXPECT_EQ(errno, EAGAIN);

  signal(SIGPIPE, SIG_IGN);
  close(p.fds[0]);
  p.fds[0] = -1;
  errno = 0;
  EXPECT_EQ(write(p.fds[1], "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  struct iovec iov = {&c, 1};
  errno = 0;
  EXPECT_EQ(writev(p.fds[1], &iov, 1), -1);
  EXPECT_EQ(errno, EPIPE);

  errno = 0;
  EXPECT_EQ(accept4(p.fds[1], nullptr, nullptr, SOCK_CLOEXEC), -1);
  EXPECT_EQ(errno, ENOTSOCK);
}

TEST(Nocancel, AcceptAndConnectOnLoopback) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(ls, 0);
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ASSERT_EQ(listen(ls, 4), 0);

  int cs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(cs, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  struct sockaddr_in peer = {};
  socklen_t plen = sizeof peer;
  int as = accept4(ls, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC | SOCK_NONBLOCK);
  ASSERT_GE(as, 0);
  EXPECT_EQ(plen, sizeof peer);
  EXPECT_EQ(peer.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  EXPECT_NE(fcntl(as, F_GETFL) & O_NONBLOCK, 0);  // the flags reached the kernel
  ASSERT_EQ(write(cs, "ping", 4), 4);
  char got[4];
  ASSERT_EQ(read(as, got, 4), 4);
  EXPECT_EQ(memcmp(got, "ping", 4), 0);
  close(as);
  close(cs);

  // Refused: the port of a listener that is gone.
  close(ls);
  int rs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  errno = 0;
  EXPECT_EQ(connect(rs, reinterpret_cast<sockaddr*>(&addr), sizeof addr), -1);
  EXPECT_EQ(errno, ECONNREFUSED);
  close(rs);
}

}  // namespace
