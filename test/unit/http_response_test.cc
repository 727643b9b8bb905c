// http_response: the exact bytes of the answers a component makes itself, and JSON escaping.
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "lb/http/http_response.h"

namespace {

TEST(HttpResponse, FormatsTheExactBytes) {
  std::string out;
  http_append_response(&out, 200, "application/json", "{}", true);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            "Connection: keep-alive\r\n\r\n{}");
  out.clear();
  http_append_response(&out, 404, "", "", false, "X-A: 1\r\n");
  EXPECT_EQ(out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\nX-A: 1\r\n\r\n");
  out.clear();
  http_append_response(&out, 599, "text/plain", "x", true);
  EXPECT_EQ(out.substr(0, 15), "HTTP/1.1 599 \r\n");
}

TEST(HttpResponse, JsonEscapingKeepsTextInsideTheString) {
  const std::pair<std::string, std::string> cases[] = {
      {"/home", "/home"},
      {"/a\"b", "/a\\\"b"},
      {"/a\\b", "/a\\\\b"},
      {std::string("\x01\n\x1f", 3), "\\u0001\\u000a\\u001f"},
      {"/caf\xc3\xa9 x", "/caf\xc3\xa9 x"},
      {"", ""},
  };
  for (const auto& [text, escaped] : cases) {
    std::string out = "[";
    http_append_json_escaped(&out, text);
    EXPECT_EQ(out, "[" + escaped) << text;
  }
}

TEST(HttpResponse, StatusLines) {
  const std::pair<int, const char*> cases[] = {
      {200, "HTTP/1.1 200 OK\r\n"},
      {100, "HTTP/1.1 100 Continue\r\n"},
      {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
      {599, "HTTP/1.1 599 \r\n"},
      {999, "HTTP/1.1 999 \r\n"},
  };
  for (auto [status, line] : cases) {
    std::string out = "x";
    http_append_status_line(&out, status);
    EXPECT_EQ(out, std::string("x") + line) << status;
  }
}

TEST(HttpResponse, ReasonPhrases) {
  EXPECT_STREQ(http_reason(200), "OK");
  EXPECT_STREQ(http_reason(400), "Bad Request");
  EXPECT_STREQ(http_reason(431), "Request Header Fields Too Large");
  EXPECT_STREQ(http_reason(503), "Service Unavailable");
  EXPECT_STREQ(http_reason(299), "");
}

}  // namespace
