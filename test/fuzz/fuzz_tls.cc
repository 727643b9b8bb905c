// fuzz_tls: a hostile TLS client against the LB's TLS server side (lb/http/tls.cc) (libFuzzer).
//
// The LB of every world terminates TLS (world_set_tls) with a certificate this target makes at start
// (EC P-256, self-signed, into temporary files that tls_context_load reads and that are removed).
// The input's first byte picks what the client does:
//   bits 0-1  mode: 0 the rest of the input is the client's bytes from the first one on (a client
//             hello, records; the seeds in corpus/fuzz_tls are real client hellos);
//             1 a real TLS client (OpenSSL over memory BIOs, in this process) completes the
//             handshake, then sends the rest as HTTP/1.1 plaintext;
//             2 the same handshake, then the rest as raw bytes on the socket (forged records);
//             3 as 1, with ALPN h2: the plaintext is the HTTP/2 preface then the rest (frames).
//   bit 2     the client offers TLS 1.2 at most (else TLS 1.3).
//   bit 3     the client ends with close_notify (else with a bare TCP half-close).
//   bit 4     the client lets the LB finish (waits until nothing moved for 20 ms) before it ends.
// Bytes 1 and 2 (modes 1-3): the plaintext goes in SSL_write calls of (byte 1 + 1) * 8 bytes, and the
// ciphertext to the socket in writes of (byte 2 + 1) * 8 bytes, so records and reads split anywhere.
// Behind the LB the recording upstream answers every request 200 with a small body.
// The oracle, checked on every input:
//  - the real client's handshake with the LB succeeds (modes 1-3);
//  - the client's TLS accepts every record the LB sends: in modes 1 and 3 nothing but data,
//    session tickets and close_notify; in mode 2 also an alert (the LB refusing a forged record);
//  - the upstream can parse every byte it receives as requests (fuzz_world: smuggling, at once);
//  - the LB closes the half-closed client without stalling, and leaves no handle open.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "lb/http/tls.h"
#include "test/fuzz/fuzz_world.h"

namespace {

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum class Mode : uint8_t { raw = 0, http = 1, records = 2, h2 = 3 };

// The server's certificate and key, made once per process; the LB's context loads them.
void make_server_context() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  if (key == nullptr || x == nullptr) abort();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365 * 10);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("fuzz"), -1,
                             -1, 0);
  X509_set_issuer_name(x, name);
  if (X509_sign(x, key, EVP_sha256()) == 0) abort();
  char cert_path[] = "/tmp/ringlb-fuzz-cert.XXXXXX";
  char key_path[] = "/tmp/ringlb-fuzz-key.XXXXXX";
  int cfd = mkstemp(cert_path), kfd = mkstemp(key_path);
  if (cfd < 0 || kfd < 0) abort();
  FILE* cf = fdopen(cfd, "w");
  FILE* kf = fdopen(kfd, "w");
  if (cf == nullptr || kf == nullptr || PEM_write_X509(cf, x) != 1 ||
      PEM_write_PrivateKey(kf, key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    abort();
  fclose(cf);
  fclose(kf);
  std::string err;
  std::shared_ptr<TlsContext> ctx = tls_context_load(cert_path, key_path, "--tls-cert", "--tls-key", &err);
  unlink(cert_path);
  unlink(key_path);
  if (ctx == nullptr) {
    fprintf(stderr, "fuzz: %s\n", err.c_str());
    abort();
  }
  world_set_tls(ctx);
  X509_free(x);
  EVP_PKEY_free(key);
}

SSL_CTX* client_context() {
  static SSL_CTX* ctx = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_client_method());
    if (c == nullptr) abort();
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    return c;
  }();
  return ctx;
}

struct Run {
  Mode mode = Mode::raw;
  bool tls12 = false, close_notify = false, linger = false;
  size_t piece = 8, split = 8;
  std::string payload;
  SSL* ssl = nullptr;
  BIO* rbio = nullptr;  // the LB's ciphertext, for the client's SSL
  BIO* wbio = nullptr;  // the client's ciphertext, for the socket
  size_t fed = 0;       // bytes of client_in given to rbio
  bool handshake_done = false;
  bool sent = false;    // the payload went out
  bool ended = false;   // the client ended its side
  std::string plain;    // what the client decrypted
  std::string ssl_error;  // the client's TLS refused the LB's bytes (empty: never)
  bool peer_alert = false;  // ... because the LB sent an alert
  bool handshake_failed = false;
  bool connected = false;
};

// Sends the client's pending ciphertext to the socket, in writes of run->split bytes.
void send_cipher(World* w, Run* r) {
  char buf[4096];
  std::string out;
  int n;
  while ((n = BIO_read(r->wbio, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  for (size_t i = 0; i < out.size(); i += r->split)
    world_client_write(w, out.data() + i, std::min(r->split, out.size() - i));
}

void client_end(World* w, Run* r) {
  if (r->ended) return;
  r->ended = true;
  if (r->ssl != nullptr && r->handshake_done && r->close_notify) {
    SSL_shutdown(r->ssl);
    ERR_clear_error();
    send_cipher(w, r);
  }
  world_client_shutdown(w);
}

void send_payload(World* w, Run* r) {
  r->sent = true;
  if (r->mode == Mode::records) {
    world_client_write(w, r->payload.data(), r->payload.size());
  } else {
    std::string text = r->mode == Mode::h2 ? std::string(kPreface) + r->payload : r->payload;
    for (size_t i = 0; i < text.size(); i += r->piece) {
      size_t written = 0;
      if (SSL_write_ex(r->ssl, text.data() + i, std::min(r->piece, text.size() - i), &written) != 1) {
        ERR_clear_error();
        break;
      }
    }
    send_cipher(w, r);
  }
  if (!r->linger) client_end(w, r);
}

// Runs the client's TLS over what the LB sent so far: the handshake, then reads.
void drive(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  if (r->ssl == nullptr) return;
  if (r->fed < w->client_in.size()) {
    BIO_write(r->rbio, w->client_in.data() + r->fed, static_cast<int>(w->client_in.size() - r->fed));
    r->fed = w->client_in.size();
  }
  if (!r->handshake_done) {
    int rc = SSL_do_handshake(r->ssl);
    if (rc != 1) {
      int e = SSL_get_error(r->ssl, rc);
      if (e != SSL_ERROR_WANT_READ && !r->handshake_failed) {
        r->handshake_failed = true;
        unsigned long code = ERR_peek_error();
        char buf[256] = "";
        if (code != 0) ERR_error_string_n(code, buf, sizeof buf);
        r->ssl_error = buf;
        ERR_clear_error();
      }
      send_cipher(w, r);
      return;
    }
    r->handshake_done = true;
    send_cipher(w, r);
    send_payload(w, r);
  }
  char buf[4096];
  for (;;) {
    size_t n = 0;
    int rc = SSL_read_ex(r->ssl, buf, sizeof buf, &n);
    if (rc == 1) {
      r->plain.append(buf, n);
      continue;
    }
    int e = SSL_get_error(r->ssl, rc);
    if (e == SSL_ERROR_SSL && r->ssl_error.empty()) {
      unsigned long code = ERR_peek_error();
      // Reasons from 1000 on are alerts the peer sent (SSL_AD_REASON_OFFSET).
      r->peer_alert = ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) >= 1000;
      char ebuf[256] = "";
      ERR_error_string_n(code, ebuf, sizeof ebuf);
      r->ssl_error = ebuf;
    }
    ERR_clear_error();
    break;
  }
  send_cipher(w, r);  // a key update's answer, if any
}

void on_connected(World* w) {
  Run* r = static_cast<Run*>(w->ctx);
  r->connected = true;
  if (r->mode == Mode::raw) {
    world_client_write(w, r->payload.data(), r->payload.size());
    if (!r->linger) client_end(w, r);
    return;
  }
  drive(w);
}

void answer(World*, const UpRequest& req, std::string* out, bool* shutdown_after) {
  std::string body = "seq " + std::to_string(req.seq);
  *out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  if (req.method != HTTP_HEAD) out->append(body);
  *shutdown_after = false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  make_server_context();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  fuzz_set_input(data, len);
  Run run;
  size_t skip = 1;
  if (len > 0) {
    run.mode = static_cast<Mode>(data[0] & 3);
    run.tls12 = data[0] & 4;
    run.close_notify = data[0] & 8;
    run.linger = data[0] & 16;
  }
  if (run.mode != Mode::raw && len >= 3) {
    run.piece = (static_cast<size_t>(data[1]) + 1) * 8;
    run.split = (static_cast<size_t>(data[2]) + 1) * 8;
    skip = 3;
  }
  if (len > skip) run.payload.assign(reinterpret_cast<const char*>(data) + skip, len - skip);
  if (run.mode != Mode::raw) {
    run.ssl = SSL_new(client_context());
    run.rbio = BIO_new(BIO_s_mem());
    run.wbio = BIO_new(BIO_s_mem());
    if (run.ssl == nullptr || run.rbio == nullptr || run.wbio == nullptr) abort();
    SSL_set_bio(run.ssl, run.rbio, run.wbio);
    SSL_set_connect_state(run.ssl);
    if (run.tls12) SSL_set_max_proto_version(run.ssl, TLS1_2_VERSION);
    static const unsigned char kH2[] = "\x02h2\x08http/1.1";
    static const unsigned char kHttp11[] = "\x08http/1.1";
    if (run.mode == Mode::h2) SSL_set_alpn_protos(run.ssl, kH2, sizeof kH2 - 1);
    else SSL_set_alpn_protos(run.ssl, kHttp11, sizeof kHttp11 - 1);
  }
  World* w = world_start(answer, &run);
  w->on_client_connected = on_connected;
  w->on_client_data = drive;
  world_client_connect(w);
  // Connected (raw), or a real client's handshake done (bounded: nothing moving for 1.5 s is a stall).
  uint64_t seen = w->progress, since = uv_now(&w->loop);
  while ((run.mode == Mode::raw ? !run.connected : !run.sent && !run.handshake_failed) && w->client_open) {
    uv_run(&w->loop, UV_RUN_ONCE);
    if (w->progress != seen) {
      seen = w->progress;
      since = uv_now(&w->loop);
    } else if (uv_now(&w->loop) - since > 1500) {
      uv_run(&w->loop, UV_RUN_NOWAIT);
      if (w->progress == seen)
        fuzz_breach(w, data, len, "the %s stalled: nothing moved for 1.5 s",
                    run.mode == Mode::raw ? "connect" : "handshake");
    }
  }
  if (run.linger) world_run_quiet(w, 20, 2000);
  client_end(w, &run);  // (a failed handshake: a bare half-close)
  bool finished = world_run_client(w, 1500);
  if (w->client_failed) {
    SSL_free(run.ssl);
    world_stop(w);
    return 0;
  }
  if (!finished)
    fuzz_breach(w, data, len, "the LB left the half-closed TLS client open with nothing moving for 1.5 s");
  if (run.mode != Mode::raw) {
    if (!run.handshake_done)
      fuzz_breach(w, data, len, "a real client's handshake with the LB did not complete (%s)",
                  run.ssl_error.empty() ? "the LB closed first" : run.ssl_error.c_str());
    if (!run.ssl_error.empty() && !(run.mode == Mode::records && run.peer_alert))
      fuzz_breach(w, data, len, "the client's TLS refused the LB's records: %s", run.ssl_error.c_str());
  }
  SSL_free(run.ssl);
  world_stop(w);
  fuzz_set_input(nullptr, 0);
  return 0;
}
