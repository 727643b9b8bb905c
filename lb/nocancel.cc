// nocancel: the daemon's socket system calls without glibc's thread-cancellation bookkeeping.
//
// Once a process has a second thread, glibc makes read, write, writev, accept4 and connect
// cancellation points: each call switches the thread to asynchronous cancellation before the
// system call and back after it (__pthread_enable_asynccancel, __pthread_disable_asynccancel).
// That is about 30 user-space instructions per call and 4 to 6 calls per proxied request: measured
// with callgrind, 1.2-1.7% of the instructions of a request at `--workers 2` that one worker (one
// thread) does not pay (bench/RESULTS.md, "Every core"). ringlb never cancels a thread, nor does
// any library it uses (libuv closes descriptors with syscall(SYS_close) for the same reason:
// uv__close_nocancel), so the bookkeeping buys nothing.
//
// These definitions are linked into the daemon's executable only. An executable's symbols come
// first in the dynamic linker's lookup, so libuv's calls (and any other library's) reach them
// instead of glibc's wrappers; glibc's own internal calls do not go through these names. Each one
// is the system call alone, with glibc's contract: the result, or -1 and errno. Not in sanitized
// builds (meson.build), whose runtime intercepts these calls to check their buffers.
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

extern "C" {

ssize_t read(int fd, void* buf, size_t count) { return syscall(SYS_read, fd, buf, count); }

ssize_t write(int fd, const void* buf, size_t count) { return syscall(SYS_write, fd, buf, count); }

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  return syscall(SYS_writev, fd, iov, iovcnt);
}

int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
  return static_cast<int>(syscall(SYS_accept4, fd, addr, len, flags));
}

int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  return static_cast<int>(syscall(SYS_connect, fd, addr, len));
}

}  // extern "C"
