#include "lb/log.h"

#include <cstdio>
#include <ctime>
#include <sys/time.h>

static LogLevel g_level = LogLevel::info;

void log_set_level(LogLevel level) { g_level = level; }

void log_msg(LogLevel level, const char* fmt, ...) {
  if (level < g_level) return;
  static const char* names[] = {"debug", "info", "warn", "error"};
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char line[2048];
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   static_cast<int>(tv.tv_usec / 1000), names[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s\n", line);  // one write per line; stderr is unbuffered
}
