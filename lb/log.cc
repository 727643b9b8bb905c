#include "lb/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace {

// Read by every thread that logs, written by the control loop on a reload.
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};

constexpr size_t kLineMax = 2048;

// Writes "<time> " into line (at least 32 bytes); returns its length.
int stamp(char* line, size_t cap) {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  return snprintf(line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(tv.tv_usec / 1000));
}

// One write of the whole line (a short write to a full pipe or a signal is retried for the rest).
void write_line(const char* line, size_t len) {
  while (len > 0) {
    ssize_t n = write(2, line, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    line += n;
    len -= static_cast<size_t>(n);
  }
}

}  // namespace

void log_set_level(LogLevel level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool log_parse_level(const std::string& s, LogLevel* out) {
  if (s == "debug") *out = LogLevel::debug;
  else if (s == "info") *out = LogLevel::info;
  else if (s == "warn") *out = LogLevel::warn;
  else if (s == "error") *out = LogLevel::error;
  else return false;
  return true;
}

void log_msg(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  static const char* names[] = {"debug", "info", "warn", "error"};
  char line[kLineMax];
  int n = stamp(line, sizeof line);
  n += snprintf(line + n, sizeof line - n, "%s ", names[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : std::min<size_t>(m, sizeof line - n - 2));
  line[len++] = '\n';
  write_line(line, len);
}

void log_replica_line(const std::string& name, const char* text, size_t len) {
  if (g_level.load(std::memory_order_relaxed) > static_cast<int>(LogLevel::warn)) return;
  char line[kLineMax];
  int n = snprintf(line, sizeof line, "replica %.64s: ", name.c_str());
  size_t at = static_cast<size_t>(n);
  if (len >= at && memcmp(text, line, at) == 0) at = 0;  // the replica said who it is already
  for (size_t i = 0; i < len && at < sizeof line - 1; i++) {
    unsigned char ch = static_cast<unsigned char>(text[i]);
    line[at++] = ch < 0x20 || ch == 0x7f ? '?' : static_cast<char>(ch);
  }
  line[at++] = '\n';
  write_line(line, at);
}
