// One logging call for the whole daemon: one line per event on stderr, with a UTC timestamp and a level.
#pragma once

#include <cstdarg>

enum class LogLevel { debug, info, warn, error };

void log_set_level(LogLevel level);
void log_msg(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_DEBUG(...) log_msg(LogLevel::debug, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LogLevel::info, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LogLevel::warn, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LogLevel::error, __VA_ARGS__)
