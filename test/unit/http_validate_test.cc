// http_validate: the verdict on request bytes, table-driven. Each case is parsed by llhttp (never
// lenient, as http_conn does) into an HttpHead; a parse error gets http_parse_error_verdict, a
// complete head http_validate_request. Also: absolute-form targets become origin-form.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>

#include "lb/http/http_head.h"
#include "lb/http/http_validate.h"

namespace {

struct Parsed {
  HttpHead head;
  HttpHeadLimits limits;
  bool complete = false;
};

int on_url(llhttp_t* p, const char* at, size_t n) {
  Parsed* r = static_cast<Parsed*>(p->data);
  return http_head_add_url(&r->head, r->limits, at, n);
}
int on_field(llhttp_t* p, const char* at, size_t n) {
  Parsed* r = static_cast<Parsed*>(p->data);
  return http_head_add_field(&r->head, r->limits, at, n);
}
int on_value(llhttp_t* p, const char* at, size_t n) {
  Parsed* r = static_cast<Parsed*>(p->data);
  return http_head_add_value(&r->head, r->limits, at, n);
}
int on_headers_complete(llhttp_t* p) {
  Parsed* r = static_cast<Parsed*>(p->data);
  http_head_finish(&r->head, p);
  r->complete = true;
  return HPE_PAUSED;  // as http_conn: the verdict comes before the body is parsed
}

// The verdict the proxy gives request bytes: llhttp's error, or the validation of the head.
HttpVerdict verdict_of(std::string_view bytes, Parsed* r) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_url = on_url;
  s.on_header_field = on_field;
  s.on_header_value = on_value;
  s.on_headers_complete = on_headers_complete;
  llhttp_t p;
  llhttp_init(&p, HTTP_REQUEST, &s);
  p.data = r;
  http_head_reset(&r->head);
  llhttp_errno_t e = llhttp_execute(&p, bytes.data(), bytes.size());
  if (e != HPE_OK && e != HPE_PAUSED)
    return http_parse_error_verdict(e, llhttp_get_error_reason(&p));
  if (!r->complete) return HttpVerdict{-1, "incomplete"};
  return http_validate_request(r->head);
}

struct Case {
  const char* what;
  std::string bytes;
  int status;
};

TEST(HttpValidate, RequestsAndTheirVerdicts) {
  const Case cases[] = {
      {"plain GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
      {"HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", 0},
      {"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
      {"Chunked, blanks", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n", 0},
      {"Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", 0},
      {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0},
      {"absolute-form", "GET http://a.b:80/p?q HTTP/1.1\r\nHost: x\r\n\r\n", 0},
      {"absolute-form https, no path", "GET HTTPS://a.b HTTP/1.1\r\nHost: x\r\n\r\n", 0},
      {"obs-text in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\n\r\n", 0},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 0},
      {"Connection names framing",
       "GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n", 0},
      {"empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"space inside a name", "GET / HTTP/1.1\r\nHost: a\r\nX-A b: 1\r\n\r\n", 400},
      {"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505},
      {"HTTP/1.x", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400},
      {"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX\t: 1\r\n\r\n", 400},
      {"two Host", "GET / HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n", 400},
      {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400},
      {"HTTP/0.9", "GET /\r\n\r\n", 400},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
      {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
      {"TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
       501},
      {"TE chunked, chunked",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501},
      {"two TE headers",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       501},
      {"CL and TE",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
       400},
      {"TE and CL",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
       400},
      {"Content-Length: 1, 2", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400},
      {"two Content-Length",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400},
      {"NUL in a value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35), 400},
      {"CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400},
      {"bare LF in the headers", "GET / HTTP/1.1\r\nHost: a\nX: b\n\n", 400},
      {"target without /", "GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"* for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"absolute-form, no authority", "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"ftp URL", "GET ftp://a/p HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"HTTP/1.0 with TE", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"Transfer_Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", 400},
      {"content_length", "POST / HTTP/1.1\r\nHost: a\r\ncontent_length: 3\r\n\r\n", 400},
      {"X_Content_Length", "POST / HTTP/1.1\r\nHost: a\r\nX_Content_Length: 3\r\n\r\n", 0},
      {"Content-Length 2^63-1",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", 0},
      {"Content-Length 2^63",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400},
      {"Content-Length 2^64-1",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n", 400},
  };
  for (const Case& c : cases) {
    Parsed r;
    HttpVerdict v = verdict_of(c.bytes, &r);
    EXPECT_EQ(v.status, c.status) << c.what << ": " << (v.reason ? v.reason : "");
    if (c.status != 0) {
      EXPECT_NE(v.reason, nullptr) << c.what;
    }
  }
}

TEST(HttpValidate, AbsoluteFormBecomesOriginForm) {
  struct Target {
    const char* url;
    bool absolute;
    const char* path;
    const char* authority;
  };
  const Target cases[] = {
      {"http://a.b:8080/p?q=1", true, "/p?q=1", "a.b:8080"},
      {"HTTP://Example.com", true, "", "Example.com"},
      {"https://a?q", true, "?q", "a"},
      {"/p?q", false, "/p?q", ""},
      {"*", false, "*", ""},
  };
  for (const Target& t : cases) {
    Parsed r;
    std::string bytes = std::string("OPTIONS ") + t.url + " HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(verdict_of(bytes, &r).status, 0) << t.url;
    EXPECT_EQ(http_head_origin_form(&r.head), t.absolute) << t.url;
    EXPECT_EQ(http_head_url(r.head), t.path) << t.url;
    EXPECT_EQ(http_head_authority(r.head), t.authority) << t.url;
  }
}

TEST(HttpValidate, ParseErrorVerdicts) {
  EXPECT_EQ(http_parse_error_verdict(HPE_INVALID_VERSION, "Invalid HTTP version").status, 505);
  EXPECT_EQ(http_parse_error_verdict(HPE_INVALID_VERSION, "Invalid minor version").status, 400);
  EXPECT_EQ(http_parse_error_verdict(HPE_INVALID_TRANSFER_ENCODING, "te").status, 501);
  EXPECT_EQ(http_parse_error_verdict(HPE_INVALID_CHUNK_SIZE, "c").status, 400);
  HttpVerdict v = http_parse_error_verdict(HPE_INVALID_HEADER_TOKEN, nullptr);
  EXPECT_EQ(v.status, 400);
  EXPECT_STRNE(v.reason, "");
}

}  // namespace
