// One logging call for the whole daemon: one line per event on stderr, with a UTC timestamp and a level.
// Any thread may log; each line is one write(2) of at most 2 KiB, so lines never interleave mid-line
// (stderr as a pipe takes writes up to PIPE_BUF whole). The level may change at run time (SIGHUP).
#pragma once

#include <cstdarg>
#include <cstddef>
#include <string>

enum class LogLevel { debug, info, warn, error };

void log_set_level(LogLevel level);
// Parses debug, info, warn or error; false for anything else.
bool log_parse_level(const std::string& s, LogLevel* out);
void log_msg(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// One line of a replica process's own output (stdout or stderr), as "replica <name>: <text>" (the
// prefix is not doubled when text starts with it already, as the replica's own lines do): no time
// and no level, so it cannot be mistaken for a line of the load balancer's own. Control bytes in
// text become '?'; text longer than a line holds is cut. Written unless the level is error.
void log_replica_line(const std::string& name, const char* text, size_t len);

#define LOG_DEBUG(...) log_msg(LogLevel::debug, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LogLevel::info, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LogLevel::warn, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LogLevel::error, __VA_ARGS__)
