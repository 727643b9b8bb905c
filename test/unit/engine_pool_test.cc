// engine_pool (lb/provision/engine_pool.h): what the docker and swarm provisioners share, without
// an engine: names, the configuration check, how engine replies become errors, label filters, and
// the readiness probe's connection attempt on a real loop over loopback.
#include "lb/provision/engine_pool.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <cerrno>
#include <string>

#include "lb/http/container_of.h"

namespace {

DockerReply reply(long http_status, const std::string& body) {
  DockerReply r;
  r.http_status = http_status;
  r.body = body;
  return r;
}

TEST(EnginePool, NamesFollowDockersRuleWithin63) {
  EXPECT_TRUE(engine_valid_name("server1"));
  EXPECT_TRUE(engine_valid_name("a.b_c-d"));
  EXPECT_TRUE(engine_valid_name(std::string(63, 'x')));
  EXPECT_FALSE(engine_valid_name("a"));  // one character: Docker wants two
  EXPECT_FALSE(engine_valid_name(std::string(64, 'x')));
  EXPECT_FALSE(engine_valid_name("-server"));
  EXPECT_FALSE(engine_valid_name("ser ver"));
  EXPECT_FALSE(engine_valid_name("ser/ver"));
  EXPECT_EQ(engine_short_id("0123456789abcdef0123"), "0123456789ab");
  EXPECT_EQ(engine_short_id("abc"), "abc");
}

TEST(EnginePool, ConfigCheckNamesTheFirstWrongValue) {
  std::string err;
  EXPECT_TRUE(engine_config_check("docker", "img", "pool", "host", "host, or a bridge", 20000,
                                  20999, &err));
  EXPECT_TRUE(engine_config_check("swarm", "img", "pool", "net", "host, or an overlay", 0, 0, &err))
      << "the port range only matters on the host network";
  EXPECT_FALSE(engine_config_check("swarm", "", "pool", "host", "x", 1, 2, &err));
  EXPECT_EQ(err, "the swarm provisioner needs an image");
  EXPECT_FALSE(engine_config_check("docker", "img", "bad pool", "host", "x", 1, 2, &err));
  EXPECT_EQ(err, "invalid pool name \"bad pool\": use 1 to 63 of A-Z a-z 0-9 _ . -");
  EXPECT_FALSE(engine_config_check("docker", "img", std::string(64, 'p'), "host", "x", 1, 2, &err));
  EXPECT_FALSE(engine_config_check("docker", "img", "pool", "", "host, or a bridge", 1, 2, &err));
  EXPECT_EQ(err, "the docker provisioner needs a network: host, or a bridge");
  EXPECT_FALSE(engine_config_check("docker", "img", "pool", "host", "x", 30000, 20000, &err));
  EXPECT_EQ(err, "invalid replica port range 30000-20000");
  EXPECT_FALSE(engine_config_check("docker", "img", "pool", "host", "x", 0, 20000, &err));
}

TEST(EnginePool, ReplyFailuresQuoteTheEngineAndMapToErrno) {
  std::string err;
  EXPECT_EQ(engine_reply_failure(reply(404, "{\"message\": \"No such image: r:1\"}"),
                                 "cannot create x", &err),
            -ENOENT);
  EXPECT_EQ(err,
            "cannot create x: Docker says \"No such image: r:1\" (build the image with `make "
            "images`, or pass another image)");
  EXPECT_EQ(engine_reply_failure(reply(409, "{\"message\": \"Conflict\"}"), "w", &err), -EEXIST);
  EXPECT_EQ(engine_reply_failure(reply(400, "{\"message\": \"bad\"}"), "w", &err), -EINVAL);
  EXPECT_EQ(engine_reply_failure(reply(500, "{\"message\": \"boom\"}"), "w", &err), -EIO);
  EXPECT_EQ(engine_reply_failure(reply(503, "{\"message\": \"This node is not a swarm manager.\"}"),
                                 "w", &err),
            -EIO);
  EXPECT_NE(err.find("docker swarm init"), std::string::npos) << err;
  DockerReply cut;
  cut.status = -ETIMEDOUT;
  cut.error = "no answer within 15000 ms";
  EXPECT_EQ(engine_reply_failure(cut, "w", &err), -EIO);
  EXPECT_EQ(err, "w: no answer within 15000 ms");
  cut.status = -ECANCELED;
  EXPECT_EQ(engine_reply_failure(cut, "w", &err), -ECANCELED);

  EXPECT_TRUE(engine_removed_ok(reply(204, "")));
  EXPECT_TRUE(engine_removed_ok(reply(404, "")));
  EXPECT_FALSE(engine_removed_ok(reply(409, "")));
  EXPECT_EQ(engine_reply_id(reply(201, "{\"Id\": \"abc\"}"), "Id"), "abc");
  EXPECT_EQ(engine_reply_id(reply(201, "{\"ID\": \"def\"}"), "ID"), "def");
  EXPECT_EQ(engine_reply_id(reply(201, "not json"), "Id"), "");
}

TEST(EnginePool, ReplyArrayIsTheListOrAnError) {
  int st = 0;
  std::string err;
  json_t* arr = engine_reply_array(reply(200, "[{\"Id\": \"a\"}]"), "cannot list", &st, &err);
  ASSERT_NE(arr, nullptr);
  EXPECT_EQ(json_array_size(arr), 1u);
  json_decref(arr);
  EXPECT_EQ(engine_reply_array(reply(200, "{}"), "cannot list", &st, &err), nullptr);
  EXPECT_EQ(st, -EIO);
  EXPECT_EQ(
      engine_reply_array(reply(404, "{\"message\": \"page not found\"}"), "cannot list", &st, &err),
      nullptr);
  EXPECT_EQ(st, -EIO) << "a 404 on a list is the engine's fault, not a missing image";
  EXPECT_EQ(err, "cannot list: Docker says \"page not found\"");
}

TEST(EnginePool, LabelFilterIsAnEscapedFiltersValue) {
  EXPECT_EQ(engine_label_filter("ringlb.pool=p"),
            "%7B%22label%22%3A%5B%22ringlb.pool%3Dp%22%5D%7D");
  EXPECT_EQ(engine_label_filter("ringlb.pool=p", "ringlb.ring-id=3"),
            "%7B%22label%22%3A%5B%22ringlb.pool%3Dp%22%2C%22ringlb.ring-id%3D3%22%5D%7D");
}

// The probe's owner: on_done records the outcome and how often it ran.
struct ProbeRun {
  EngineProbe probe;
  int done = 0;
  bool connected = false;
};

void on_probe_done(EngineProbe* pr) {
  ProbeRun* run = container_of(pr, &ProbeRun::probe);
  run->done++;
  run->connected = pr->connected;
  EXPECT_FALSE(pr->connecting) << "on_done runs once the attempt's handle is closed";
}

TEST(EnginePool, ProbeConnectsToAListenerAndFailsOnAClosedPort) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  uv_tcp_t listener;
  ASSERT_EQ(uv_tcp_init(&loop, &listener), 0);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  ASSERT_EQ(uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&addr), 0), 0);
  ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 8, [](uv_stream_t*, int) {}), 0);
  struct sockaddr_in bound;
  int len = sizeof bound;
  ASSERT_EQ(uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound), &len), 0);
  uint16_t port = ntohs(bound.sin_port);
  EXPECT_FALSE(engine_port_bindable(port)) << "a listener holds it";
  // The listener never accepts (the kernel completes the connect) and does not keep the loop
  // running: each uv_run below returns once the probe's own handles are closed.
  uv_unref(reinterpret_cast<uv_handle_t*>(&listener));

  ProbeRun up;
  engine_probe_attempt(&up.probe, &loop, port, on_probe_done);
  EXPECT_EQ(up.done, 0) << "never inside engine_probe_attempt";
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(up.done, 1);
  EXPECT_TRUE(up.connected);

  uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  ProbeRun down;
  engine_probe_attempt(&down.probe, &loop, port, on_probe_done);
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(down.done, 1);
  EXPECT_FALSE(down.connected);
  EXPECT_EQ(uv_loop_close(&loop), 0) << "a handle leaked";
}

}  // namespace
