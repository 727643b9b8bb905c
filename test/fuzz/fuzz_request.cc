// fuzz_request: arbitrary client bytes through the LB's request path (libFuzzer).
//
// Each input is written by one client to a fresh LB (fuzz_world.h), which half-closes afterwards;
// the recording upstream answers every request it parses with a response that names it
// (X-Fuzz-Seq). The oracle, checked on every input:
//  - the upstream can parse every byte it receives as requests (else: smuggling, reported at once);
//  - the client's k-th response answers the input's k-th request, as a strict reference parse of the
//    input (a separate llhttp parser, the LB's strictness) frames them: a response from the upstream
//    names the upstream's next request, and that request is the client's k-th one (method, target and
//    body, so each body length matches what was parsed from the client); an LB-made response may
//    follow a request forwarded in part only if the client's request was itself cut or malformed;
//  - the upstream parsed no request beyond those (no complete request the client got no answer for),
//    and the LB completed exactly as many exchanges with its replica as the upstream parsed requests;
//  - the client's parser accepts every byte the LB sent back;
//  - the LB closes the half-closed client without stalling, and leaves no handle open.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "test/fuzz/fuzz_world.h"

namespace {

// One message as a strict parser frames it.
struct Msg {
  llhttp_method_t method = HTTP_GET;
  std::string url;
  std::string body;
  bool complete = false;
  // Responses only.
  int status = 0;
  int seq = -1;  // X-Fuzz-Seq: the upstream's request number; -1 when the LB made the response
  bool interim = false;
};

struct RefParse {
  std::vector<Msg> msgs;
  std::string field, value;
  bool in_field = false;
  const std::vector<Msg>* requests = nullptr;  // response side: which request each one answers
  size_t finals = 0;                           // response side: final responses begun
  bool error = false;
  std::string error_reason;
};

RefParse* ref_of(llhttp_t* p) { return static_cast<RefParse*>(p->data); }

void header_done(RefParse* r) {
  if (r->field.empty()) return;
  if (!r->msgs.empty() && strcasecmp(r->field.c_str(), "x-fuzz-seq") == 0)
    r->msgs.back().seq = atoi(r->value.c_str());
  r->field.clear();
  r->value.clear();
}

int on_message_begin(llhttp_t* p) {
  RefParse* r = ref_of(p);
  r->msgs.emplace_back();
  r->field.clear();
  r->value.clear();
  return 0;
}
int on_url(llhttp_t* p, const char* at, size_t len) {
  ref_of(p)->msgs.back().url.append(at, len);
  return 0;
}
int on_header_field(llhttp_t* p, const char* at, size_t len) {
  RefParse* r = ref_of(p);
  if (!r->in_field) header_done(r);
  r->in_field = true;
  r->field.append(at, len);
  return 0;
}
int on_header_value(llhttp_t* p, const char* at, size_t len) {
  RefParse* r = ref_of(p);
  r->in_field = false;
  r->value.append(at, len);
  return 0;
}
int on_headers_complete(llhttp_t* p) {
  RefParse* r = ref_of(p);
  header_done(r);
  r->in_field = false;
  Msg& m = r->msgs.back();
  m.method = static_cast<llhttp_method_t>(p->method);
  if (p->type != HTTP_RESPONSE) return 0;
  m.status = p->status_code;
  if (m.status >= 100 && m.status < 200) {
    m.interim = true;  // 100 Continue and friends: the final response follows
    return 1;
  }
  size_t k = r->finals++;
  bool head = k < r->requests->size() && (*r->requests)[k].method == HTTP_HEAD;
  return head || m.status == 204 || m.status == 304 ? 1 : 0;
}
int on_body(llhttp_t* p, const char* at, size_t len) {
  ref_of(p)->msgs.back().body.append(at, len);
  return 0;
}
int on_message_complete(llhttp_t* p) {
  ref_of(p)->msgs.back().complete = true;
  return 0;
}

const llhttp_settings_t* settings() {
  static llhttp_settings_t s;
  static bool init = false;
  if (!init) {
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    init = true;
  }
  return &s;
}

// Frames bytes as a strict llhttp parser of the given type does, going on after an upgrade request
// (this target's upstream never answers 101, so the LB answers an upgrade request as an ordinary one
// and then closes: what the client sent after it goes unanswered, which the oracle allows); stops at
// the first error. eof: the stream ended there.
void ref_parse(RefParse* r, llhttp_type_t type, const char* data, size_t len, bool eof) {
  llhttp_t p;
  llhttp_init(&p, type, settings());
  p.data = r;
  while (len > 0) {
    llhttp_errno_t e = llhttp_execute(&p, data, len);
    if (e == HPE_OK) break;
    if (e == HPE_PAUSED_UPGRADE) {
      const char* pos = llhttp_get_error_pos(&p);
      len -= static_cast<size_t>(pos - data);
      data = pos;
      llhttp_resume_after_upgrade(&p);
      continue;
    }
    r->error = true;
    r->error_reason = llhttp_get_error_reason(&p);
    return;
  }
  if (eof) llhttp_finish(&p);  // completes a close-delimited response body
}

bool same_request(const UpRequest& u, const Msg& m) {
  return u.method == m.method && u.url == m.url && u.body == m.body;
}

bool prefix_of_request(const UpRequest& u, const Msg& m) {
  return u.method == m.method && u.url == m.url && u.body.size() <= m.body.size() &&
         m.body.compare(0, u.body.size(), u.body) == 0;
}

// The upstream's answer: 200 naming the request (X-Fuzz-Seq) with a small body; none for HEAD.
void answer(World*, const UpRequest& req, std::string* out, bool* shutdown_after) {
  std::string body = "seq " + std::to_string(req.seq);
  *out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nX-Fuzz-Seq: " + std::to_string(req.seq) + "\r\n\r\n";
  if (req.method != HTTP_HEAD) out->append(body);
  *shutdown_after = false;
}

struct Run {
  const uint8_t* data;
  size_t len;
};

void on_connected(World* w) {
  Run* run = static_cast<Run*>(w->ctx);
  if (run->len > 0) world_client_write(w, reinterpret_cast<const char*>(run->data), run->len);
  world_client_shutdown(w);
}

const char* method_name(llhttp_method_t m) { return llhttp_method_name(m); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  fuzz_set_input(data, len);
  Run run{data, len};
  World* w = world_start(answer, &run);
  w->on_client_connected = on_connected;
  world_client_connect(w);
  bool finished = world_run_client(w, 1500);
  if (w->client_failed) {
    world_stop(w);
    return 0;
  }
  if (!finished)
    fuzz_breach(w, data, len, "the LB left the half-closed client open with nothing moving for 1.5 s");
  uint64_t completed = world_replica_requests(w);
  uint64_t heads = w->control.totals.requests;  // complete: world_replica_requests synced

  RefParse req;
  ref_parse(&req, HTTP_REQUEST, reinterpret_cast<const char*>(data), len, true);
  RefParse resp;
  resp.requests = &req.msgs;
  ref_parse(&resp, HTTP_RESPONSE, w->client_in.data(), w->client_in.size(), true);
  if (resp.error)
    fuzz_breach(w, data, len, "the client cannot parse what the LB sent (%s)", resp.error_reason.c_str());

  const std::vector<Msg>& R = req.msgs;
  const std::vector<UpRequest>& U = w->up_reqs;
  size_t j = 0;  // the next upstream request
  size_t k = 0;  // the request the next final response answers
  size_t upstream_answers = 0;
  for (const Msg& m : resp.msgs) {
    if (m.interim) continue;
    if (!m.complete) break;  // the LB cut its last response short (checked: nothing follows)
    if (m.seq >= 0) {
      upstream_answers++;
      if (k >= R.size())
        fuzz_breach(w, data, len, "response %zu comes from the upstream (X-Fuzz-Seq %d) but the client "
                    "sent only %zu requests", k, m.seq, R.size());
      if (j >= U.size() || !U[j].complete || U[j].seq != m.seq)
        fuzz_breach(w, data, len, "response %zu carries upstream answer %d, expected the upstream's "
                    "request %zu next", k, m.seq, j);
      if (!R[k].complete || !same_request(U[j], R[k]))
        fuzz_breach(w, data, len, "request %zu: the client sent %s %s with a %zu-byte body%s, the upstream "
                    "parsed %s %s with a %zu-byte body", k, method_name(R[k].method),
                    fuzz_escape(R[k].url, 80).c_str(), R[k].body.size(), R[k].complete ? "" : " (cut)",
                    method_name(U[j].method), fuzz_escape(U[j].url, 80).c_str(), U[j].body.size());
      j++;
    } else if (k < R.size() && j < U.size() && prefix_of_request(U[j], R[k]) &&
               (!U[j].complete || same_request(U[j], R[k]))) {
      // The LB answered a request it had forwarded (all or part of it) itself.
      if (U[j].complete)
        fuzz_breach(w, data, len, "request %zu reached the upstream whole and was answered, but the "
                    "client got the LB's own %d instead", k, m.status);
      if (R[k].complete)
        fuzz_breach(w, data, len, "request %zu was complete (%zu-byte body) but the upstream got only "
                    "%zu bytes of its body before the LB answered %d", k, R[k].body.size(),
                    U[j].body.size(), m.status);
      j++;
    }
    k++;
  }
  // Upstream requests nobody got an answer for: at most one, cut short, the start of the first
  // unanswered request, and only when the client itself did not send that one whole.
  if (j < U.size()) {
    const UpRequest& u = U[j];
    bool allowed = j + 1 == U.size() && !u.complete && k < R.size() && !R[k].complete &&
                   prefix_of_request(u, R[k]);
    if (!allowed)
      fuzz_breach(w, data, len, "the upstream parsed %zu requests (%zu answered to the client); request "
                  "%zu (%s %s, %zu-byte body%s) matches no request of the client's that went unanswered",
                  U.size(), upstream_answers, j, method_name(u.method), fuzz_escape(u.url, 80).c_str(),
                  u.body.size(), u.complete ? "" : ", cut");
  }
  size_t up_complete = 0;
  for (const UpRequest& u : U) up_complete += u.complete ? 1 : 0;
  if (completed != up_complete)
    fuzz_breach(w, data, len, "the upstream answered %zu requests but the LB completed %llu exchanges "
                "with it", up_complete, static_cast<unsigned long long>(completed));
  if (heads < upstream_answers)
    fuzz_breach(w, data, len, "the LB counted %llu requests but forwarded %zu",
                static_cast<unsigned long long>(heads), upstream_answers);
  world_stop(w);
  fuzz_set_input(nullptr, 0);
  return 0;
}
