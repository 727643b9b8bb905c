#include "lb/access_log.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "lb/http/container_of.h"
#include "lb/log.h"

namespace {

constexpr uint64_t kFailLogEveryMs = 10000;
// A pipe that stays full this long (its reader stopped) loses the rest of the batch: the
// threadpool thread must come back, and the lines are counted as dropped. Short: the threadpool
// is shared with the Docker API calls (heals, /add), which a stalled log reader must not delay.
constexpr int kPipeWaitMs = 100;

const char kHex[] = "0123456789abcdef";

// The line is written through a cursor into room made beforehand (access_log_format reserves the
// most it can take), one memcpy per piece: a std::string append per piece cost about as much as
// the rest of the proxy's request path.
template <size_t N>
inline void lit(char*& p, const char (&s)[N]) {
  memcpy(p, s, N - 1);
  p += N - 1;
}

inline void put(char*& p, std::string_view s) {
  memcpy(p, s.data(), s.size());
  p += s.size();
}

void put_u64(char*& p, uint64_t v) {
  char buf[20];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) *p++ = buf[--n];
}

// duration in ms with three decimals ("0.412").
void put_ms(char*& p, uint64_t us) {
  put_u64(p, us / 1000);
  *p++ = '.';
  *p++ = static_cast<char>('0' + us / 100 % 10);
  *p++ = static_cast<char>('0' + us / 10 % 10);
  *p++ = static_cast<char>('0' + us % 10);
}

// True for the bytes both formats write as they are: printable ASCII but '"' and '\\'.
inline bool plain(unsigned char ch) { return ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\'; }

// The length of the run of plain bytes at s[i] (copied in one piece: the usual field is all plain).
size_t plain_run(std::string_view s, size_t i) {
  size_t j = i;
  while (j < s.size() && plain(static_cast<unsigned char>(s[j]))) j++;
  return j - i;
}

// s for the text format: plain bytes as they are, everything else as \xHH, so a line is one line
// of printable ASCII and a field in quotes cannot end early. At most 4 bytes per byte of s.
void text_escape(char*& p, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t run = plain_run(s, i);
    put(p, s.substr(i, run));
    i += run;
    if (i == s.size()) break;
    unsigned char ch = static_cast<unsigned char>(s[i++]);
    *p++ = '\\';
    *p++ = 'x';
    *p++ = kHex[ch >> 4];
    *p++ = kHex[ch & 15];
  }
}

// Or "-" when s is empty.
void text_field(char*& p, std::string_view s) {
  if (s.empty()) *p++ = '-';
  else text_escape(p, s);
}

// The length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not one
// (overlong forms, surrogates and code points past U+10FFFF are invalid, as RFC 3629 says).
size_t utf8_valid(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t left = s.size() - i;
  auto cont = [&](size_t k) { return (b(k) & 0xc0) == 0x80; };
  if (c >= 0xc2 && c <= 0xdf) return left >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xe0 && b(i + 1) < 0xa0) return 0;   // overlong
    if (c == 0xed && b(i + 1) >= 0xa0) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xf0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xf4 && b(i + 1) >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

// s as the inside of a JSON string (access_log_json_escape): at most 6 bytes per byte of s.
void json_escape(char*& p, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t run = plain_run(s, i);
    put(p, s.substr(i, run));
    i += run;
    if (i == s.size()) break;
    unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch == '"' || ch == '\\') {
      *p++ = '\\';
      *p++ = static_cast<char>(ch);
      i++;
    } else if (ch < 0x20 || ch == 0x7f) {
      lit(p, "\\u00");
      *p++ = kHex[ch >> 4];
      *p++ = kHex[ch & 15];
      i++;
    } else if (size_t n = utf8_valid(s, i); n > 0) {
      put(p, s.substr(i, n));
      i += n;
    } else {
      lit(p, "\\ufffd");
      i++;
    }
  }
}

void json_string(char*& p, std::string_view s) {
  *p++ = '"';
  json_escape(p, s);
  *p++ = '"';
}

// The threadpool's part: writes al->flight to al->flight_sink, whole. Runs on a threadpool thread
// and touches nothing else of al.
void on_work(uv_work_t* req) {
  AccessLog* al = container_of(req, &AccessLog::work);
  const AccessLogSink& sink = *al->flight_sink;
  const char* p = al->flight.data();
  size_t left = al->flight.size();
  al->write_err = 0;
  al->write_lost = 0;
  while (left > 0) {
    size_t n = left;
    if (sink.pipe && n > PIPE_BUF) {
      // The last line end within PIPE_BUF: the kernel writes up to PIPE_BUF bytes to a pipe whole.
      size_t cut = PIPE_BUF;
      while (cut > 0 && p[cut - 1] != '\n') cut--;
      n = cut > 0 ? cut : PIPE_BUF;  // a line longer than PIPE_BUF cannot stay whole anyway
    }
    ssize_t w = write(sink.fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pfd = {sink.fd, POLLOUT, 0};
      if (poll(&pfd, 1, kPipeWaitMs) > 0) continue;
      w = -1;
      errno = EAGAIN;
    }
    if (w <= 0) {
      // The rest of the batch is lost: counted with the drops (a line cut short by a partial
      // write counts as lost too).
      al->write_err = w < 0 ? errno : EIO;
      al->write_lost = static_cast<uint64_t>(std::count(p, p + left, '\n'));
      return;
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
}

void start_write(AccessLog* al);

void on_written(uv_work_t* req, int status) {
  AccessLog* al = container_of(req, &AccessLog::work);
  al->writing = false;
  int err = status != 0 ? -status : al->write_err;
  al->dropped += al->write_lost;
  al->dropped_total += al->write_lost;
  al->write_lost = 0;
  if (err != 0) {
    uint64_t now = uv_now(al->loop);
    if (al->failed_at == 0 || now - al->failed_at >= kFailLogEveryMs) {
      al->failed_at = now;
      LOG_WARN("access log: worker %u cannot write to %s: %s", al->worker,
               al->flight_sink->path.empty() ? "stderr" : al->flight_sink->path.c_str(), strerror(err));
    }
  }
  al->flight.clear();
  al->flight_sink.reset();
  if (!al->fill.empty() && (al->closing || al->fill.size() >= kAccessLogFlushAt)) start_write(al);
  if (al->closing && !al->writing && al->on_drained != nullptr) al->on_drained(al);
}

// Hands fill to the threadpool, unless a write is in flight (its completion looks again).
void start_write(AccessLog* al) {
  if (al->writing || al->fill.empty() || al->sink == nullptr) return;
  al->flight.swap(al->fill);  // fill keeps the capacity flight had: no allocation per batch
  al->flight_sink = al->sink;
  al->writing = true;
  if (uv_queue_work(al->loop, &al->work, on_work, on_written) != 0) {
    al->writing = false;
    al->flight.clear();
    al->flight_sink.reset();
  }
}

// "2026-12-02T10:40:01.123Z" for now, the seconds formatted once a second.
std::string_view time_now(AccessLog* al, char* buf) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (ts.tv_sec != al->stamp_sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(al->time_text, sizeof al->time_text, "%Y-%m-%dT%H:%M:%S", &tm);
    al->stamp_sec = ts.tv_sec;
  }
  memcpy(buf, al->time_text, 19);
  int ms = static_cast<int>(ts.tv_nsec / 1000000);
  buf[19] = '.';
  buf[20] = static_cast<char>('0' + ms / 100);
  buf[21] = static_cast<char>('0' + ms / 10 % 10);
  buf[22] = static_cast<char>('0' + ms % 10);
  buf[23] = 'Z';
  return std::string_view(buf, 24);
}

}  // namespace

AccessLogSink::~AccessLogSink() {
  if (owned && fd >= 0) close(fd);
}

AccessLogSinkPtr access_log_open(const std::string& path, std::string* err) {
  auto sink = std::make_shared<AccessLogSink>();
  sink->path = path;
  if (path.empty()) {
    sink->fd = 2;
  } else {
    // O_NONBLOCK: a FIFO without a reader is an error now (ENXIO), not a daemon stuck in open,
    // and one whose reader stalls gives the threadpool's write EAGAIN instead of a thread that
    // never comes back (regular files ignore the flag).
    sink->fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0640);
    if (sink->fd < 0) {
      *err = "cannot open the access log '" + path + "': " + strerror(errno);
      return nullptr;
    }
    sink->owned = true;
  }
  struct stat st;
  sink->pipe = fstat(sink->fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  return sink;
}

void access_log_json_escape(std::string* out, std::string_view s) {
  size_t at = out->size();
  out->resize(at + 6 * s.size());
  char* p = out->data() + at;
  json_escape(p, s);
  out->resize(static_cast<size_t>(p - out->data()));
}

void access_log_format(std::string* out, AccessLogMode mode, const AccessLogEntry& e,
                       std::string_view time_text) {
  // The most the line can take: the fixed text and numbers, and every field escaped at its worst.
  size_t at = out->size();
  out->resize(at + 256 + time_text.size() +
              6 * (e.client.size() + e.method.size() + e.target.size() + e.replica.size() +
                   e.request_id.size()));
  char* p = out->data() + at;
  if (mode == AccessLogMode::json) {
    lit(p, "{\"time\":\"");
    put(p, time_text);
    lit(p, "\",\"client\":");
    json_string(p, e.client);
    lit(p, ",\"method\":");
    json_string(p, e.method);
    lit(p, ",\"path\":");
    json_string(p, e.target);
    lit(p, ",\"status\":");
    put_u64(p, static_cast<uint64_t>(e.status));
    lit(p, ",\"bytes_in\":");
    put_u64(p, e.bytes_in);
    lit(p, ",\"bytes_out\":");
    put_u64(p, e.bytes_out);
    lit(p, ",\"replica\":");
    json_string(p, e.replica);
    lit(p, ",\"ring_id\":");
    put_u64(p, e.ring_id);
    lit(p, ",\"duration_ms\":");
    put_ms(p, e.duration_us);
    lit(p, ",\"retries\":");
    put_u64(p, e.retries);
    lit(p, ",\"request_id\":");
    json_string(p, e.request_id);
    lit(p, "}\n");
  } else {
    // time client "METHOD target HTTP/x.y" status in out replica ring_id ms retries rid (an h2
    // request says HTTP/2.0, as NGINX's $server_protocol and HAProxy's %HV do)
    put(p, time_text);
    *p++ = ' ';
    text_field(p, e.client);
    lit(p, " \"");
    text_escape(p, e.method);
    *p++ = ' ';
    text_escape(p, e.target);
    if (e.http_major == 2) lit(p, " HTTP/2.0\" ");
    else if (e.http_minor == 0) lit(p, " HTTP/1.0\" ");
    else lit(p, " HTTP/1.1\" ");
    put_u64(p, static_cast<uint64_t>(e.status));
    lit(p, " in=");
    put_u64(p, e.bytes_in);
    lit(p, " out=");
    put_u64(p, e.bytes_out);
    lit(p, " replica=");
    text_field(p, e.replica);
    lit(p, " ring_id=");
    put_u64(p, e.ring_id);
    lit(p, " ms=");
    put_ms(p, e.duration_us);
    lit(p, " retries=");
    put_u64(p, e.retries);
    lit(p, " rid=");
    text_field(p, e.request_id);
    *p++ = '\n';
  }
  out->resize(static_cast<size_t>(p - out->data()));
}

void access_log_init(AccessLog* al, uv_loop_t* loop, uint32_t worker) {
  al->loop = loop;
  al->worker = worker;
  al->fill.reserve(kAccessLogFlushAt + 4096);
}

void access_log_configure(AccessLog* al, AccessLogMode mode, AccessLogSinkPtr sink) {
  al->mode = sink == nullptr ? AccessLogMode::off : mode;
  if (sink != nullptr) al->sink = std::move(sink);  // turned off: what waits still goes out
}

void access_log_write(AccessLog* al, const AccessLogEntry& e) {
  if (al->mode == AccessLogMode::off) return;
  if (al->fill.size() >= kAccessLogFillMax) {  // the writer is behind: drop, never block or grow
    al->dropped++;
    al->dropped_total++;
    return;
  }
  char buf[24];
  access_log_format(&al->fill, al->mode, e, time_now(al, buf));
  if (al->fill.size() >= kAccessLogFlushAt) start_write(al);
}

void access_log_tick(AccessLog* al) {
  start_write(al);
  if (al->dropped > 0) {
    LOG_WARN("access log: worker %u dropped %llu lines (%llu in all): the file takes them slower "
             "than requests come",
             al->worker, static_cast<unsigned long long>(al->dropped),
             static_cast<unsigned long long>(al->dropped_total));
    al->dropped = 0;
  }
}

void access_log_close(AccessLog* al) {
  al->closing = true;
  start_write(al);
}
