// config_parse (lb/config.cc): flags in both spellings, the RINGLB_* environment, a flag winning over
// the environment, the cross-checks, and every invalid value: exit code 2 and exactly one line on
// stderr that names the option and the value. Each test starts from an environment without RINGLB_*
// variables and captures stderr and stdout through temporary files.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "lb/config.h"

extern char** environ;

namespace {

// The result of one config_parse call.
struct Parsed {
  int rc = -1;
  Config cfg;
  std::string err;  // what it wrote on stderr
  std::string out;  // and on stdout
};

std::string slurp(FILE* f) {
  std::string s;
  fflush(f);
  rewind(f);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

// Runs config_parse on "ringlb" followed by args, with stdout and stderr sent to temporary files.
Parsed parse(std::vector<std::string> args) {
  Parsed p;
  std::vector<char*> argv;
  std::string argv0 = "ringlb";
  argv.push_back(argv0.data());
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  FILE* err = tmpfile();
  FILE* out = tmpfile();
  fflush(stderr);
  fflush(stdout);
  int saved_err = dup(2), saved_out = dup(1);
  dup2(fileno(err), 2);
  dup2(fileno(out), 1);
  p.rc = config_parse(static_cast<int>(argv.size() - 1), argv.data(), &p.cfg);
  fflush(stderr);
  fflush(stdout);
  dup2(saved_err, 2);
  dup2(saved_out, 1);
  close(saved_err);
  close(saved_out);
  p.err = slurp(err);
  p.out = slurp(out);
  fclose(err);
  fclose(out);
  return p;
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> names;
    for (char** e = environ; *e != nullptr; e++)
      if (strncmp(*e, "RINGLB_", 7) == 0) names.emplace_back(*e, strcspn(*e, "="));
    for (const std::string& n : names) unsetenv(n.c_str());
  }
  void TearDown() override { SetUp(); }
};

// Exit code 2, nothing on stdout, and one line on stderr that contains every string of want.
void expect_one_line_error(const Parsed& p, std::vector<std::string> want) {
  EXPECT_EQ(p.rc, 2);
  EXPECT_EQ(p.out, "");
  ASSERT_FALSE(p.err.empty());
  EXPECT_EQ(p.err.back(), '\n') << p.err;
  EXPECT_EQ(p.err.find('\n'), p.err.size() - 1) << "more than one line: " << p.err;
  EXPECT_EQ(p.err.rfind("ringlb: ", 0), 0u) << p.err;
  for (const std::string& w : want) EXPECT_NE(p.err.find(w), std::string::npos) << w << " in " << p.err;
}

TEST_F(ConfigTest, DefaultsWithoutArguments) {
  Parsed p = parse({});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.err, "");
  EXPECT_EQ(p.cfg.listen, "0.0.0.0:5000");
  EXPECT_EQ(p.cfg.admin_listen, "");
  EXPECT_EQ(p.cfg.admin_token, "");
  EXPECT_EQ(p.cfg.provisioner, ProvKind::process);
  EXPECT_EQ(p.cfg.replicas, 3u);
  EXPECT_EQ(p.cfg.ring.mode, RingMode::ketama);
  EXPECT_EQ(p.cfg.hash_key, HashKey::rid);
  EXPECT_EQ(p.cfg.balance_factor, 0.0);
  EXPECT_EQ(p.cfg.slow_start_ms, 0u);
  EXPECT_EQ(p.cfg.hb_interval_ms, 500u);
  EXPECT_EQ(p.cfg.fall, 2u);
  EXPECT_TRUE(p.cfg.heal);
  EXPECT_EQ(p.cfg.heal_name, HealName::random);
  EXPECT_TRUE(p.cfg.assignment_404);
}

TEST_F(ConfigTest, FlagsWithSeparateAndEqualsValues) {
  Parsed p = parse({"--listen", "127.0.0.1:8080", "--replicas=5", "--hash-key", "header:X-User",
                    "--balance-factor=1.25", "--heal-name", "same", "--heal=off", "--assignment-404",
                    "no", "--admin-token", "tok", "--admin-listen=127.0.0.1:9090", "--hb-interval",
                    "250", "--replica-port-range", "30000-30010", "--log-level", "debug",
                    "--slow-start=2000"});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.cfg.listen, "127.0.0.1:8080");
  EXPECT_EQ(p.cfg.replicas, 5u);
  EXPECT_EQ(p.cfg.hash_key, HashKey::header);
  EXPECT_EQ(p.cfg.hash_key_name, "X-User");
  EXPECT_EQ(p.cfg.balance_factor, 1.25);
  EXPECT_EQ(p.cfg.heal_name, HealName::same);
  EXPECT_FALSE(p.cfg.heal);
  EXPECT_FALSE(p.cfg.assignment_404);
  EXPECT_EQ(p.cfg.admin_token, "tok");
  EXPECT_EQ(p.cfg.admin_listen, "127.0.0.1:9090");
  EXPECT_EQ(p.cfg.hb_interval_ms, 250u);
  EXPECT_EQ(p.cfg.port_min, 30000);
  EXPECT_EQ(p.cfg.port_max, 30010);
  EXPECT_EQ(p.cfg.log_level, "debug");
  EXPECT_EQ(p.cfg.slow_start_ms, 2000u);
}

TEST_F(ConfigTest, EveryHashKeySource) {
  struct Case { const char* arg; HashKey key; const char* name; } cases[] = {
      {"rid", HashKey::rid, ""}, {"path", HashKey::path, ""}, {"ip", HashKey::ip, ""},
      {"header:X-Session", HashKey::header, "X-Session"}, {"cookie:sid", HashKey::cookie, "sid"}};
  for (const Case& c : cases) {
    Parsed p = parse({"--hash-key", c.arg});
    ASSERT_EQ(p.rc, 0) << c.arg << ": " << p.err;
    EXPECT_EQ(p.cfg.hash_key, c.key) << c.arg;
    EXPECT_EQ(p.cfg.hash_key_name, c.name) << c.arg;
  }
}

TEST_F(ConfigTest, EnvironmentSetsEveryKindOfOption) {
  setenv("RINGLB_HB_INTERVAL", "750", 1);
  setenv("RINGLB_LISTEN", "127.0.0.1:7000", 1);
  setenv("RINGLB_HEAL", "off", 1);
  setenv("RINGLB_RING", "slots", 1);
  setenv("RINGLB_HASH_KEY", "cookie:sid", 1);
  setenv("RINGLB_BALANCE_FACTOR", "3", 1);
  setenv("RINGLB_SLOW_START", "1500", 1);
  Parsed p = parse({});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.cfg.hb_interval_ms, 750u);
  EXPECT_EQ(p.cfg.listen, "127.0.0.1:7000");
  EXPECT_FALSE(p.cfg.heal);
  EXPECT_EQ(p.cfg.ring.mode, RingMode::slots);
  EXPECT_EQ(p.cfg.ring.hash, HashFn::assignment);  // slots mode without --hash
  EXPECT_EQ(p.cfg.max_replicas, 56u);              // slots: M / K = 512 / 9
  EXPECT_EQ(p.cfg.hash_key, HashKey::cookie);
  EXPECT_EQ(p.cfg.hash_key_name, "sid");
  EXPECT_EQ(p.cfg.balance_factor, 3.0);
  EXPECT_EQ(p.cfg.slow_start_ms, 1500u);
}

TEST_F(ConfigTest, AFlagWinsOverTheEnvironment) {
  setenv("RINGLB_HB_INTERVAL", "750", 1);
  setenv("RINGLB_REPLICAS", "7", 1);
  setenv("RINGLB_HASH_KEY", "ip", 1);
  Parsed p = parse({"--hb-interval", "300", "--hash-key=path"});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.cfg.hb_interval_ms, 300u);
  EXPECT_EQ(p.cfg.hash_key, HashKey::path);
  EXPECT_EQ(p.cfg.replicas, 7u);  // not given as a flag: the environment's
}

TEST_F(ConfigTest, BackendsFromTheEnvironmentAreReplacedByFlags) {
  setenv("RINGLB_PROVISIONER", "static", 1);
  setenv("RINGLB_BACKEND", "10.0.0.1:80,10.0.0.2:80", 1);
  Parsed env = parse({});
  ASSERT_EQ(env.rc, 0) << env.err;
  EXPECT_EQ(env.cfg.backends, (std::vector<std::string>{"10.0.0.1:80", "10.0.0.2:80"}));
  Parsed flags = parse({"--backend", "127.0.0.1:81", "--backend", "127.0.0.1:82"});
  ASSERT_EQ(flags.rc, 0) << flags.err;
  EXPECT_EQ(flags.cfg.backends, (std::vector<std::string>{"127.0.0.1:81", "127.0.0.1:82"}));
}

TEST_F(ConfigTest, HelpPrintsEveryOptionAndItsVariable) {
  Parsed p = parse({"--help"});
  EXPECT_EQ(p.rc, 1);
  EXPECT_EQ(p.err, "");
  for (const char* s : {"--balance-factor", "RINGLB_BALANCE_FACTOR", "--hash-key", "RINGLB_HASH_KEY",
                        "--admin-token", "--admin-listen", "--heal-name", "RINGLB_HB_INTERVAL"})
    EXPECT_NE(p.out.find(s), std::string::npos) << s;
}

// Every option that checks its value, with values it must refuse.
TEST_F(ConfigTest, EveryInvalidFlagValueExitsTwoWithOneLine) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> bad = {
      {"--listen", {"", "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "1.2.3:80",
                    "localhost:80:1"}},
      {"--admin-listen", {"nonsense", "127.0.0.1:65536", ":"}},
      {"--provisioner", {"kubernetes", ""}},
      {"--replicas", {"-1", "x", "1025", "3.5", "", "99999999999999999999"}},
      {"--max-replicas", {"0", "1025", "many"}},
      {"--backend", {"nohostport", ":80", "", "a:1,,b:2"}},
      {"--pool", {"", "has space", "slash/name", std::string(64, 'p')}},
      {"--replica-port-range", {"10-5", "0-10", "1-70000", "100", "1-2-3", "a-b"}},
      {"--ring", {"chord", ""}},
      {"--slots", {"0", "x"}},
      {"--vnodes", {"-3", "100001"}},
      {"--probe", {"cubic"}},
      {"--hash", {"md5", ""}},
      {"--table-size", {"0"}},
      {"--hash-key", {"body", "header:", "cookie:", "", "Header:x"}},
      {"--retries", {"17", "-1"}},
      {"--balance-factor", {"0.5", "-1", "101", "nan", "inf", "1x", ""}},
      {"--slow-start", {"-1", "3600001", "2s", ""}},
      {"--assignment-404", {"maybe", ""}},
      {"--hb-interval", {"9", "0", "3600001"}},
      {"--hb-timeout", {"5"}},
      {"--fall", {"0", "101"}},
      {"--rise", {"0"}},
      {"--strikes", {"0", "1001"}},
      {"--heal", {"sometimes"}},
      {"--heal-name", {"other", ""}},
      {"--heal-backoff-max", {"99"}},
      {"--start-timeout", {"99", "600001"}},
      {"--connect-timeout", {"1"}},
      {"--upstream-timeout", {"0"}},
      {"--header-timeout", {"x"}},
      {"--idle-timeout", {"-5"}},
      {"--drain-timeout", {"3600001"}},
      {"--admin-body-limit", {"63"}},
      {"--body-timeout", {"9", "x"}},
      {"--retry-on", {"bogus", "connect-failure,bogus", ""}},
      {"--max-conns", {"0", "-1"}},
      {"--pool-idle-max", {"100001"}},
      {"--log-level", {"verbose", ""}},
  };
  for (const auto& [flag, values] : bad) {
    for (const std::string& v : values) {
      SCOPED_TRACE(flag + " '" + v + "'");
      expect_one_line_error(parse({flag, v}), {flag, "'" + v + "'"});
      expect_one_line_error(parse({flag + "=" + v}), {flag});
    }
  }
}

TEST_F(ConfigTest, AnInvalidEnvironmentValueNamesTheVariable) {
  const std::vector<std::pair<const char*, const char*>> bad = {
      {"RINGLB_HB_INTERVAL", "fast"}, {"RINGLB_HEAL", "maybe"}, {"RINGLB_HASH_KEY", "body"},
      {"RINGLB_BALANCE_FACTOR", "0.1"}, {"RINGLB_RING", "chord"}, {"RINGLB_REPLICAS", "-2"}};
  for (const auto& [name, value] : bad) {
    SCOPED_TRACE(name);
    setenv(name, value, 1);
    expect_one_line_error(parse({}), {name, std::string("'") + value + "'"});
    unsetenv(name);
  }
}

TEST_F(ConfigTest, UsageErrorsExitTwoWithOneLine) {
  expect_one_line_error(parse({"--no-such-option"}), {"--no-such-option"});
  expect_one_line_error(parse({"--replicas"}), {"--replicas", "needs a value"});
  expect_one_line_error(parse({"stray"}), {"stray"});
  expect_one_line_error(parse({"--provisioner", "static"}), {"--backend"});
  expect_one_line_error(parse({"--replicas", "10", "--max-replicas", "5"}), {"--max-replicas"});
  expect_one_line_error(parse({"--ring", "slots", "--max-replicas", "100"}), {"--max-replicas"});
}

}  // namespace
