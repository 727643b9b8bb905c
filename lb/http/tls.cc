#include "lb/http/tls.h"

#include <cstdlib>
#include <cstring>

#include "lb/http/http_conn.h"
#include "lb/log.h"

#if RINGLB_TLS

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct TlsContext {
  SSL_CTX* ctx = nullptr;
  ~TlsContext() { SSL_CTX_free(ctx); }
};

namespace {

// Bytes read from the socket at once, into a buffer shared by the connections of one thread: the
// transport consumes them (or keeps what is left, in its own spill) before the next read on the
// thread, so a connection holds no ciphertext buffer while it is idle.
constexpr size_t kReadChunk = 64 * 1024;
// Plaintext is coalesced into records of up to this many bytes (TLS's largest), so a response head
// and its first body bytes go out as one record, not two.
constexpr size_t kRecordMax = 16 * 1024;

// The state of one TLS connection (HttpConn::transport_state).
struct TlsConn {
  SSL* ssl = nullptr;
  const char* cur = nullptr;  // the socket read being consumed (the thread's read buffer)
  size_t cur_len = 0;
  char* spill = nullptr;  // ciphertext kept from earlier reads, [spill_start, spill_end)
  size_t spill_start = 0, spill_end = 0, spill_cap = 0;
  int sock_err = 0;       // the socket ended (UV_EOF) or failed: reported once the records before it are read
  bool handshake_done = false;
  bool failed = false;    // a TLS error: nothing more is read or written
  TlsAlpn alpn = TlsAlpn::none;
};

// Per-thread buffers: the socket read buffer, and the ciphertext SSL produced since the last flush
// (flushed before the operation that produced it returns, so it never holds two connections' bytes).
struct ThreadBufs {
  char* in = nullptr;
  char* out = nullptr;
  size_t out_len = 0, out_cap = 0;
  char record[kRecordMax];
  ~ThreadBufs() {  // the thread (a worker) ends
    free(in);
    free(out);
  }
};
thread_local ThreadBufs t_bufs;

TlsConn* tls_of(const HttpConn* c) { return static_cast<TlsConn*>(c->transport_state); }

// --- The BIO: reads from the connection's spill then the current socket read; writes to the
// thread's output buffer. Never blocks: an empty input is a retryable read. ---------------------

int bio_read(BIO* b, char* out, int len) {
  TlsConn* t = static_cast<TlsConn*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  size_t want = static_cast<size_t>(len);
  if (t->spill_end > t->spill_start) {
    size_t n = std::min(want, t->spill_end - t->spill_start);
    memcpy(out, t->spill + t->spill_start, n);
    t->spill_start += n;
    if (t->spill_start == t->spill_end) t->spill_start = t->spill_end = 0;
    return static_cast<int>(n);
  }
  if (t->cur_len > 0) {
    size_t n = std::min(want, t->cur_len);
    memcpy(out, t->cur, n);
    t->cur += n;
    t->cur_len -= n;
    return static_cast<int>(n);
  }
  BIO_set_retry_read(b);
  return -1;
}

int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  ThreadBufs& tb = t_bufs;
  size_t n = static_cast<size_t>(len);
  if (tb.out_len + n > tb.out_cap) {
    size_t cap = std::max(tb.out_cap * 2, tb.out_len + n);
    cap = std::max<size_t>(cap, 2 * kRecordMax);
    char* p = static_cast<char*>(realloc(tb.out, cap));
    if (p == nullptr) return -1;
    tb.out = p;
    tb.out_cap = cap;
  }
  memcpy(tb.out + tb.out_len, data, n);
  tb.out_len += n;
  return len;
}

long bio_ctrl(BIO*, int cmd, long, void*) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* bio_method() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringlb");
    BIO_meth_set_read(bm, bio_read);
    BIO_meth_set_write(bm, bio_write);
    BIO_meth_set_ctrl(bm, bio_ctrl);
    BIO_meth_set_create(bm, bio_create);
    return bm;
  }();
  return m;
}

// Sends what SSL wrote since the last flush, which carries given bytes of the owner's plaintext.
int flush(HttpConn* c, size_t given) {
  ThreadBufs& tb = t_bufs;
  if (tb.out_len == 0) return 0;
  int rc = http_conn_write_wire(c, tb.out, tb.out_len, given);
  tb.out_len = 0;
  return rc;
}

// The reason of the last OpenSSL error on this thread, for a log line; clears the error queue
// (SSL_get_error needs it empty before the next operation).
std::string last_error() {
  unsigned long e = ERR_peek_last_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

// A TLS error on c: the alert SSL wrote goes out, the connection reads and writes nothing more.
ssize_t tls_fail(HttpConn* c, TlsConn* t, const char* what) {
  t->failed = true;
  std::string why = last_error();
  flush(c, 0);
  LOG_DEBUG("tls: %s failed, connection closed: %s", what, why.c_str());
  return UV_EPROTO;
}

void on_alloc(HttpConn*, uv_buf_t* buf) {
  ThreadBufs& tb = t_bufs;
  if (tb.in == nullptr) tb.in = static_cast<char*>(malloc(kReadChunk));
  *buf = uv_buf_init(tb.in, tb.in == nullptr ? 0 : static_cast<unsigned>(kReadChunk));
}

void on_input(HttpConn* c, const char* data, ssize_t nread) {
  TlsConn* t = tls_of(c);
  if (nread < 0) {
    if (t->sock_err == 0) t->sock_err = static_cast<int>(nread);
    return;
  }
  t->cur = data;
  t->cur_len = static_cast<size_t>(nread);
}

// Runs the handshake, then decrypts. The output SSL produced meanwhile (handshake messages,
// session tickets, alerts) is flushed before returning.
ssize_t on_read(HttpConn* c, char* dst, size_t cap) {
  TlsConn* t = tls_of(c);
  if (t->failed) return UV_EPROTO;
  if (!t->handshake_done) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ) {
        flush(c, 0);
        return t->sock_err;  // 0: wait for more; else the peer left mid-handshake
      }
      return tls_fail(c, t, "handshake");
    }
    flush(c, 0);
    t->handshake_done = true;
    const unsigned char* proto = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(t->ssl, &proto, &len);
    if (len == 8 && memcmp(proto, "http/1.1", 8) == 0) t->alpn = TlsAlpn::http11;
    else if (len == 2 && memcmp(proto, "h2", 2) == 0) t->alpn = TlsAlpn::h2;
  }
  // Nothing to decrypt: SSL_read is not called, since it would allocate its record buffer to wait
  // in (SSL_MODE_RELEASE_BUFFERS frees it only once it holds nothing), 16 KiB per idle connection.
  if (t->cur_len == 0 && t->spill_end == t->spill_start && !SSL_has_pending(t->ssl)) return t->sock_err;
  size_t n = 0;
  int r = SSL_read_ex(t->ssl, dst, cap, &n);
  if (r == 1) {
    flush(c, 0);
    return static_cast<ssize_t>(n);
  }
  int e = SSL_get_error(t->ssl, r);
  flush(c, 0);
  if (e == SSL_ERROR_WANT_READ) return t->sock_err;
  if (e == SSL_ERROR_ZERO_RETURN) {  // close_notify
    ERR_clear_error();
    return UV_EOF;
  }
  return tls_fail(c, t, "read");
}

// Keeps the unread rest of the socket read in the connection's spill (the thread's buffer is
// reused by the next read). Bounded: the HTTP layer stops reading the socket while its plaintext
// buffer is full, which is when whole records stay unread; otherwise only a partial record stays.
void on_keep(HttpConn* c) {
  TlsConn* t = tls_of(c);
  if (t->cur_len > 0) {
    size_t have = t->spill_end - t->spill_start;
    if (t->spill_start > 0) {
      memmove(t->spill, t->spill + t->spill_start, have);
      t->spill_start = 0;
      t->spill_end = have;
    }
    if (have + t->cur_len > t->spill_cap) {
      size_t cap = have + t->cur_len;
      char* p = static_cast<char*>(realloc(t->spill, cap));
      if (p == nullptr) {  // out of memory: the connection cannot go on
        t->failed = true;
        t->cur_len = 0;
        return;
      }
      t->spill = p;
      t->spill_cap = cap;
    }
    memcpy(t->spill + t->spill_end, t->cur, t->cur_len);
    t->spill_end += t->cur_len;
  }
  t->cur = nullptr;
  t->cur_len = 0;
  if (t->spill_end == t->spill_start && t->spill != nullptr) {  // idle: no buffer held
    free(t->spill);
    t->spill = nullptr;
    t->spill_start = t->spill_end = t->spill_cap = 0;
  }
}

// Encrypts the owner's buffers, small ones coalesced into records of up to kRecordMax bytes, then
// sends the records; write_queued counts the owner's bytes until their records are on the wire.
int on_write(HttpConn* c, const uv_buf_t* bufs, unsigned n) {
  TlsConn* t = tls_of(c);
  if (t->failed || !t->handshake_done) return UV_EPROTO;
  ThreadBufs& tb = t_bufs;
  size_t total = 0, pending = 0;
  size_t written;
  auto put = [&](const char* p, size_t len) {
    return len == 0 || SSL_write_ex(t->ssl, p, len, &written) == 1;
  };
  for (unsigned i = 0; i < n; i++) {
    const char* p = bufs[i].base;
    size_t len = bufs[i].len;
    total += len;
    if (pending + len <= kRecordMax) {
      memcpy(tb.record + pending, p, len);
      pending += len;
      continue;
    }
    // Fill the record up, send it, then the rest directly (whole records) or into the next one.
    size_t fill = kRecordMax - pending;
    memcpy(tb.record + pending, p, fill);
    if (!put(tb.record, kRecordMax)) return static_cast<int>(tls_fail(c, t, "write"));
    p += fill;
    len -= fill;
    pending = 0;
    size_t whole = len - len % kRecordMax;
    if (whole > 0 && !put(p, whole)) return static_cast<int>(tls_fail(c, t, "write"));
    memcpy(tb.record, p + whole, len - whole);
    pending = len - whole;
  }
  if (!put(tb.record, pending)) return static_cast<int>(tls_fail(c, t, "write"));
  return flush(c, total);
}

// close_notify, if the socket takes it at once (a close never waits for it).
void on_shutdown(HttpConn* c) {
  TlsConn* t = tls_of(c);
  if (t->failed || !t->handshake_done) return;
  SSL_shutdown(t->ssl);
  ERR_clear_error();
  ThreadBufs& tb = t_bufs;
  if (tb.out_len > 0 && uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&c->tcp)) == 0) {
    uv_buf_t b = uv_buf_init(tb.out, static_cast<unsigned>(tb.out_len));
    uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  }
  tb.out_len = 0;
}

void on_free(HttpConn* c) {
  TlsConn* t = tls_of(c);
  SSL_free(t->ssl);  // and its BIO
  free(t->spill);
  delete t;
}

const HttpTransport kTlsTransport = {on_alloc, on_input, on_read, on_keep, on_write, on_shutdown, on_free};

// ALPN: the one place the application protocol is chosen. http/1.1 until an HTTP/2 owner exists;
// then h2 goes first in kServerProtos. A client that offers neither goes on without ALPN (HTTP/1.1).
int on_alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                   unsigned inlen, void*) {
  static const unsigned char kServerProtos[] = "\x08http/1.1";
  unsigned char* sel = nullptr;
  if (SSL_select_next_proto(&sel, outlen, kServerProtos, sizeof kServerProtos - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

// A key file with a passphrase would make OpenSSL prompt on the terminal: refuse instead.
int no_passphrase(char*, int, int, void*) { return 0; }

}  // namespace

std::shared_ptr<TlsContext> tls_context_load(const std::string& cert, const std::string& key,
                                             const char* flag_cert, const char* flag_key,
                                             std::string* err) {
  ERR_clear_error();
  auto t = std::make_shared<TlsContext>();
  t->ctx = SSL_CTX_new(TLS_server_method());
  if (t->ctx == nullptr) {
    *err = std::string("TLS: cannot create a context: ") + last_error();
    return nullptr;
  }
  SSL_CTX* ctx = t->ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Buffers are freed while a connection has nothing in flight: an idle TLS client costs its SSL
  // object, not 2 x 16 KiB of record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // Resumption by tickets only: they are stateless, so the workers share nothing for it (a server
  // session cache is locked across threads). The ticket keys are the context's own, drawn when it
  // is made: a reload rotates them. One ticket per TLS 1.3 handshake (OpenSSL's default is two).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, nullptr);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    *err = std::string(flag_cert) + " " + cert + ": cannot load the certificate chain: " + last_error();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    *err = std::string(flag_key) + " " + key + ": cannot load the private key: " + last_error();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    *err = std::string(flag_key) + " " + key + ": the key does not match " + flag_cert + " " + cert +
           ": " + last_error();
    return nullptr;
  }
  return t;
}

int tls_attach(HttpConn* c, const TlsContext* ctx) {
  TlsConn* t = new (std::nothrow) TlsConn();
  if (t == nullptr) return UV_ENOMEM;
  t->ssl = SSL_new(ctx->ctx);
  BIO* bio = t->ssl != nullptr ? BIO_new(bio_method()) : nullptr;
  if (bio == nullptr) {
    SSL_free(t->ssl);
    delete t;
    ERR_clear_error();
    return UV_ENOMEM;
  }
  BIO_set_data(bio, t);
  SSL_set_bio(t->ssl, bio, bio);  // one BIO both ways, owned by the SSL
  SSL_set_accept_state(t->ssl);
  c->transport = &kTlsTransport;
  c->transport_state = t;
  return 0;
}

bool tls_on(const HttpConn* c) { return c->transport == &kTlsTransport; }

bool tls_handshake_done(const HttpConn* c) { return tls_on(c) && tls_of(c)->handshake_done; }

TlsAlpn tls_alpn(const HttpConn* c) { return tls_on(c) ? tls_of(c)->alpn : TlsAlpn::none; }

const char* tls_version(const HttpConn* c) {
  return tls_on(c) ? SSL_get_version(tls_of(c)->ssl) : "";
}

const char* tls_library_version() {
#ifdef OPENSSL_VERSION_STRING
  return OpenSSL_version(OPENSSL_VERSION_STRING);  // "3.0.19"
#else
  return OpenSSL_version(OPENSSL_VERSION);
#endif
}

#else  // built without OpenSSL: TLS cannot be turned on

struct TlsContext {};

std::shared_ptr<TlsContext> tls_context_load(const std::string&, const std::string&,
                                             const char* flag_cert, const char*, std::string* err) {
  *err = std::string(flag_cert) + ": this ringlb was built without TLS (OpenSSL not found)";
  return nullptr;
}

int tls_attach(HttpConn*, const TlsContext*) { return UV_ENOTSUP; }
bool tls_on(const HttpConn*) { return false; }
bool tls_handshake_done(const HttpConn*) { return false; }
TlsAlpn tls_alpn(const HttpConn*) { return TlsAlpn::none; }
const char* tls_version(const HttpConn*) { return ""; }
const char* tls_library_version() { return "none"; }

#endif
