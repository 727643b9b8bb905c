// http_head's helpers: the path and query of a URL, header lookup, hop-by-hop names.
#include <gtest/gtest.h>

#include <string_view>
#include <utility>

#include "lb/http/http_head.h"

namespace {

TEST(HttpUrl, PathStopsAtQueryOrFragment) {
  const std::pair<const char*, const char*> cases[] = {
      {"/home", "/home"}, {"/home?x=1", "/home"},
      {"/a#frag", "/a"},  {"/a?b#c", "/a"},
      {"/", "/"},         {"", ""},
      {"*", "*"},         {"/?", "/"},
  };
  for (auto [url, path] : cases) EXPECT_EQ(http_url_path(url), path) << url;
}

TEST(HttpUrl, QueryFindsTheExactKey) {
  struct Case {
    const char* url;
    const char* key;
    bool found;
    const char* value;
  };
  const Case cases[] = {
      {"/bytes?n=10", "n", true, "10"}, {"/p?a=1&n=2", "n", true, "2"},
      {"/p?nn=1&n=2", "n", true, "2"},  {"/p?n1=5", "n", false, ""},
      {"/p?n", "n", true, ""},          {"/p?n=", "n", true, ""},
      {"/p?a=1&&n=3", "n", true, "3"},  {"/p?n=1&n=2", "n", true, "1"},
      {"/p?x=1#n=2", "n", false, ""},   {"/p?n=1#x", "n", true, "1"},
      {"/p", "n", false, ""},           {"/p?a=n", "n", false, ""},
  };
  for (const Case& c : cases) {
    std::string_view value = "unset";
    EXPECT_EQ(http_url_query(c.url, c.key, &value), c.found) << c.url;
    if (c.found) {
      EXPECT_EQ(value, c.value) << c.url;
    }
  }
}

TEST(HttpHead, GetIsCaseInsensitiveTrimsAndReturnsTheFirst) {
  HttpHead h;
  HttpHeadLimits lim;
  auto add = [&](std::string_view name, std::string_view value) {
    ASSERT_EQ(http_head_add_field(&h, lim, name.data(), name.size()), 0);
    ASSERT_EQ(http_head_add_value(&h, lim, value.data(), value.size()), 0);
  };
  // Pieces of one name and one value arrive in several calls.
  ASSERT_EQ(http_head_add_url(&h, lim, "/pa", 3), 0);
  ASSERT_EQ(http_head_add_url(&h, lim, "th", 2), 0);
  ASSERT_EQ(http_head_add_field(&h, lim, "X-Requ", 6), 0);
  ASSERT_EQ(http_head_add_field(&h, lim, "est-Id", 6), 0);
  ASSERT_EQ(http_head_add_value(&h, lim, "12", 2), 0);
  ASSERT_EQ(http_head_add_value(&h, lim, "34 \t", 4), 0);
  add("Host", "a");
  add("host", "b");
  EXPECT_EQ(http_head_url(h), "/path");
  std::string_view v;
  ASSERT_TRUE(http_head_get(h, "x-request-id", &v));
  EXPECT_EQ(v, "1234");
  ASSERT_TRUE(http_head_get(h, "HOST", &v));
  EXPECT_EQ(v, "a");
  EXPECT_FALSE(http_head_get(h, "X-Request", &v));
  http_head_reset(&h);
  EXPECT_FALSE(http_head_get(h, "Host", &v));
  EXPECT_EQ(http_head_url(h), "");
}

TEST(HttpHead, EachHeaderIsKeptAsItsWireLine) {
  HttpHead h;
  HttpHeadLimits lim;
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  llhttp_t parser;
  llhttp_init(&parser, HTTP_REQUEST, &settings);
  ASSERT_EQ(http_head_add_url(&h, lim, "/", 1), 0);
  ASSERT_EQ(http_head_add_field(&h, lim, "Ho", 2), 0);
  ASSERT_EQ(http_head_add_field(&h, lim, "st", 2), 0);
  ASSERT_EQ(http_head_add_value(&h, lim, "a.", 2), 0);
  ASSERT_EQ(http_head_add_value(&h, lim, "b", 1), 0);
  ASSERT_EQ(http_head_add_field(&h, lim, "X-Empty", 7), 0);
  ASSERT_EQ(http_head_add_value(&h, lim, "", 0), 0);
  ASSERT_EQ(http_head_add_field(&h, lim, "X-None", 6), 0);  // no value piece at all
  http_head_finish(&h, &parser);
  ASSERT_EQ(h.headers.size(), 3u);
  EXPECT_EQ(http_head_line(h, h.headers[0]), "Host: a.b\r\n");
  EXPECT_EQ(http_head_value(h, h.headers[0]), "a.b");
  EXPECT_EQ(http_head_line(h, h.headers[1]), "X-Empty: \r\n");
  EXPECT_EQ(http_head_line(h, h.headers[2]), "X-None: \r\n");
  EXPECT_EQ(http_head_name(h, h.headers[2]), "X-None");
  EXPECT_EQ(http_head_value(h, h.headers[2]), "");
  EXPECT_EQ(h.text_bytes, 1u + 4 + 3 + 7 + 6) << "limits count the text, not the separators";
  // A trailer field after the head is finished is a complete line of its own.
  ASSERT_EQ(http_head_add_field(&h, lim, "X-Trailer", 9), 0);
  ASSERT_EQ(http_head_add_value(&h, lim, "t", 1), 0);
  ASSERT_EQ(h.headers.size(), 4u);
  EXPECT_EQ(http_head_line(h, h.headers[3]), "X-Trailer: t\r\n");
  EXPECT_EQ(http_head_line(h, h.headers[2]), "X-None: \r\n");
}

TEST(HttpHead, IequalsFoldsAsciiLettersOnly) {
  EXPECT_TRUE(http_iequals("X-Request-Id", "x-request-id"));
  EXPECT_TRUE(http_iequals("", ""));
  EXPECT_FALSE(http_iequals("host", "hos"));
  EXPECT_FALSE(http_iequals("a^", "a~"));  // 0x5E and 0x7E differ by the case bit, not letters
  EXPECT_FALSE(http_iequals("@", "`"));
  EXPECT_FALSE(http_iequals("[", "{"));
  EXPECT_FALSE(http_iequals("\xc9", "\xe9"));  // not ASCII
}

TEST(HttpHead, HopByHopHeaders) {
  for (const char* name : {"Connection", "keep-alive", "Proxy-Connection", "TE", "Upgrade",
                           "Proxy-Authenticate", "Proxy-Authorization"})
    EXPECT_TRUE(http_is_hop_by_hop(name)) << name;
  // Trailer announces the trailer fields to the recipient: RFC 9110 §7.6.1 does not list it (RFC
  // 2616's "Trailers" in its hop-by-hop list meant TE's token).
  for (const char* name : {"Content-Length", "Transfer-Encoding", "Host", "X-Request-Id", "Te2",
                           "Trailer"})
    EXPECT_FALSE(http_is_hop_by_hop(name)) << name;
}

TEST(HttpHead, ConnectionOptionsNameFurtherHopByHopHeaders) {
  HttpHead h;
  HttpHeadLimits lim;
  auto add = [&](std::string_view name, std::string_view value) {
    ASSERT_EQ(http_head_add_field(&h, lim, name.data(), name.size()), 0);
    ASSERT_EQ(http_head_add_value(&h, lim, value.data(), value.size()), 0);
  };
  add("Connection", "keep-alive");
  EXPECT_EQ(http_connection_options(h), "");
  add("connection", " Close, X-Secret ,,\tupgrade, x-trace");
  add("Host", "a, b");
  EXPECT_EQ(http_connection_options(h), "X-Secret,x-trace");
  EXPECT_TRUE(http_list_has("X-Secret,x-trace", "x-secret"));
  EXPECT_TRUE(http_list_has("X-Secret,x-trace", "X-TRACE"));
  EXPECT_FALSE(http_list_has("X-Secret,x-trace", "X-Secre"));
  EXPECT_FALSE(http_list_has("", "Host"));
  EXPECT_TRUE(http_connection_value_has_options("close, X-Secret"));
  EXPECT_FALSE(http_connection_value_has_options(" keep-alive , Upgrade"));
  EXPECT_FALSE(http_connection_value_has_options(""));
}

// A Connection header never makes the framing or Host hop-by-hop: forwarding the body without the
// Content-Length that framed it let the next hop read it as another request (smuggling).
TEST(HttpHead, ConnectionNeverNamesFramingOrHost) {
  HttpHead h;
  HttpHeadLimits lim;
  auto add = [&](std::string_view name, std::string_view value) {
    ASSERT_EQ(http_head_add_field(&h, lim, name.data(), name.size()), 0);
    ASSERT_EQ(http_head_add_value(&h, lim, value.data(), value.size()), 0);
  };
  add("Host", "a");
  add("Connection", "Content-Length, transfer-encoding, HOST, x-drop");
  add("Content-Length", "5");
  add("Transfer-Encoding", "chunked");
  add("X-Drop", "1");
  EXPECT_EQ(http_connection_options(h), "x-drop");
  EXPECT_FALSE(http_connection_value_has_options("content-length, Host, Transfer-Encoding"));
  std::string out;
  http_append_forwarded(&out, h, [](std::string_view, const HttpHeader&) { return false; });
  EXPECT_EQ(out, "Host: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n");
}

TEST(HttpHead, AppendForwardedDropsHopByHopConnectionNamedAndSkippedHeaders) {
  HttpHead h;
  HttpHeadLimits lim;
  auto add = [&](std::string_view name, std::string_view value) {
    ASSERT_EQ(http_head_add_field(&h, lim, name.data(), name.size()), 0);
    ASSERT_EQ(http_head_add_value(&h, lim, value.data(), value.size()), 0);
  };
  auto skip_b = [](std::string_view name, const HttpHeader&) { return http_iequals(name, "b"); };
  add("X-Secret", "1");
  add("A", "2");
  add("Keep-Alive", "3");
  add("B", "4");
  add("Connection", "keep-alive");
  std::string out = "head\r\n";
  http_append_forwarded(&out, h, skip_b);
  EXPECT_EQ(out, "head\r\nX-Secret: 1\r\nA: 2\r\n");
  add("connection", "x-secret");  // now X-Secret is hop-by-hop too, though it came first
  out = "head\r\n";
  http_append_forwarded(&out, h, skip_b);
  EXPECT_EQ(out, "head\r\nA: 2\r\n");
}

}  // namespace
