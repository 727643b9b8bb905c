// The docker provisioner against a real Docker engine, on a real libuv loop, with host networking.
//
// Every test gets its own pool label (ringlb-test-<pid>-<time>-<n>) and its own loop; its teardown
// force-removes every container carrying that pool label (or the test's foreign label) through the
// Engine API, whether the test passed or not, closes every handle and asserts uv_loop_close() == 0.
//
// The replica image: unless RINGLB_TEST_IMAGE names one to use as is, main() builds
// ringlb-replica:test from this build's replica binary with lb/image.sh (Docker's layer cache makes
// that a no-op when the binary did not change), so the test never depends on a stale :latest.
//
// Exit 77 (skip) when no engine is reachable, unless RINGLB_REQUIRE_DOCKER=1, then exit 1.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <jansson.h>
#include <signal.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "lb/provision/docker_api.h"
#include "lb/log.h"
#include "lb/provision/docker.h"

static std::string g_image;  // the replica image the tests run
static std::string g_run;    // ringlb-test-<pid>-<time>
static int g_test_seq = 0;
// Replica ports: a 100-port slice of 24000-24999 of this run's own (claim_port_slice), so two runs
// at once (two worktrees) do not pick each other's ports (the provisioner skips only ports already
// listened on, not ports another run is about to bind). Names and pools are unique to the run.
static uint16_t kPortMin = 24000;
static uint16_t kPortMax = 24999;
static const char kForeignLabel[] = "ringlb-test.foreign";

// Runs loop until done() or timeout_ms pass. Returns done().
template <typename F>
static bool run_until(uv_loop_t* loop, F done, int timeout_ms = 20000) {
  uint64_t deadline = uv_hrtime() + static_cast<uint64_t>(timeout_ms) * 1000000;
  while (!done() && uv_hrtime() < deadline) {
    uv_run(loop, UV_RUN_NOWAIT);
    if (!done()) usleep(1000);
  }
  return done();
}

// One blocking HTTP GET on 127.0.0.1:port; returns the status code, or -errno. Fills *body.
static int http_get(uint16_t port, const char* path, std::string* body = nullptr) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -errno;
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  std::string req =
      std::string("GET ") + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return -EIO;
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, n);
  close(fd);
  int status = 0;
  if (sscanf(resp.c_str(), "HTTP/1.%*d %d", &status) != 1) return -EPROTO;
  size_t b = resp.find("\r\n\r\n");
  if (body) *body = b == std::string::npos ? "" : resp.substr(b + 4);
  return status;
}

class DockerProv : public ::testing::Test {
 protected:
  uv_loop_t loop;
  DockerApi* api = nullptr;  // the test's own client: checks and cleanup
  Provisioner* prov = nullptr;
  std::string pool;

  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop), 0);
    pool = g_run + "-" + std::to_string(++g_test_seq);
    std::string err;
    ASSERT_EQ(docker_api_open(&loop, nullptr, &api, &err), 0) << err;
    prov = make_prov(g_image, &err);
    ASSERT_NE(prov, nullptr) << err;
  }

  Provisioner* make_prov(const std::string& image, std::string* err) {
    ProvDockerConfig cfg;
    cfg.image = image;
    cfg.pool = pool;
    cfg.network = "host";
    cfg.port_min = kPortMin;
    cfg.port_max = kPortMax;
    cfg.stop_grace_s = 5;
    return prov_docker_create(&loop, cfg, err);
  }

  void close_prov(Provisioner* p) {
    bool closed = false;
    p->close([&] { closed = true; });
    EXPECT_TRUE(run_until(&loop, [&] { return closed; }));
    delete p;
  }

  void TearDown() override {
    if (prov) close_prov(prov);  // first, so it does not report the removals below as exits
    if (api) {
      remove_labelled(std::string("ringlb.pool=") + pool);
      remove_labelled(std::string(kForeignLabel) + "=" + pool);
      bool closed = false;
      docker_api_close(api, [&] { closed = true; });
      EXPECT_TRUE(run_until(&loop, [&] { return closed; }));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0) << "a handle leaked";
  }

  DockerReply call(const char* method, const std::string& path, json_t* body = nullptr) {
    DockerReply out;
    bool done = false;
    docker_api_call(api, method, path, body, 30000, [&](const DockerReply& r) {
      out = r;
      done = true;
    });
    if (body) json_decref(body);
    EXPECT_TRUE(run_until(
        &loop, [&] { return done; }, 40000));
    return out;
  }

  // Ids of the containers (all states) carrying label (key=value).
  std::vector<std::string> labelled(const std::string& label) {
    json_t* f = json_pack("{s:[s]}", "label", label.c_str());
    char* s = json_dumps(f, JSON_COMPACT);
    std::string q = docker_url_escape(s);
    free(s);
    json_decref(f);
    DockerReply r = call("GET", "/containers/json?all=1&filters=" + q);
    std::vector<std::string> ids;
    json_t* arr = docker_reply_json(r);
    size_t i;
    json_t* c;
    json_array_foreach(arr, i, c) ids.push_back(json_string_value(json_object_get(c, "Id")));
    if (arr) json_decref(arr);
    return ids;
  }

  void remove_labelled(const std::string& label) {
    for (const std::string& id : labelled(label))
      call("DELETE", "/containers/" + id + "?force=1&v=1");
  }

  // Inspects a container: the parsed JSON (caller decrefs) and the HTTP status.
  json_t* inspect(const std::string& id, long* http) {
    DockerReply r = call("GET", "/containers/" + id + "/json");
    *http = r.http_status;
    return r.http_status == 200 ? docker_reply_json(r) : nullptr;
  }

  struct Started {
    bool done = false;
    int status = 1;
    std::string error;
    ReplicaInstance inst;
    double ms = 0;
  };

  void start_async(Provisioner* p, const std::string& name, uint32_t ring_id, Started* out) {
    uint64_t t0 = uv_hrtime();
    p->start(ReplicaSpec{name, ring_id},
             [out, t0](int st, const std::string& err, const ReplicaInstance& inst) {
               out->done = true;
               out->status = st;
               out->error = err;
               out->inst = inst;
               out->ms = (uv_hrtime() - t0) / 1e6;
             });
    EXPECT_FALSE(out->done) << "start() called its callback synchronously";
  }

  Started start(const std::string& name, uint32_t ring_id) {
    Started s;
    start_async(prov, name, ring_id, &s);
    EXPECT_TRUE(run_until(&loop, [&] { return s.done; }));
    return s;
  }

  std::vector<ReplicaInstance> list(Provisioner* p, int* status = nullptr) {
    bool done = false;
    std::vector<ReplicaInstance> out;
    p->list([&](int st, const std::string& err, const std::vector<ReplicaInstance>& running) {
      EXPECT_EQ(st, 0) << err;
      if (status) *status = st;
      out = running;
      done = true;
    });
    EXPECT_TRUE(run_until(&loop, [&] { return done; }));
    return out;
  }

  // A replica name unique to this test (container names are global to the engine).
  std::string name(const char* base) { return pool + "-" + base; }
};

static std::string label_of(json_t* c, const char* key) {
  const char* v = json_string_value(
      json_object_get(json_object_get(json_object_get(c, "Config"), "Labels"), key));
  return v ? v : "";
}

static bool has_env(json_t* c, const std::string& kv) {
  json_t* env = json_object_get(json_object_get(c, "Config"), "Env");
  size_t i;
  json_t* e;
  json_array_foreach(env, i, e) if (kv == json_string_value(e)) return true;
  return false;
}

TEST_F(DockerProv, StartsThreeReplicasWithLabelsEnvAndHeartbeat) {
  Started s[3];
  for (int i = 0; i < 3; i++)
    start_async(prov, name(("s" + std::to_string(i + 1)).c_str()), 10 + i, &s[i]);
  ASSERT_TRUE(run_until(&loop, [&] { return s[0].done && s[1].done && s[2].done; }));
  for (int i = 0; i < 3; i++) {
    std::string n = name(("s" + std::to_string(i + 1)).c_str());
    ASSERT_EQ(s[i].status, 0) << s[i].error;
    EXPECT_EQ(s[i].inst.name, n);
    EXPECT_EQ(s[i].inst.ring_id, 10u + i);
    EXPECT_EQ(s[i].inst.host, "127.0.0.1");
    EXPECT_GE(s[i].inst.port, kPortMin);
    EXPECT_LE(s[i].inst.port, kPortMax);
    printf("[ timing ] start of %s (3 concurrent): %.0f ms\n", n.c_str(), s[i].ms);

    long http = 0;
    json_t* c = inspect(s[i].inst.id, &http);
    ASSERT_EQ(http, 200);
    EXPECT_TRUE(json_is_true(json_object_get(json_object_get(c, "State"), "Running")));
    EXPECT_STREQ(json_string_value(json_object_get(c, "Name")), ("/" + n).c_str());
    EXPECT_EQ(label_of(c, "ringlb.pool"), pool);
    EXPECT_EQ(label_of(c, "ringlb.ring-id"), std::to_string(10 + i));
    EXPECT_EQ(label_of(c, "ringlb.port"), std::to_string(s[i].inst.port));
    EXPECT_TRUE(has_env(c, "SERVER_ID=" + n));
    EXPECT_TRUE(has_env(c, "PORT=" + std::to_string(s[i].inst.port)));
    EXPECT_TRUE(has_env(c, "ADDRESS=127.0.0.1"));
    EXPECT_STREQ(
        json_string_value(json_object_get(json_object_get(c, "HostConfig"), "NetworkMode")),
        "host");
    json_decref(c);

    EXPECT_EQ(http_get(s[i].inst.port, "/heartbeat"), 200);
    std::string body;
    EXPECT_EQ(http_get(s[i].inst.port, "/home", &body), 200);
    EXPECT_NE(body.find("Hello from Server: " + n), std::string::npos) << body;
  }
  EXPECT_NE(s[0].inst.port, s[1].inst.port);
  EXPECT_NE(s[1].inst.port, s[2].inst.port);
  EXPECT_NE(s[0].inst.port, s[2].inst.port);
}

TEST_F(DockerProv, SequentialStartAndStopTimings) {
  const int kN = 5;
  for (int i = 0; i < kN; i++) {
    Started s = start(name(("t" + std::to_string(i)).c_str()), i);
    ASSERT_EQ(s.status, 0) << s.error;
    uint64_t t0 = uv_hrtime();
    bool done = false;
    int st = 1;
    prov->stop(s.inst, [&](int status, const std::string&) {
      st = status;
      done = true;
    });
    ASSERT_TRUE(run_until(&loop, [&] { return done; }));
    EXPECT_EQ(st, 0);
    printf("[ timing ] start (create+start+listening) %.0f ms, stop+remove %.0f ms\n", s.ms,
           (uv_hrtime() - t0) / 1e6);
  }
}

TEST_F(DockerProv, ListAdoptsRunningReplicasAfterRestart) {
  Started a = start(name("a1"), 7);
  Started b = start(name("a2"), 8);
  ASSERT_EQ(a.status, 0) << a.error;
  ASSERT_EQ(b.status, 0) << b.error;
  // A second provisioner on the same pool stands for the LB after a restart.
  std::string err;
  Provisioner* again = make_prov(g_image, &err);
  ASSERT_NE(again, nullptr) << err;
  std::vector<ReplicaInstance> got = list(again);
  close_prov(again);
  ASSERT_EQ(got.size(), 2u);
  for (const Started* s : {&a, &b}) {
    bool found = false;
    for (const ReplicaInstance& r : got) {
      if (r.id != s->inst.id) continue;
      found = true;
      EXPECT_EQ(r.name, s->inst.name);
      EXPECT_EQ(r.ring_id, s->inst.ring_id);
      EXPECT_EQ(r.port, s->inst.port);
      EXPECT_EQ(r.host, "127.0.0.1");
    }
    EXPECT_TRUE(found) << s->inst.name << " was not adopted";
  }
}

TEST_F(DockerProv, StopRemovesTheContainer) {
  Started s = start(name("x1"), 1);
  ASSERT_EQ(s.status, 0) << s.error;
  bool done = false;
  int st = 1;
  std::string err;
  prov->stop(s.inst, [&](int status, const std::string& e) {
    st = status;
    err = e;
    done = true;
  });
  EXPECT_FALSE(done) << "stop() called its callback synchronously";
  ASSERT_TRUE(run_until(&loop, [&] { return done; }));
  EXPECT_EQ(st, 0) << err;
  long http = 0;
  EXPECT_EQ(inspect(s.inst.id, &http), nullptr);
  EXPECT_EQ(http, 404) << "the container still exists after stop";
  EXPECT_LT(http_get(s.inst.port, "/heartbeat"), 0)
      << "something still answers on the replica's port";
  EXPECT_TRUE(list(prov).empty());
}

TEST_F(DockerProv, MissingImageFailsQuotingDockerAndLeavesNothing) {
  std::string err;
  std::string image = "ringlb-test-no-such-image:" + std::to_string(getpid());
  Provisioner* p = make_prov(image, &err);
  ASSERT_NE(p, nullptr) << err;
  Started s;
  start_async(p, name("m1"), 1, &s);
  ASSERT_TRUE(run_until(&loop, [&] { return s.done; }));
  close_prov(p);
  EXPECT_EQ(s.status, -ENOENT);
  EXPECT_NE(s.error.find("No such image: " + image), std::string::npos) << s.error;
  EXPECT_NE(s.error.find(name("m1")), std::string::npos) << s.error;
  EXPECT_TRUE(labelled("ringlb.pool=" + pool).empty());
}

TEST_F(DockerProv, NameTakenByForeignContainerIsEexistAndLeftAlone) {
  std::string n = name("f1");
  json_t* body = json_pack("{s:s, s:{s:s}, s:{s:s}}", "Image", g_image.c_str(), "Labels",
                           kForeignLabel, pool.c_str(), "HostConfig", "NetworkMode", "host");
  DockerReply created = call("POST", "/containers/create?name=" + n, body);
  ASSERT_EQ(created.http_status, 201) << docker_error_message(created);
  json_t* cj = docker_reply_json(created);
  std::string foreign_id = json_string_value(json_object_get(cj, "Id"));
  json_decref(cj);

  Started s = start(n, 3);
  EXPECT_EQ(s.status, -EEXIST);
  EXPECT_NE(s.error.find(n), std::string::npos) << s.error;
  EXPECT_NE(s.error.find(foreign_id.substr(0, 12)), std::string::npos) << s.error;

  long http = 0;
  json_t* c = inspect(n, &http);
  ASSERT_EQ(http, 200) << "the foreign container was removed";
  EXPECT_STREQ(json_string_value(json_object_get(c, "Id")), foreign_id.c_str());
  EXPECT_EQ(label_of(c, kForeignLabel), pool);
  EXPECT_EQ(label_of(c, "ringlb.pool"), "");
  EXPECT_STREQ(json_string_value(json_object_get(json_object_get(c, "State"), "Status")),
               "created");
  json_decref(c);
  EXPECT_TRUE(labelled("ringlb.pool=" + pool).empty());
}

TEST_F(DockerProv, ListRemovesExitedOwnedContainers) {
  Started live = start(name("l1"), 1);
  Started dead = start(name("l2"), 2);
  ASSERT_EQ(live.status, 0) << live.error;
  ASSERT_EQ(dead.status, 0) << dead.error;
  DockerReply k = call("POST", "/containers/" + dead.inst.id + "/kill?signal=SIGKILL");
  ASSERT_EQ(k.http_status, 204) << docker_error_message(k);
  DockerReply w = call("POST", "/containers/" + dead.inst.id + "/wait?condition=not-running");
  ASSERT_EQ(w.http_status, 200) << docker_error_message(w);

  std::vector<ReplicaInstance> got = list(prov);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, live.inst.id);
  long http = 0;
  EXPECT_EQ(inspect(dead.inst.id, &http), nullptr);
  EXPECT_EQ(http, 404) << "the exited container was not removed";
}

TEST_F(DockerProv, ReportsAnExitThroughOnExitButNotItsOwnStops) {
  std::vector<std::pair<std::string, std::string>> exits;
  prov->on_exit = [&](const std::string& id, const std::string& cause) {
    exits.push_back({id, cause});
  };
  Started victim = start(name("e1"), 1);
  Started other = start(name("e2"), 2);
  ASSERT_EQ(victim.status, 0) << victim.error;
  ASSERT_EQ(other.status, 0) << other.error;
  bool stopped = false;
  prov->stop(other.inst, [&](int, const std::string&) { stopped = true; });
  ASSERT_TRUE(run_until(&loop, [&] { return stopped; }));

  uint64_t t0 = uv_hrtime();
  DockerReply k = call("POST", "/containers/" + victim.inst.id + "/kill?signal=SIGKILL");
  ASSERT_EQ(k.http_status, 204);
  ASSERT_TRUE(run_until(
      &loop, [&] { return !exits.empty(); }, 10000))
      << "no on_exit after a kill";
  printf("[ timing ] kill to on_exit: %.0f ms\n", (uv_hrtime() - t0) / 1e6);
  run_until(
      &loop, [] { return false; }, 500);  // let any late events in
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].first, victim.inst.id);
  EXPECT_NE(exits[0].second.find("exited with code 137"), std::string::npos) << exits[0].second;
}

TEST_F(DockerProv, StopOfAContainerThatIsGoneSucceeds) {
  ReplicaInstance gone;
  gone.name = name("gone");
  gone.id = name("gone");
  bool done = false;
  int st = 1;
  std::string err;
  prov->stop(gone, [&](int status, const std::string& e) {
    st = status;
    err = e;
    done = true;
  });
  ASSERT_TRUE(run_until(&loop, [&] { return done; }));
  EXPECT_EQ(st, 0) << err;
}

// Closing while starts are in flight (creating, starting or waiting for the port): every start
// callback runs exactly once, close completes, and no handle is left (TearDown checks the loop).
TEST_F(DockerProv, CloseWhileStartingCompletesEveryCallback) {
  const int kN = 4;
  Started s[kN];
  for (int i = 0; i < kN; i++) start_async(prov, name(("c" + std::to_string(i)).c_str()), i, &s[i]);
  run_until(
      &loop, [] { return false; }, 200);
  bool closed = false;
  prov->close([&] { closed = true; });
  ASSERT_TRUE(run_until(&loop, [&] { return closed; }));
  delete prov;
  prov = nullptr;
  std::vector<std::string> started;
  for (int i = 0; i < kN; i++) {
    EXPECT_TRUE(s[i].done) << "start " << i << " never called back";
    EXPECT_TRUE(s[i].status == 0 || s[i].status == -ECANCELED) << s[i].status << " " << s[i].error;
    if (s[i].status == 0) started.push_back(s[i].inst.id);
  }
  // What started is the caller's to stop; what was cancelled left no container behind.
  std::vector<std::string> left = labelled("ringlb.pool=" + pool);
  std::sort(started.begin(), started.end());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, started);
}

// A start that is still creating or starting when close() is called: close waits for it, removes
// the container it created, and reports -ECANCELED.
TEST_F(DockerProv, CloseRightAfterStartRemovesWhatItCreated) {
  const int kN = 3;
  Started s[kN];
  for (int i = 0; i < kN; i++) start_async(prov, name(("r" + std::to_string(i)).c_str()), i, &s[i]);
  // Until the engine has created the first container, so that close() meets starts in flight.
  ASSERT_TRUE(run_until(
      &loop, [&] { return !labelled("ringlb.pool=" + pool).empty(); }, 10000));
  bool closed = false;
  prov->close([&] { closed = true; });
  ASSERT_TRUE(run_until(&loop, [&] { return closed; }));
  delete prov;
  prov = nullptr;
  for (int i = 0; i < kN; i++) {
    EXPECT_TRUE(s[i].done) << "start " << i << " never called back";
    EXPECT_EQ(s[i].status, -ECANCELED) << s[i].error;
  }
  EXPECT_TRUE(labelled("ringlb.pool=" + pool).empty()) << "close left containers behind";
}

TEST_F(DockerProv, InvalidNameFailsLater) {
  Started s = start("-bad name", 1);
  EXPECT_EQ(s.status, -EINVAL);
  EXPECT_NE(s.error.find("invalid replica name"), std::string::npos) << s.error;
}

TEST(DockerProvCreate, UnreachableEngineIsOneClearSentence) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  ProvDockerConfig cfg;
  cfg.socket = "/tmp/ringlb-test-no-such-docker.sock";
  std::string err;
  Provisioner* p = prov_docker_create(&loop, cfg, &err);
  EXPECT_EQ(p, nullptr);
  EXPECT_NE(err.find(cfg.socket), std::string::npos) << err;
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// Builds the replica image from this build's binary (see the comment at the top). Returns false
// with a message when it cannot.
// The first of ten 100-port slices from base that no other running process has claimed: each is
// claimed by binding the abstract unix socket name "ringlb-test-ports-<base>-<i>" (no file, no TCP
// port), held until this process exits. Exits the test when all ten are taken.
static uint16_t claim_port_slice(uint16_t base) {
  for (int i = 0; i < 10; i++) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    std::string name = "ringlb-test-ports-" + std::to_string(base) + "-" + std::to_string(i);
    memcpy(sa.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: the abstract namespace
    socklen_t len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + 1 + name.size());
    if (fd >= 0 && bind(fd, reinterpret_cast<struct sockaddr*>(&sa), len) == 0)
      return static_cast<uint16_t>(base + i * 100);  // fd stays open: the claim
    if (fd >= 0) close(fd);
  }
  fprintf(stderr, "test_prov_docker: every port slice of %u-%u is taken\n", base, base + 999);
  exit(1);
}

static bool prepare_image() {
  const char* image = getenv("RINGLB_TEST_IMAGE");
  if (image && *image) {
    g_image = image;
    return true;
  }
  const char* src = getenv("RINGLB_SOURCE_ROOT");
  const char* build = getenv("RINGLB_BUILD_ROOT");
  if (!src || !build) {
    fprintf(stderr,
            "test_prov_docker: set RINGLB_SOURCE_ROOT and RINGLB_BUILD_ROOT (meson test does), "
            "or RINGLB_TEST_IMAGE\n");
    return false;
  }
  g_image = "ringlb-replica:test";
  std::string cmd = std::string("RINGLB_REPLICA_TAG=") + g_image + " '" + src + "/lb/image.sh' '" +
                    build + "' replica";
  uint64_t t0 = uv_hrtime();
  int rc = system(cmd.c_str());
  if (rc != 0) {
    fprintf(stderr, "test_prov_docker: building %s failed: %s\n", g_image.c_str(), cmd.c_str());
    return false;
  }
  printf("[ image  ] %s built in %.0f ms\n", g_image.c_str(), (uv_hrtime() - t0) / 1e6);
  return true;
}

// A relay between the provisioner and the real engine socket that holds the engine's answer to
// every POST .../containers/create for hold_ms, longer than the provisioner's call timeout: the
// engine creates the container, but the provisioner hears nothing in time. Byte-level, one thread
// per connection; everything stops (bounded) in the destructor.
class SlowCreateRelay {
 public:
  std::string path;
  explicit SlowCreateRelay(int hold_ms) : hold_ms_(hold_ms) {
    path = "/tmp/ringlb-slow-create-" + std::to_string(getpid()) + ".sock";
    unlink(path.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && listen(listen_fd_, 16) == 0)
      threads_.emplace_back([this] { accept_loop(); });
  }
  ~SlowCreateRelay() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
    close(listen_fd_);
    unlink(path.c_str());
  }
  std::atomic<int> held{0};

 private:
  int hold_ms_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;  // only the accept thread adds to it

  void accept_loop() {
    std::vector<std::thread> conns;
    while (!stop_) {
      struct pollfd p = {listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) conns.emplace_back([this, c] { relay(c); });
    }
    for (std::thread& t : conns) t.join();
  }

  void relay(int client) {
    int engine = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "/var/run/docker.sock");
    if (connect(engine, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      close(engine);
      close(client);
      return;
    }
    uint64_t hold_until = 0;
    char buf[65536];
    uint64_t deadline = uv_hrtime() + 60ull * 1000000000;
    while (!stop_ && uv_hrtime() < deadline) {
      struct pollfd p[2] = {{client, POLLIN, 0}, {engine, POLLIN, 0}};
      if (poll(p, 2, 50) <= 0) continue;
      if (p[0].revents) {
        ssize_t n = read(client, buf, sizeof buf);
        if (n <= 0) break;
        if (std::string(buf, n).find("/containers/create") != std::string::npos &&
            std::string(buf, n).rfind("POST ", 0) == 0) {
          hold_until = uv_hrtime() + static_cast<uint64_t>(hold_ms_) * 1000000;
          held++;
        }
        if (write(engine, buf, n) != n) break;
      }
      if (p[1].revents) {
        while (uv_hrtime() < hold_until && !stop_) usleep(10000);
        ssize_t n = read(engine, buf, sizeof buf);
        if (n <= 0 || write(client, buf, n) != n) break;
      }
    }
    close(engine);
    close(client);
  }
};

// A create that timed out on our side but succeeded in the engine leaves no container: the
// provisioner looks the name up at once and removes the pool's container, before start fails.
TEST_F(DockerProv, CreateThatTimedOutButSucceededIsRemovedAtOnce) {
  SlowCreateRelay relay(2000);
  ProvDockerConfig cfg;
  cfg.socket = relay.path;
  cfg.image = g_image;
  cfg.pool = pool;
  cfg.network = "host";
  cfg.port_min = kPortMin;
  cfg.port_max = kPortMax;
  cfg.call_timeout_ms = 500;
  cfg.watch_events = false;
  std::string err;
  Provisioner* slow = prov_docker_create(&loop, cfg, &err);
  ASSERT_NE(slow, nullptr) << err;
  Started s;
  start_async(slow, "slowcreate1", 7, &s);
  ASSERT_TRUE(run_until(&loop, [&] { return s.done; }));
  EXPECT_NE(s.status, 0);
  EXPECT_EQ(relay.held.load(), 1);
  // The engine had made the container (its create answer was only held back); it is gone now,
  // when start has called back, not at the next list().
  EXPECT_EQ(labelled(std::string("ringlb.pool=") + pool), std::vector<std::string>{}) << s.error;
  close_prov(slow);
}

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  signal(SIGPIPE, SIG_IGN);
  log_set_level(LogLevel::warn);
  bool require =
      getenv("RINGLB_REQUIRE_DOCKER") && strcmp(getenv("RINGLB_REQUIRE_DOCKER"), "1") == 0;
  {
    uv_loop_t loop;
    uv_loop_init(&loop);
    DockerApi* api = nullptr;
    std::string err;
    int rc = docker_api_open(&loop, nullptr, &api, &err);
    if (rc != 0) {
      uv_loop_close(&loop);
      fprintf(stderr, "test_prov_docker: %s\n", err.c_str());
      if (require) {
        fprintf(stderr,
                "test_prov_docker: RINGLB_REQUIRE_DOCKER=1, so a missing engine is a failure\n");
        return 1;
      }
      fprintf(stderr, "test_prov_docker: skipped (no Docker engine)\n");
      return 77;
    }
    bool closed = false;
    docker_api_close(api, [&] { closed = true; });
    uv_run(&loop, UV_RUN_DEFAULT);
    if (!closed || uv_loop_close(&loop) != 0) return 1;
  }
  if (!prepare_image()) return 1;
  g_run = "ringlb-test-" + std::to_string(getpid()) + "-" + std::to_string(time(nullptr));
  kPortMin = claim_port_slice(24000);
  kPortMax = static_cast<uint16_t>(kPortMin + 99);
  return RUN_ALL_TESTS();
}
