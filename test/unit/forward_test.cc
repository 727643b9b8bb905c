// forward's Upgrade decisions and heads (lb/data/forward.h): which requests the LB tunnels, the
// Upgrade lines it adds to a request head, the 101 head a client gets. Table-driven, heads parsed
// from bytes by llhttp as the HTTP layer does.
#include <gtest/gtest.h>

#include <string>

#include <llhttp.h>

#include "lb/data/forward.h"

namespace {

struct Parse {
  HttpHead head;
  HttpHeadLimits lim;
  bool done = false;
};

Parse* parse_of(llhttp_t* p) { return static_cast<Parse*>(p->data); }

// The head of the message in bytes (a request or a response), as http_conn fills it.
HttpHead head_of(const std::string& bytes, llhttp_type_t type) {
  static llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_url = [](llhttp_t* p, const char* at, size_t n) {
    return http_head_add_url(&parse_of(p)->head, parse_of(p)->lim, at, n);
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    return http_head_add_field(&parse_of(p)->head, parse_of(p)->lim, at, n);
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    return http_head_add_value(&parse_of(p)->head, parse_of(p)->lim, at, n);
  };
  s.on_headers_complete = [](llhttp_t* p) {
    http_head_finish(&parse_of(p)->head, p);
    parse_of(p)->done = true;
    return static_cast<int>(HPE_PAUSED);
  };
  Parse parse;
  llhttp_t p;
  llhttp_init(&p, type, &s);
  p.data = &parse;
  llhttp_errno_t e = llhttp_execute(&p, bytes.data(), bytes.size());
  EXPECT_TRUE(e == HPE_PAUSED && parse.done) << bytes << llhttp_errno_name(e);
  return parse.head;
}

HttpHead request(const std::string& bytes) { return head_of(bytes, HTTP_REQUEST); }

TEST(ForwardUpgrade, WhichRequestsAreTunnelled) {
  const std::pair<const char*, bool> cases[] = {
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: x\r\n\r\n", true},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: close\r\nConnection: Upgrade\r\n\r\n",
       true},
      {"OPTIONS / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", true},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\nContent-Length: 0\r\n\r\n",
       true},
      // Ignored: HTTP/1.0, a body, no Upgrade, no Connection: upgrade, an empty Upgrade.
      {"GET /ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
      {"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\nContent-Length: 1\r\n\r\n",
       false},
      {"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
       "Transfer-Encoding: chunked\r\n\r\n",
       false},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n", false},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgraded\r\nUpgrade: websocket\r\n\r\n", false},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: \r\n\r\n", false},
  };
  for (auto [bytes, want] : cases) EXPECT_EQ(forward_upgrade_wanted(request(bytes)), want) << bytes;
}

TEST(ForwardUpgrade, RequestHeadGetsConnectionAndEveryUpgradeLine) {
  HttpHead h = request(
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, X-Hop\r\nX-Hop: 1\r\n"
      "Upgrade: websocket\r\nUpgrade: foo/2\r\nSec-WebSocket-Key: k\r\n\r\n");
  std::string out;
  forward_request_head(&out, h, "10.0.0.1", "X-Forwarded-For: 10.0.0.1\r\n", "123456");
  forward_request_upgrade(&out, h);
  EXPECT_EQ(out,
            "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nX-Forwarded-For: 10.0.0.1\r\n"
            "X-Request-Id: 123456\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Upgrade: foo/2\r\n\r\n");
}

TEST(ForwardUpgrade, SwitchingHeadDropsFramingAndHopByHopKeepsTheRest) {
  HttpHead h = head_of(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\n"
      "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\nSec-WebSocket-Accept: abc\r\n\r\n",
      HTTP_RESPONSE);
  EXPECT_TRUE(forward_has_upgrade(h));
  std::string out;
  forward_switching_head(&out, h);
  EXPECT_EQ(out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  EXPECT_FALSE(forward_has_upgrade(
      head_of("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", HTTP_RESPONSE)));
}

}  // namespace
