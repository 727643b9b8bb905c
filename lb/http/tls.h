// tls: TLS termination for the connections an HttpServer accepts, with OpenSSL driven through memory
// BIOs on the connection's own loop: no blocking call, no thread of its own.
//
// A TlsContext is one certificate and key pair with the settings every connection shares (TLS 1.2
// and 1.3 only, ALPN, session tickets, no renegotiation, buffers released while idle). It is
// immutable once loaded: the workers share it read-only (an SSL_CTX may be used from several
// threads) and a reload loads a new one, which new connections use while open ones keep theirs
// (each SSL holds its own reference to its context).
//
// A connection becomes a TLS connection through tls_attach (HttpServerConfig::tls_attach, called by
// the server before the connection reads). From then on the HTTP layer reads ciphertext from the
// socket, hands it to the transport and parses the plaintext that comes out; writes are encrypted
// and then go to the socket as before (lb/http/http_conn.h, "Transport"). The handshake runs inside
// that read path, under the header timeout the server arms at accept: a client that stalls
// mid-handshake is closed then; one that sends something other than a TLS 1.2+ client hello gets an
// alert and is closed (its owner sees UV_EPROTO through on_error), with a debug log line.
#pragma once

#include <memory>
#include <string>
#include <string_view>

struct HttpConn;
struct TlsContext;

// Application protocols ALPN may select. tls_alpn_select (tls.cc) is the one place that chooses:
// http/1.1 until an HTTP/2 owner exists, even when the client offers h2 first.
enum class TlsAlpn : unsigned char { none, http11, h2 };

// Loads cert (a PEM chain, leaf first) and key (a PEM private key, unencrypted) into a new context.
// Blocking file reads: for start-up and the reload on the control loop. Returns null with *err one
// line naming the file at fault ("FILE: cannot load the certificate chain: REASON") on failure.
// The names flag_cert and flag_key are the options they came from, for that line.
std::shared_ptr<TlsContext> tls_context_load(const std::string& cert, const std::string& key,
                                             const char* flag_cert, const char* flag_key,
                                             std::string* err);

// Makes c, an accepted connection that has not read yet, a TLS server connection under ctx.
// Returns 0 or a negative libuv code (UV_ENOMEM); the connection is then plain and should be closed.
// The TLS state is freed with the connection (its on_close).
int tls_attach(HttpConn* c, const TlsContext* ctx);

// True once c's handshake completed.
bool tls_handshake_done(const HttpConn* c);
// The protocol ALPN selected for c: none until the handshake is done (and for a client that offered
// nothing this server speaks), else http11 or h2. Known before the first plaintext byte reaches the
// parser, so an owner that speaks h2 can take over the connection there.
TlsAlpn tls_alpn(const HttpConn* c);
// "TLSv1.3", "TLSv1.2", or "" for a plain connection.
const char* tls_version(const HttpConn* c);
// True when c is a TLS connection.
bool tls_on(const HttpConn* c);

// OpenSSL's version ("3.0.19") for --version; "none" without TLS support.
const char* tls_library_version();
