// docker_api: a small Docker Engine API client for the loop thread.
//
// HTTP/1.1 with libcurl over the engine's unix socket, pinned to API version min(1.41, the
// daemon's). Each call runs one blocking curl_easy_perform on the libuv threadpool (uv_queue_work,
// one baton per call); its result is delivered on the loop thread in the after-work callback. At
// most docker_api_max_inflight() calls occupy threadpool threads at a time; the rest wait in a FIFO
// on the loop thread. Every worker uses an easy handle that the loop thread checked out of the
// client's pool for it and takes back after the call, so connections are kept alive and reused
// across calls.
//
// Long-lived streams (GET /events) would hold a threadpool thread forever, so they run on a
// dedicated thread each (docker_stream_open) and post complete lines back through a uv_async_t.
//
// Threads: every function here is called on the loop thread, and every callback runs on it. Worker
// threads touch only their baton and the CURL handle lent to it.
#pragma once

#include <jansson.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

struct DockerApi;
struct DockerStream;

constexpr const char* kDockerDefaultSocket = "/var/run/docker.sock";
// Calls on threadpool threads at once: one less than the threads of libuv's pool
// (UV_THREADPOOL_SIZE, 4 by default), which is shared with fs and DNS work, so that a slow call
// (stop?t=N) never takes the last thread; at most kDockerMaxInflight. ringlb sets the pool to 8
// threads, so 7 calls (stops and removals of an /rm mostly wait on the engine).
constexpr int kDockerMaxInflight = 16;

// The outcome of one call.
struct DockerReply {
  // 0 when an HTTP response arrived (whatever its status); else negative: -ETIMEDOUT (timeout_ms
  // passed), -EIO (the engine could not be reached or the connection broke), -ECANCELED (the client
  // was closed before the call ran), -ENOMEM.
  int status = 0;
  long http_status = 0;   // the response's HTTP status; 0 when status != 0
  std::string body;       // the response body as received
  std::string error;      // when status != 0: what failed, one sentence
  double elapsed_ms = 0;  // time spent in curl_easy_perform (excludes waiting in the queue)
};

using DockerCallCb = std::function<void(const DockerReply& reply)>;

// Resolves the engine's socket path: arg when not empty; else DOCKER_HOST when it is unix://PATH;
// else /var/run/docker.sock. Returns 0, or -EINVAL with *err set when DOCKER_HOST names a transport
// other than a unix socket (tcp://, ssh://), which this client does not speak.
int docker_socket_path(const char* arg, std::string* path, std::string* err);

// Opens a client for the engine at socket_path (resolved with docker_socket_path, so nullptr or ""
// means the default). Pings the engine synchronously (GET /_ping, 3 s timeout) on the calling
// thread, so call it at start before the loop runs. Pins the API version to min(1.41, the daemon's
// Api-Version). Returns 0 and sets *out; or a negative errno and sets *err to one sentence naming
// the socket: -ENOENT (no socket), -EACCES (no permission), -EIO (engine not answering), -ENOTSUP
// (engine older than API 1.41). Initialises libcurl globally on first use.
int docker_api_open(uv_loop_t* loop, const char* socket_path, DockerApi** out, std::string* err);

// The pinned version ("1.41") and the socket path, for log lines and error messages.
const char* docker_api_version(const DockerApi* api);
const char* docker_api_socket(const DockerApi* api);
// How many calls may run at once (from UV_THREADPOOL_SIZE, read when the client was opened).
int docker_api_max_inflight(const DockerApi* api);

// Starts one call: method ("GET", "POST", "DELETE", "HEAD", "PUT") on path relative to the pinned
// version ("/containers/json?all=1"; query values already escaped with docker_url_escape). body may
// be nullptr; it is borrowed and serialised before this returns, and sent with Content-Type:
// application/json. A POST without body sends Content-Length: 0. timeout_ms bounds the whole
// transfer (0 = no limit; stop?t=N needs more than N s). cb runs exactly once, later, on the loop
// thread, never from inside this function. Calls made while or after docker_api_close runs complete
// with -ECANCELED.
void docker_api_call(DockerApi* api, const char* method, const std::string& path,
                     const json_t* body, long timeout_ms, DockerCallCb cb);

// Runs fn on the loop thread in a later loop iteration (before the client finishes closing). For
// callers that must report a synchronous failure through a callback without calling it
// re-entrantly.
void docker_api_defer(DockerApi* api, std::function<void()> fn);

// Closes the client: closes its open streams (their on_end gets -ECANCELED), lets calls already
// running on threadpool threads finish and delivers their callbacks, completes queued calls with
// -ECANCELED, runs pending deferred functions, frees every CURL handle and the client, then runs
// on_closed. api is invalid once on_closed runs. Call once.
void docker_api_close(DockerApi* api, std::function<void()> on_closed);

// One sentence saying why a reply is a failure: the transport error; else Docker's {"message":
// ...}; else the body as plain text (the engine answers "client version too old" that way); else
// "HTTP <n>".
std::string docker_error_message(const DockerReply& reply);

// The reply's body parsed as JSON, or nullptr when it is not JSON. The caller owns the reference.
json_t* docker_reply_json(const DockerReply& reply);

// Percent-encodes s for a query value or a path segment (everything but A-Z a-z 0-9 - _ . ~).
std::string docker_url_escape(const std::string& s);

// A streaming GET (for /events): each complete '\n'-terminated line of the body is handed to
// on_line, in order, on the loop thread. on_end runs exactly once when the stream is over: status 0
// with http_status when the engine ended it or answered with an error status (body holds the error
// answer), -EIO when the connection failed, -ECANCELED after docker_stream_close or
// docker_api_close. The stream is freed right after on_end returns; forget the pointer there. The
// transfer has no timeout (events carry no heartbeat); it runs on its own thread and its own CURL
// handle. Returns 0 and sets *out, or a negative errno when the thread cannot be created.
using DockerLineCb = std::function<void(const std::string& line)>;
using DockerStreamEndCb = std::function<void(const DockerReply& reply)>;
int docker_stream_open(DockerApi* api, const std::string& path, DockerLineCb on_line,
                       DockerStreamEndCb on_end, DockerStream** out);

// Asks the stream to end: no on_line runs after this returns; on_end follows later with -ECANCELED.
// Unblocks the stream's thread at once by shutting its socket down. Idempotent until on_end has
// run.
void docker_stream_close(DockerStream* stream);

// Runs one GET/POST/DELETE call synchronously on the calling thread and fills *reply as a
// DockerCallCb would receive it. For checks at start, before the loop runs (the swarm provisioner
// asks /info whether the engine is a swarm manager), like docker_api_open's ping; never while the
// loop runs calls (it borrows an idle handle of the client).
void docker_api_call_sync(DockerApi* api, const char* method, const std::string& path,
                          long timeout_ms, DockerReply* reply);

// Reading the engine's JSON, for the docker and swarm provisioners: the string member key of obj,
// "" when it is missing or not a string; and a decimal label value (a ring id, a port, a weight)
// up to max, false when s is missing, empty, not all digits or over max.
const char* docker_json_str(json_t* obj, const char* key);
bool docker_parse_u32(const char* s, uint32_t max, uint32_t* out);
