// The HTTP layer (lb/http: http_conn, http_server) on a real libuv loop over real loopback sockets:
// what bytes on the wire become (heads, bodies, errors, pauses), whatever pieces they arrive in.
// The pure helpers are in http_head_test.cc and http_response_test.cc.
//
// Request side: a raw client socket writes exact bytes to an HttpServer whose connections record
// every event. Response side: an HttpConn client reads exact bytes that a raw server socket writes.
// Every test closes all handles and asserts uv_loop_close() == 0 (TearDown), so a leaked handle
// fails it.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lb/http/http_conn.h"
#include "lb/http/http_head.h"
#include "lb/http/http_response.h"
#include "lb/http/http_server.h"

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

// One message as a connection delivered it.
struct Message {
  bool has_head = false;  // on_head ran
  llhttp_method_t method = HTTP_GET;
  int status = 0;
  std::string url;
  uint8_t major = 0, minor = 0;
  Headers headers;
  bool keep_alive = false, chunked = false;
  int64_t content_length = -2;
  std::string body;
  bool complete = false;  // on_message_end ran
};

// The owner of one HttpConn in a test, server or client side: records what it delivers.
struct Endpoint {
  HttpConn conn;  // first: the handle's address is the endpoint's
  uv_connect_t connect_req;
  int connect_status = 1;  // client side: 1 until the connect callback ran
  std::vector<Message> messages;
  std::vector<int> errors;
  std::string parse_error;
  int drains = 0;
  bool closed = false;
  std::string trace;  // events in order: h head, b body piece, e message end, x error, p parsed
  // Behaviour chosen by the test.
  HttpBody body_mode = HttpBody::decoded;
  HttpNext next = HttpNext::parse;
};

Endpoint* endpoint_of(HttpConn* c) {
  return static_cast<Endpoint*>(c->owner);
}

void on_head(HttpConn* c) {
  Endpoint* e = endpoint_of(c);
  const HttpHead& h = c->head;
  Message m;
  m.has_head = true;
  m.method = h.method;
  m.status = h.status;
  m.url = std::string(http_head_url(h));
  m.major = h.major;
  m.minor = h.minor;
  for (const HttpHeader& hd : h.headers) {
    m.headers.emplace_back(std::string(http_head_name(h, hd)), std::string(http_head_value(h, hd)));
    // Whatever pieces the head arrived in, each header is its own wire line for a proxy to copy.
    EXPECT_EQ(http_head_line(h, hd),
              m.headers.back().first + ": " + m.headers.back().second + "\r\n");
  }
  m.keep_alive = h.keep_alive;
  m.chunked = h.chunked;
  m.content_length = h.content_length;
  e->messages.push_back(std::move(m));
  e->trace += 'h';
  c->body_mode = e->body_mode;
}

Message& current(Endpoint* e) {
  if (e->messages.empty() || e->messages.back().complete) e->messages.emplace_back();
  return e->messages.back();
}

void on_body(HttpConn* c, const char* data, size_t len) {
  current(endpoint_of(c)).body.append(data, len);
  endpoint_of(c)->trace += 'b';
}

HttpNext on_message_end(HttpConn* c) {
  Endpoint* e = endpoint_of(c);
  current(e).complete = true;
  e->trace += 'e';
  return e->next;
}

void on_error(HttpConn* c, int err) {
  Endpoint* e = endpoint_of(c);
  e->errors.push_back(err);
  e->trace += 'x';
  if (c->parse_error) e->parse_error = c->parse_error;
}

void on_drain(HttpConn* c) {
  endpoint_of(c)->drains++;
}
void on_close(HttpConn* c) {
  endpoint_of(c)->closed = true;
}

void on_parsed(HttpConn* c) {
  endpoint_of(c)->trace += 'p';
}

const HttpConnHandlers kRecorder = {on_head,  on_body,  on_message_end, on_error,
                                    on_drain, on_close, on_parsed};

class HttpTest : public testing::Test {
 protected:
  uv_loop_t loop;
  uv_timer_t tick;  // wakes UV_RUN_ONCE up often while a test waits
  HttpServer server;
  bool listening = false, server_stopped = false;
  int port = 0;
  bool refuse_clients = false;
  std::vector<std::unique_ptr<Endpoint>> endpoints;  // freed after the loop is closed
  std::vector<Endpoint*> accepted;
  std::vector<int> fds;  // raw sockets, closed in TearDown

  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop), 0);
    ASSERT_EQ(uv_timer_init(&loop, &tick), 0);
  }

  void TearDown() override {
    for (int fd : fds) close(fd);
    for (auto& e : endpoints)
      if (!e->closed) http_conn_close(&e->conn);
    if (listening) {
      server.on_stopped = OnStopped;
      http_server_stop(&server);
    }
    EXPECT_TRUE(RunUntil([&] {
      for (auto& e : endpoints)
        if (!e->closed) return false;
      return !listening || server_stopped;
    })) << "connections or the server did not close";
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    EXPECT_EQ(rc, 0) << "handles left open";
    if (rc != 0) {
      uv_walk(
          &loop,
          [](uv_handle_t* h, void*) {
            ADD_FAILURE() << "open handle of type " << uv_handle_type_name(uv_handle_get_type(h));
          },
          nullptr);
    }
  }

  static void OnStopped(HttpServer* s) { static_cast<HttpTest*>(s->owner)->server_stopped = true; }

  // Runs the loop until done() holds; false after timeout_ms.
  bool RunUntil(const std::function<bool()>& done, uint64_t timeout_ms = 5000) {
    uint64_t deadline = uv_hrtime() + timeout_ms * 1000000;
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 1, 1);
    bool ok;
    while (!(ok = done()) && uv_hrtime() < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&tick);
    return ok;
  }

  // Runs the loop for ms milliseconds (to show that nothing more happens).
  void RunFor(uint64_t ms) {
    RunUntil([] { return false; }, ms);
  }

  Endpoint* NewEndpoint(llhttp_type_t type, size_t read_buffer) {
    endpoints.push_back(std::make_unique<Endpoint>());
    Endpoint* e = endpoints.back().get();
    e->conn.owner = e;
    if (http_conn_init(&loop, &e->conn, type, &kRecorder, read_buffer) != 0) {
      endpoints.pop_back();
      return nullptr;
    }
    return e;
  }

  void Listen(const HttpServerConfig& config = HttpServerConfig()) {
    server.config = config;
    server.owner = this;
    server.on_accept = [](HttpServer* s) -> HttpConn* {
      HttpTest* t = static_cast<HttpTest*>(s->owner);
      if (t->refuse_clients) return nullptr;
      Endpoint* e = t->NewEndpoint(HTTP_REQUEST, s->config.read_buffer);
      if (e == nullptr) return nullptr;
      t->accepted.push_back(e);
      return &e->conn;
    };
    std::string bound;
    ASSERT_EQ(http_server_listen(&server, &loop, "127.0.0.1:0", &bound), 0);
    listening = true;
    port = std::stoi(bound.substr(bound.rfind(':') + 1));
  }

  // A raw client connected to the server; returns its fd (non-blocking) once the server accepted
  // it.
  int RawConnect() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    fds.push_back(fd);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    size_t before = accepted.size();
    EXPECT_EQ(connect(fd, reinterpret_cast<struct sockaddr*>(&a), sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (!refuse_clients) {
      EXPECT_TRUE(RunUntil([&] { return accepted.size() > before; }));
    }
    return fd;
  }

  // A raw listening socket (the server side of response tests).
  int RawListen() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    fds.push_back(fd);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    EXPECT_EQ(bind(fd, reinterpret_cast<struct sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<struct sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    return fd;
  }

  // An HttpConn client (response parser) connected to port, and the raw fd that accepted it.
  std::pair<Endpoint*, int> ConnectClient(int listen_fd, size_t read_buffer = 16 * 1024) {
    Endpoint* e = NewEndpoint(HTTP_RESPONSE, read_buffer);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    e->connect_req.data = e;
    EXPECT_EQ(uv_tcp_connect(&e->connect_req, &e->conn.tcp, reinterpret_cast<struct sockaddr*>(&a),
                             [](uv_connect_t* req, int status) {
                               static_cast<Endpoint*>(req->data)->connect_status = status;
                             }),
              0);
    EXPECT_TRUE(RunUntil([&] { return e->connect_status != 1; }));
    EXPECT_EQ(e->connect_status, 0);
    EXPECT_EQ(http_conn_start(&e->conn), 0);
    struct pollfd p = {listen_fd, POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 5000), 1);
    int fd = accept(listen_fd, nullptr, nullptr);
    fds.push_back(fd);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return {e, fd};
  }

  // Bytes the kernel holds for e that it has not read yet.
  static int Unread(Endpoint* e) {
    uv_os_fd_t fd;
    uv_fileno(reinterpret_cast<uv_handle_t*>(&e->conn.tcp), &fd);
    int n = 0;
    ioctl(fd, FIONREAD, &n);
    return n;
  }

  // Writes all of data to a raw socket, running the loop while the socket is full.
  void Send(int fd, std::string_view data) {
    size_t sent = 0;
    EXPECT_TRUE(RunUntil([&] {
      ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<size_t>(n);
      return sent == data.size();
    }));
  }

  // Writes data one byte at a time; each byte is read by reader before the next is sent.
  void SendBytewise(int fd, std::string_view data, Endpoint* reader) {
    for (char ch : data) {
      Send(fd, std::string_view(&ch, 1));
      ASSERT_TRUE(RunUntil([&] { return reader->closed || Unread(reader) == 0; }));
    }
  }

  // Reads from a raw socket until n bytes or end of stream (or 5 s).
  std::string Recv(int fd, size_t n = SIZE_MAX) {
    std::string out;
    bool eof = false;
    RunUntil([&] {
      char buf[65536];
      ssize_t r;
      while ((r = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(r));
      if (r == 0 || (r < 0 && errno != EAGAIN)) eof = true;
      return eof || out.size() >= n;
    });
    return out;
  }

  bool PeerClosed(int fd) {
    Recv(fd);
    char c;
    ssize_t r = recv(fd, &c, 1, 0);
    return r == 0 || (r < 0 && errno != EAGAIN);
  }
};

// ---- http_conn: request heads --------------------------------------------------------------

struct HeadCase {
  const char* name;
  std::string wire;  // one complete request
  llhttp_method_t method;
  std::string url;
  uint8_t major, minor;
  Headers headers;  // as received: name exact, value without leading whitespace
  bool keep_alive;
  bool chunked;
  int64_t content_length;
  std::string body;  // decoded
};

const HeadCase kHeadCases[] = {
    {"get",
     "GET /home HTTP/1.1\r\nHost: a\r\n\r\n",
     HTTP_GET,
     "/home",
     1,
     1,
     {{"Host", "a"}},
     true,
     false,
     -1,
     ""},
    {"http10_closes", "GET / HTTP/1.0\r\n\r\n", HTTP_GET, "/", 1, 0, {}, false, false, -1, ""},
    {"http10_keep_alive",
     "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     HTTP_GET,
     "/",
     1,
     0,
     {{"Connection", "keep-alive"}},
     true,
     false,
     -1,
     ""},
    {"connection_close",
     "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
     HTTP_GET,
     "/",
     1,
     1,
     {{"Connection", "close"}},
     false,
     false,
     -1,
     ""},
    {"query",
     "GET /bytes?n=10&x=y HTTP/1.1\r\n\r\n",
     HTTP_GET,
     "/bytes?n=10&x=y",
     1,
     1,
     {},
     true,
     false,
     -1,
     ""},
    {"absolute_form",
     "GET http://h:1/p?q HTTP/1.1\r\n\r\n",
     HTTP_GET,
     "http://h:1/p?q",
     1,
     1,
     {},
     true,
     false,
     -1,
     ""},
    {"options_star",
     "OPTIONS * HTTP/1.1\r\n\r\n",
     HTTP_OPTIONS,
     "*",
     1,
     1,
     {},
     true,
     false,
     -1,
     ""},
    {"head", "HEAD /home HTTP/1.1\r\n\r\n", HTTP_HEAD, "/home", 1, 1, {}, true, false, -1, ""},
    {"content_length",
     "POST /sink HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
     HTTP_POST,
     "/sink",
     1,
     1,
     {{"Content-Length", "5"}},
     true,
     false,
     5,
     "hello"},
    {"content_length_zero",
     "PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
     HTTP_PUT,
     "/x",
     1,
     1,
     {{"Content-Length", "0"}},
     true,
     false,
     0,
     ""},
    {"chunked",
     "POST /sink HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n "
     "world\r\n0\r\n\r\n",
     HTTP_POST,
     "/sink",
     1,
     1,
     {{"Transfer-Encoding", "chunked"}},
     true,
     true,
     -1,
     "hello world"},
    {"repeated_and_empty_headers",
     "DELETE /r HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-Empty:\r\nX-Space:   v w\r\n\r\n",
     HTTP_DELETE,
     "/r",
     1,
     1,
     {{"X-A", "1"}, {"x-a", "2"}, {"X-Empty", ""}, {"X-Space", "v w"}},
     true,
     false,
     -1,
     ""},
};

void PrintTo(const HeadCase& c, std::ostream* os) {
  *os << c.name;
}

class RequestHead : public HttpTest, public testing::WithParamInterface<HeadCase> {
 protected:
  void Check(const Endpoint* e, const char* how) {
    SCOPED_TRACE(how);
    const HeadCase& want = GetParam();
    ASSERT_EQ(e->messages.size(), 1u);
    ASSERT_TRUE(e->errors.empty()) << e->parse_error;
    const Message& m = e->messages[0];
    EXPECT_TRUE(m.has_head);
    EXPECT_TRUE(m.complete);
    EXPECT_EQ(m.method, want.method);
    EXPECT_EQ(m.url, want.url);
    EXPECT_EQ(m.major, want.major);
    EXPECT_EQ(m.minor, want.minor);
    EXPECT_EQ(m.headers, want.headers);
    EXPECT_EQ(m.keep_alive, want.keep_alive);
    EXPECT_EQ(m.chunked, want.chunked);
    EXPECT_EQ(m.content_length, want.content_length);
    EXPECT_EQ(m.body, want.body);
  }
};

TEST_P(RequestHead, ParsesInOneWrite) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  Send(fd, GetParam().wire);
  ASSERT_TRUE(RunUntil([&] { return !e->messages.empty() && e->messages.back().complete; }));
  Check(e, "one write");
}

TEST_P(RequestHead, ParsesWhenFedOneByteAtATime) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  SendBytewise(fd, GetParam().wire, e);
  ASSERT_TRUE(RunUntil([&] { return !e->messages.empty() && e->messages.back().complete; }));
  Check(e, "one byte at a time");
}

INSTANTIATE_TEST_SUITE_P(Cases, RequestHead, testing::ValuesIn(kHeadCases),
                         [](const testing::TestParamInfo<HeadCase>& i) { return i.param.name; });

// ---- http_conn: malformed and oversize requests --------------------------------------------

struct ErrorCase {
  const char* name;
  std::string wire;
  int error;               // HTTP_E_PARSE or HTTP_E_TOO_LARGE
  size_t complete_before;  // messages delivered before the error
};

// Limits for these cases: 64 bytes of URL, names and values; 4 headers.
const ErrorCase kErrorCases[] = {
    {"not_http", "GARBAGE\r\n\r\n", HTTP_E_PARSE, 0},
    {"bad_version", "GET / HTTP/9.x\r\n\r\n", HTTP_E_PARSE, 0},
    {"space_before_colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", HTTP_E_PARSE, 0},
    {"bare_cr_ends_head", "GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n", HTTP_E_PARSE, 0},
    {"chunk_without_crlf",
     "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", HTTP_E_PARSE, 0},
    {"request_after_connection_close",
     "GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n", HTTP_E_PARSE, 1},
    {"header_without_colon", "GET / HTTP/1.1\r\nNoColon\r\n\r\n", HTTP_E_PARSE, 0},
    {"bare_lf_line_ends", "GET / HTTP/1.1\nHost: x\n\n", HTTP_E_PARSE, 0},
    {"bare_cr_in_value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", HTTP_E_PARSE, 0},
    {"control_char_in_value", "GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", HTTP_E_PARSE, 0},
    {"bad_content_length", "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", HTTP_E_PARSE, 0},
    {"two_content_lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     HTTP_E_PARSE, 0},
    {"content_length_and_chunked",
     "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     HTTP_E_PARSE, 0},
    {"chunked_not_last", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
     HTTP_E_PARSE, 0},
    {"bad_chunk_size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HTTP_E_PARSE,
     0},
    {"garbage_after_a_request", "GET /a HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n", HTTP_E_PARSE, 1},
    {"url_over_limit", "GET /" + std::string(64, 'u') + " HTTP/1.1\r\n\r\n", HTTP_E_TOO_LARGE, 0},
    {"value_over_limit", "GET / HTTP/1.1\r\nX: " + std::string(63, 'v') + "\r\n\r\n",
     HTTP_E_TOO_LARGE, 0},
    {"five_headers", "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
     HTTP_E_TOO_LARGE, 0},
};

void PrintTo(const ErrorCase& c, std::ostream* os) {
  *os << c.name;
}

class RequestError : public HttpTest, public testing::WithParamInterface<ErrorCase> {
 protected:
  void SetUp() override {
    HttpTest::SetUp();
    HttpServerConfig config;
    config.limits.max_bytes = 64;
    config.limits.max_headers = 4;
    Listen(config);
  }
  void Check(Endpoint* e) {
    const ErrorCase& want = GetParam();
    ASSERT_TRUE(RunUntil([&] { return !e->errors.empty(); }));
    EXPECT_EQ(e->errors, std::vector<int>{want.error});
    size_t complete = 0;
    for (const Message& m : e->messages) complete += m.complete;
    EXPECT_EQ(complete, want.complete_before);
    if (want.error == HTTP_E_PARSE) {
      EXPECT_FALSE(e->parse_error.empty());
    }
  }
};

TEST_P(RequestError, IsReportedOnceInOneWrite) {
  int fd = RawConnect();
  Send(fd, GetParam().wire);
  Check(accepted.back());
}

TEST_P(RequestError, IsReportedOnceWhenFedOneByteAtATime) {
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  // Bytes after the error are never read; stop feeding once it is reported.
  for (char ch : GetParam().wire) {
    if (!e->errors.empty()) break;
    Send(fd, std::string_view(&ch, 1));
    ASSERT_TRUE(RunUntil([&] { return !e->errors.empty() || Unread(e) == 0; }));
  }
  Check(e);
}

INSTANTIATE_TEST_SUITE_P(Cases, RequestError, testing::ValuesIn(kErrorCases),
                         [](const testing::TestParamInfo<ErrorCase>& i) { return i.param.name; });

TEST_F(HttpTest, LimitsAreInclusive) {
  HttpServerConfig config;
  config.limits.max_bytes = 64;
  config.limits.max_headers = 4;
  Listen(config);
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  // URL 9 + names 4 + values 51 = 64 bytes, and 4 headers.
  Send(fd,
       "GET /limits HTTP/1.1\r\nA: " + std::string(48, 'v') + "\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return !e->messages.empty() && e->messages[0].complete; }));
  EXPECT_TRUE(e->errors.empty()) << e->parse_error;
}

// ---- http_conn: pipelining, pause and resume -----------------------------------------------

TEST_F(HttpTest, PipelinedRequestsParseInOrderOnePerResume) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  e->next = HttpNext::pause;
  Send(fd,
       "GET /1 HTTP/1.1\r\n\r\n"
       "POST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
       "POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ncde\r\n0\r\n\r\n"
       "GET /4 HTTP/1.1\r\n\r\n");
  const char* urls[] = {"/1", "/2", "/3", "/4"};
  const char* bodies[] = {"", "ab", "cde", ""};
  for (size_t i = 0; i < 4; i++) {
    ASSERT_TRUE(RunUntil([&] { return e->messages.size() == i + 1 && e->messages[i].complete; }));
    RunFor(20);
    ASSERT_EQ(e->messages.size(), i + 1) << "parsed past a pause";
    EXPECT_TRUE(e->conn.paused);
    EXPECT_EQ(e->messages[i].url, urls[i]);
    EXPECT_EQ(e->messages[i].body, bodies[i]);
    http_conn_resume(&e->conn);
  }
  EXPECT_TRUE(e->errors.empty());
}

TEST_F(HttpTest, PipelinedRequestsLongerThanTheReadBufferAllArrive) {
  HttpServerConfig config;
  config.read_buffer = 64;
  Listen(config);
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  e->next = HttpNext::pause;
  std::string wire;
  for (int i = 0; i < 50; i++)
    wire += "GET /req" + std::to_string(i) + " HTTP/1.1\r\nX-Pad: abcdef\r\n\r\n";
  Send(fd, wire);
  for (size_t i = 0; i < 50; i++) {
    ASSERT_TRUE(RunUntil([&] { return e->messages.size() == i + 1 && e->messages[i].complete; }));
    EXPECT_EQ(e->messages[i].url, "/req" + std::to_string(i));
    http_conn_resume(&e->conn);
  }
  RunFor(20);
  EXPECT_EQ(e->messages.size(), 50u);
  EXPECT_TRUE(e->errors.empty());
}

TEST_F(HttpTest, UpgradeIsIgnoredAndTheConnectionStaysHttp) {
  Listen();
  const std::string wire =
      "GET /a HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
      "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
      "POST /b HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi"
      "CONNECT example.com:443 HTTP/1.1\r\n\r\n"
      "GET /d HTTP/1.1\r\n\r\n";
  for (bool bytewise : {false, true}) {
    SCOPED_TRACE(bytewise ? "one byte at a time" : "one write");
    int fd = RawConnect();
    Endpoint* e = accepted.back();
    if (bytewise) {
      SendBytewise(fd, wire, e);
    } else {
      Send(fd, wire);
    }
    ASSERT_TRUE(RunUntil([&] { return e->messages.size() == 4 && e->messages[3].complete; }))
        << e->parse_error;
    EXPECT_EQ(e->messages[0].url, "/a");
    EXPECT_EQ(e->messages[1].body, "hi");
    EXPECT_EQ(e->messages[2].method, HTTP_CONNECT);
    EXPECT_EQ(e->messages[3].url, "/d");
    EXPECT_TRUE(e->errors.empty()) << e->parse_error;
    http_conn_close(&e->conn);
  }
}

// ---- http_conn: raw body mode ----------------------------------------------------------------

const std::string kChunkedHead = "POST /raw HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
const std::string kChunkedBody = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
const std::string kNext = "GET /next HTTP/1.1\r\n\r\n";

TEST_F(HttpTest, RawModeDeliversTheExactWireBytesOfAChunkedBody) {
  Listen();
  std::string wire = kChunkedHead + kChunkedBody + kNext;
  // Every split into two writes, then one byte at a time.
  for (size_t split = 0; split <= wire.size() + 1; split++) {
    SCOPED_TRACE("split at " + std::to_string(split));
    int fd = RawConnect();
    Endpoint* e = accepted.back();
    e->body_mode = HttpBody::raw;
    if (split <= wire.size()) {
      Send(fd, std::string_view(wire).substr(0, split));
      ASSERT_TRUE(RunUntil([&] { return Unread(e) == 0; }));
      Send(fd, std::string_view(wire).substr(split));
    } else {
      SendBytewise(fd, wire, e);
    }
    ASSERT_TRUE(RunUntil([&] { return e->messages.size() == 2 && e->messages[1].complete; }));
    EXPECT_EQ(e->messages[0].body, kChunkedBody);
    EXPECT_TRUE(e->messages[0].chunked);
    EXPECT_EQ(e->messages[1].url, "/next");
    EXPECT_EQ(e->messages[1].body, "");
    EXPECT_TRUE(e->errors.empty());
    http_conn_close(&e->conn);
  }
}

TEST_F(HttpTest, RawModeDeliversAContentLengthBodyUnchanged) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  e->body_mode = HttpBody::raw;
  std::string body(100000, 'b');
  Send(fd, "PUT /r HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + body + kNext);
  ASSERT_TRUE(RunUntil([&] { return e->messages.size() == 2 && e->messages[1].complete; }));
  EXPECT_EQ(e->messages[0].body, body);
  EXPECT_EQ(e->messages[1].url, "/next");
}

TEST_F(HttpTest, DecodedModeDeliversTheChunkContentsOnly) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  Send(fd, kChunkedHead + kChunkedBody);
  ASSERT_TRUE(RunUntil([&] { return !e->messages.empty() && e->messages[0].complete; }));
  EXPECT_EQ(e->messages[0].body, "hello world");
}

// ---- http_conn: end of stream ----------------------------------------------------------------

TEST_F(HttpTest, PeerCloseAfterARequestIsReportedAfterIt) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  Send(fd, "GET /last HTTP/1.1\r\n\r\n");
  shutdown(fd, SHUT_WR);
  ASSERT_TRUE(RunUntil([&] { return !e->errors.empty(); }));
  ASSERT_EQ(e->messages.size(), 1u);
  EXPECT_TRUE(e->messages[0].complete);
  EXPECT_EQ(e->errors, std::vector<int>{UV_EOF});
}

TEST_F(HttpTest, PeerCloseInsideAHeadIsEofWithoutAMessage) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  Send(fd, "GET /cut HTTP/1.1\r\nHost: ");
  shutdown(fd, SHUT_WR);
  ASSERT_TRUE(RunUntil([&] { return !e->errors.empty(); }));
  EXPECT_TRUE(e->messages.empty());
  EXPECT_EQ(e->errors, std::vector<int>{UV_EOF});
}

// ---- http_conn: responses (client side) ------------------------------------------------------

struct ResponseCase {
  const char* name;
  std::string wire;   // what the server sends
  bool close_after;   // the server closes after sending
  bool head_request;  // the request was HEAD (expect_no_body)
  int status;
  std::string body;  // decoded
  std::vector<int> errors;
};

const ResponseCase kResponseCases[] = {
    {"content_length",
     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
     false,
     false,
     200,
     "hello",
     {}},
    {"chunked",
     "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
     false,
     false,
     201,
     "abc",
     {}},
    {"close_delimited",
     "HTTP/1.1 200 OK\r\n\r\nuntil close",
     true,
     false,
     200,
     "until close",
     {UV_EOF}},
    {"head_request", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false, true, 200, "", {}},
    {"not_modified_with_length",
     "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
     false,
     false,
     304,
     "",
     {}},
    {"continue", "HTTP/1.1 100 Continue\r\n\r\n", false, false, 100, "", {}},
    {"no_content", "HTTP/1.1 204 No Content\r\n\r\n", false, false, 204, "", {}},
    {"empty_reason", "HTTP/1.1 599 \r\nContent-Length: 1\r\n\r\nx", false, false, 599, "x", {}},
};

void PrintTo(const ResponseCase& c, std::ostream* os) {
  *os << c.name;
}

class Response : public HttpTest, public testing::WithParamInterface<ResponseCase> {
 protected:
  // Sends the case's response, then (unless the server closes) a second one on the same
  // connection, which parses only if the first consumed exactly its own bytes.
  void Exchange(bool bytewise) {
    const ResponseCase& want = GetParam();
    int lfd = RawListen();
    auto [e, fd] = ConnectClient(lfd);
    e->conn.expect_no_body = want.head_request;
    std::string wire = want.wire;
    if (!want.close_after) wire += "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";
    if (bytewise) {
      SendBytewise(fd, wire, e);
    } else {
      Send(fd, wire);
    }
    if (want.close_after) shutdown(fd, SHUT_WR);
    size_t messages = want.close_after ? 1 : 2;
    ASSERT_TRUE(RunUntil([&] {
      return e->messages.size() == messages && e->messages.back().complete &&
             e->errors.size() == want.errors.size();
    }));
    EXPECT_TRUE(e->messages[0].has_head);
    EXPECT_EQ(e->messages[0].status, want.status);
    EXPECT_EQ(e->messages[0].body, want.body);
    EXPECT_EQ(e->errors, want.errors);
    if (!want.close_after) {
      EXPECT_EQ(e->messages[1].status, 200);
      EXPECT_EQ(e->messages[1].body, "next");
    }
  }
};

TEST_P(Response, ParsesInOneWrite) {
  Exchange(false);
}

TEST_P(Response, ParsesWhenFedOneByteAtATime) {
  Exchange(true);
}

INSTANTIATE_TEST_SUITE_P(Cases, Response, testing::ValuesIn(kResponseCases),
                         [](const testing::TestParamInfo<ResponseCase>& i) {
                           return i.param.name;
                         });

TEST_F(HttpTest, ResponseCutShortIsEofWithoutAMessageEnd) {
  int lfd = RawListen();
  auto [e, fd] = ConnectClient(lfd);
  Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
  shutdown(fd, SHUT_WR);
  ASSERT_TRUE(RunUntil([&] { return !e->errors.empty(); }));
  ASSERT_EQ(e->messages.size(), 1u);
  EXPECT_FALSE(e->messages[0].complete);
  EXPECT_EQ(e->messages[0].body, "abc");
  EXPECT_EQ(e->errors, std::vector<int>{UV_EOF});
}

// on_parsed comes once the bytes of a read are used up, after every event they produced: a proxy
// holding back a response head learns there whether the body came with it.
TEST_F(HttpTest, OnParsedFollowsTheEventsOfEachRead) {
  int lfd = RawListen();
  auto [e, fd] = ConnectClient(lfd);
  EXPECT_EQ(e->trace, "") << "starting to read with nothing buffered parses nothing";
  Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  ASSERT_TRUE(RunUntil([&] { return e->trace.size() >= 4; }));
  EXPECT_EQ(e->trace, "hbep");
  Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return e->trace.size() >= 6; }));
  EXPECT_EQ(e->trace, "hbephp") << "a head alone: on_parsed before any body byte";
  Send(fd, "abc");
  ASSERT_TRUE(RunUntil([&] { return e->trace.size() >= 9; }));
  EXPECT_EQ(e->trace, "hbephpbep");
  e->next = HttpNext::pause;
  Send(fd, "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
  ASSERT_TRUE(RunUntil([&] { return e->trace.size() >= 12; }));
  RunFor(50);
  EXPECT_EQ(e->trace, "hbephpbephep") << "a pause at a message end ends the parsing";
  e->next = HttpNext::parse;
  http_conn_resume(&e->conn);
  ASSERT_TRUE(RunUntil([&] { return e->trace.size() >= 16; }));
  EXPECT_EQ(e->trace, "hbephpbephephbep");
}

// ---- http_conn: writes -------------------------------------------------------------------------

TEST_F(HttpTest, WritesQueueWhatTheSocketDoesNotTakeAndDrainInOrder) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  std::string sent;
  for (int i = 0; i < 8; i++) {
    std::string piece(1 << 20, static_cast<char>('a' + i));  // destroyed right after the call
    ASSERT_EQ(http_conn_write(&e->conn, piece.data(), piece.size()), 0);
    sent += piece;
  }
  EXPECT_GT(e->conn.write_queued, 0u) << "8 MiB fit in the socket: the queue was not exercised";
  std::string got = Recv(fd, sent.size());
  EXPECT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent) << "bytes differ";
  ASSERT_TRUE(RunUntil([&] { return e->drains > 0; }));
  EXPECT_EQ(e->drains, 1);
  EXPECT_EQ(e->conn.write_queued, 0u);
}

TEST_F(HttpTest, AQueuedWriteThatFailsIsReportedEvenWhenNotReading) {
  Listen();
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  http_conn_stop(&e->conn);  // the owner applies backpressure: only the write can notice
  std::string big(8 << 20, 'w');
  ASSERT_EQ(http_conn_write(&e->conn, big.data(), big.size()), 0);
  ASSERT_GT(e->conn.write_queued, 0u);
  struct linger reset = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  close(fd);  // RST
  fds.clear();
  ASSERT_TRUE(RunUntil([&] { return !e->errors.empty(); }));
  EXPECT_LT(e->errors[0], 0);
  EXPECT_EQ(e->errors.size(), 1u);
  EXPECT_EQ(e->drains, 0);
}

TEST_F(HttpTest, ServerAndClientConnectionsExchangeAResponse) {
  Listen();
  // The client is an HttpConn too: an exchange entirely through the layer.
  Endpoint* client = NewEndpoint(HTTP_RESPONSE, 16 * 1024);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  client->connect_req.data = client;
  ASSERT_EQ(uv_tcp_connect(&client->connect_req, &client->conn.tcp,
                           reinterpret_cast<struct sockaddr*>(&a),
                           [](uv_connect_t* r, int status) {
                             static_cast<Endpoint*>(r->data)->connect_status = status;
                           }),
            0);
  ASSERT_TRUE(RunUntil([&] { return client->connect_status == 0 && !accepted.empty(); }));
  ASSERT_EQ(http_conn_start(&client->conn), 0);
  std::string_view request = "GET /x HTTP/1.1\r\n\r\n";
  ASSERT_EQ(http_conn_write(&client->conn, request.data(), request.size()), 0);
  Endpoint* s = accepted.back();
  ASSERT_TRUE(RunUntil([&] { return !s->messages.empty() && s->messages[0].complete; }));
  std::string out;
  http_append_response(&out, 200, "application/json", "{\"a\": 1}", true);
  ASSERT_EQ(http_conn_write(&s->conn, out.data(), out.size()), 0);
  ASSERT_TRUE(RunUntil([&] { return !client->messages.empty() && client->messages[0].complete; }));
  EXPECT_EQ(client->messages[0].status, 200);
  EXPECT_EQ(client->messages[0].body, "{\"a\": 1}");
  EXPECT_TRUE(client->messages[0].keep_alive);
}

// ---- http_server ------------------------------------------------------------------------------

TEST_F(HttpTest, StopClosesIdleConnectionsAndWaitsForBusyOnes) {
  Listen();
  int idle_fd = RawConnect();
  Endpoint* idle = accepted.back();
  int busy_fd = RawConnect();
  Endpoint* busy = accepted.back();
  busy->next = HttpNext::pause;  // the owner is still handling its request
  Send(busy_fd, "GET /slow HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return !busy->messages.empty() && busy->messages[0].complete; }));

  server.on_stopped = OnStopped;
  http_server_stop(&server);
  EXPECT_TRUE(http_server_stopping(&server));
  ASSERT_TRUE(RunUntil([&] { return idle->closed; }));
  EXPECT_TRUE(PeerClosed(idle_fd));
  RunFor(200);
  EXPECT_FALSE(busy->closed);
  EXPECT_FALSE(server_stopped);
  // New clients are refused once the listener is closed.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  fds.push_back(fd);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  EXPECT_NE(connect(fd, reinterpret_cast<struct sockaddr*>(&a), sizeof a), 0);

  busy->next = HttpNext::parse;
  http_conn_resume(&busy->conn);  // the exchange is over: the connection is idle now
  ASSERT_TRUE(RunUntil([&] { return server_stopped; }));
  EXPECT_TRUE(busy->closed);
}

TEST_F(HttpTest, ARefusedClientIsClosedAndTheServerServesTheNext) {
  Listen();
  refuse_clients = true;  // on_accept returns nullptr, as when it cannot allocate
  int refused[3];
  for (int& fd : refused) fd = RawConnect();
  for (int fd : refused) EXPECT_TRUE(PeerClosed(fd));
  refuse_clients = false;
  int fd = RawConnect();
  Endpoint* e = accepted.back();
  Send(fd, "GET /after HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return !e->messages.empty() && e->messages[0].complete; }));
  EXPECT_EQ(accepted.size(), 1u);
}

TEST_F(HttpTest, HeaderAndIdleTimeoutsCloseTheConnection) {
  HttpServerConfig config;
  config.header_timeout_ms = 50;
  config.idle_timeout_ms = 50;
  Listen(config);
  int slow_fd = RawConnect();
  Endpoint* slow = accepted.back();
  Send(slow_fd, "GET /slow HTTP/1.1\r\nHost: ");
  int idle_fd = RawConnect();
  Endpoint* idle = accepted.back();
  Send(idle_fd, "GET /done HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(RunUntil([&] { return !idle->messages.empty() && idle->messages[0].complete; }));
  // The sweep runs once a second.
  ASSERT_TRUE(RunUntil([&] { return slow->closed && idle->closed; }, 3000));
  EXPECT_TRUE(slow->messages.empty());
  EXPECT_TRUE(PeerClosed(slow_fd));
  EXPECT_TRUE(PeerClosed(idle_fd));
}

// ---- http_server: addresses -------------------------------------------------------------------

TEST(HttpAddress, ParsesHostPortForms) {
  const std::pair<const char*, const char*> cases[] = {
      {"127.0.0.1:80", "127.0.0.1:80"},     {":8080", "0.0.0.0:8080"},  {"8080", "0.0.0.0:8080"},
      {"localhost:5000", "127.0.0.1:5000"}, {"[::1]:443", "[::1]:443"}, {"0.0.0.0:0", "0.0.0.0:0"},
      {"10.1.2.3:65535", "10.1.2.3:65535"},
  };
  for (auto [text, formatted] : cases) {
    struct sockaddr_storage addr;
    ASSERT_EQ(http_parse_address(text, &addr), 0) << text;
    EXPECT_EQ(http_format_address(reinterpret_cast<struct sockaddr*>(&addr)), formatted) << text;
  }
}

TEST(HttpAddress, FormatsTheIpAlone) {
  const std::pair<const char*, const char*> cases[] = {
      {"127.0.0.1:80", "127.0.0.1"}, {"0.0.0.0:1", "0.0.0.0"},     {"10.1.2.3:1", "10.1.2.3"},
      {"255.99.100.9:1", "255.99.100.9"}, {"[::1]:443", "::1"}, {"[fe80::1:2]:1", "fe80::1:2"},
  };
  for (auto [text, ip] : cases) {
    struct sockaddr_storage addr;
    ASSERT_EQ(http_parse_address(text, &addr), 0) << text;
    EXPECT_EQ(http_format_ip(reinterpret_cast<struct sockaddr*>(&addr)), ip) << text;
  }
}

TEST(HttpAddress, RefusesWhatIsNotAnAddress) {
  for (const char* text :
       {"", "host", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:123456", "1.2.3.4:-1", "1.2.3.4:8x",
        "999.1.1.1:80", "example.com:80", "[::1]", "[::1]80", ":", "1.2.3.4: 80"}) {
    struct sockaddr_storage addr;
    EXPECT_EQ(http_parse_address(text, &addr), UV_EINVAL) << "'" << text << "'";
  }
}

}  // namespace
