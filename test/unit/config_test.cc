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

#include "lb/access_log.h"
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
  EXPECT_EQ(p.cfg.ring.vnodes, 8000u);  // the default ring: ketama with 8000 points (issue 16)
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
      {"--name-prefix", {"-lead", ".x", "has space", "slash/", std::string(64, 'p')}},
      {"--swarm-constraint", {"", "node.role", "a==b,,c==d", "node.role==\x01", std::string(300, 'c') + "==x"}},
      {"--swarm-spread", {"", "a,,b", "zone\x7f"}},
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
      {"--tunnel-timeout", {"9", "86400001", "x"}},
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


// --- the --config file (one more source in the same table) ------------------------------------

// A temporary config file holding text; removed at the end of the test.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    char tmpl[] = "/tmp/ringlb_config_test_XXXXXX";
    int fd = mkstemp(tmpl);
    path = tmpl;
    if (fd >= 0) close(fd);
    set(text);
  }
  // Replaces the file's text (the same path: what a reload reads again).
  void set(const std::string& text) {
    FILE* f = fopen(path.c_str(), "w");
    if (f == nullptr) return;
    fwrite(text.data(), 1, text.size(), f);
    fclose(f);
  }
  ~TempFile() { unlink(path.c_str()); }
};

TEST_F(ConfigTest, TheFileSetsOptionsWithCommentsBlankLinesAndQuotes) {
  TempFile f("# ringlb.conf\n"
             "\n"
             "hb-interval = 250\n"
             "   # indented comment\n"
             "hash-key=header:X-User\n"
             "--retries = 4   # four, a comment after the value\n"
             "replica-image = a#b\n"
             "admin-token = \"with # and spaces \"  # a comment\n"
             "backend = 127.0.0.1:81\r\n"
             "backend = 127.0.0.1:82\n"
             "provisioner = static\n"
             "access-log = json\n");
  Parsed p = parse({"--config", f.path});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.cfg.config_file, f.path);
  EXPECT_EQ(p.cfg.hb_interval_ms, 250u);
  EXPECT_EQ(p.cfg.hash_key, HashKey::header);
  EXPECT_EQ(p.cfg.hash_key_name, "X-User");
  EXPECT_EQ(p.cfg.retries, 4u);
  EXPECT_EQ(p.cfg.replica_image, "a#b");  // # not after a space: part of the value
  EXPECT_EQ(p.cfg.admin_token, "with # and spaces ");
  EXPECT_EQ(p.cfg.backends, (std::vector<std::string>{"127.0.0.1:81", "127.0.0.1:82"}));
  EXPECT_EQ(p.cfg.access_log, AccessLogMode::json);
}

TEST_F(ConfigTest, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  TempFile f("hb-interval = 250\nretries = 4\nfall = 5\nbackend = 10.0.0.1:80\nprovisioner = static\n");
  setenv("RINGLB_CONFIG", f.path.c_str(), 1);  // the file named by the environment
  setenv("RINGLB_RETRIES", "6", 1);
  setenv("RINGLB_FALL", "7", 1);
  setenv("RINGLB_BACKEND", "10.0.0.2:80", 1);
  Parsed p = parse({"--fall", "8"});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.cfg.hb_interval_ms, 250u);  // file over default
  EXPECT_EQ(p.cfg.retries, 6u);           // environment over file
  EXPECT_EQ(p.cfg.fall, 8u);              // flag over environment
  EXPECT_EQ(p.cfg.rise, 1u);              // default
  EXPECT_EQ(p.cfg.backends, (std::vector<std::string>{"10.0.0.2:80"}));  // replaced, not added
  // --config as a flag wins over RINGLB_CONFIG.
  TempFile g("hb-interval = 300\n");
  Parsed q = parse({"--config=" + g.path});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_EQ(q.cfg.hb_interval_ms, 300u);
}

TEST_F(ConfigTest, FileErrorsNameTheFileAndLineAndExitTwo) {
  struct Case {
    std::string text;
    int line;
    std::vector<std::string> want;
  } cases[] = {
      {"hb-interval = 250\nno-such-option = 1\n", 2, {"unknown option 'no-such-option'"}},
      {"# ok\n\nhb-interval = fast\n", 3, {"hb-interval", "'fast'", "whole number"}},
      {"hb-interval 250\n", 1, {"expected 'option = value'"}},
      {"retries = 2\nconfig = /etc/other.conf\n", 2, {"config"}},
      {"log-level = loud\n", 1, {"log-level", "'loud'"}},
      {"access-log = xml\n", 1, {"access-log", "'xml'"}},
      {"admin-token = \"open\n", 1, {"admin-token", "quoted value"}},
      {"admin-token = \"a\" b\n", 1, {"admin-token", "quoted value"}},
      {"\x01\x02\x1b[31m = 1\n", 1, {"unknown option"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    TempFile f(c.text);
    Parsed p = parse({"--config", f.path});
    std::vector<std::string> want = c.want;
    want.push_back(f.path + ":" + std::to_string(c.line) + ": ");
    expect_one_line_error(p, want);
    EXPECT_EQ(p.err.find('\x1b'), std::string::npos) << "control bytes are not echoed";
  }
  expect_one_line_error(parse({"--config", "/nonexistent/ringlb.conf"}),
                        {"/nonexistent/ringlb.conf", "No such file"});
  setenv("RINGLB_CONFIG", "/nonexistent/env.conf", 1);
  expect_one_line_error(parse({}), {"/nonexistent/env.conf"});
}

TEST_F(ConfigTest, VersionIsAskedForAndHelpListsConfigAndRestartOptions) {
  EXPECT_EQ(parse({"--version"}).rc, CONFIG_VERSION);
  EXPECT_EQ(parse({"--workers", "2", "--version"}).rc, CONFIG_VERSION);
  Parsed h = parse({"--help"});
  for (const char* s : {"--config FILE", "RINGLB_CONFIG", "--access-log", "--access-log-file", "--version",
                        "(restart)"})
    EXPECT_NE(h.out.find(s), std::string::npos) << s;
}

// --- reload (SIGHUP): what is live, what needs a restart ------------------------------------------

struct Loaded {
  int rc = -1;
  Config cfg;
  ConfigGiven given;
  std::string err;
};

Loaded load(const ConfigSources& src) {
  Loaded l;
  l.rc = config_load(src, &l.cfg, &l.given, &l.err);
  return l;
}

TEST_F(ConfigTest, ReloadAppliesLiveOptionsAndLeavesRestartOnes) {
  TempFile before("hb-interval = 500\nlog-level = info\nlisten = 127.0.0.1:7000\nworkers = 2\n"
                  "retries = 2\n");
  ConfigSources src;
  src.args = {"--config", before.path, "--retries", "3"};
  Loaded run = load(src);
  ASSERT_EQ(run.rc, 0) << run.err;
  // The file changes: a live option, a restart one, one the flag holds, one added, one removed.
  before.set("hb-interval = 200\nlog-level = debug\nlisten = 127.0.0.1:7001\nretries = 9\n"
             "admin-token = s3cret\n");
  Loaded fresh = load(src);
  ASSERT_EQ(fresh.rc, 0) << fresh.err;
  std::vector<std::string> changed, ignored;
  std::string err;
  ASSERT_TRUE(config_reload(&run.cfg, &run.given, fresh.cfg, fresh.given, &changed, &ignored, &err)) << err;
  EXPECT_EQ(run.cfg.hb_interval_ms, 200u);
  EXPECT_EQ(run.cfg.log_level, "debug");
  EXPECT_EQ(run.cfg.admin_token, "s3cret");
  EXPECT_EQ(run.cfg.retries, 3u);               // the flag still wins
  EXPECT_EQ(run.cfg.listen, "127.0.0.1:7000");  // needs a restart
  EXPECT_EQ(run.cfg.workers, 2u);               // removed from the file: still needs a restart
  EXPECT_EQ(changed, (std::vector<std::string>{"admin-token (default) -> (a token)",
                                               "hb-interval '500' -> '200'",
                                               "log-level 'info' -> 'debug'"}));
  EXPECT_EQ(ignored, (std::vector<std::string>{"listen needs a restart, left as '127.0.0.1:7000'",
                                               "workers needs a restart, left as '2'"}));
  for (const std::string& line : changed) EXPECT_EQ(line.find("s3cret"), std::string::npos);
  // The same reload again changes nothing and says nothing more than what still waits a restart.
  changed.clear();
  ignored.clear();
  ASSERT_TRUE(config_reload(&run.cfg, &run.given, fresh.cfg, fresh.given, &changed, &ignored, &err));
  EXPECT_TRUE(changed.empty());
  EXPECT_EQ(ignored.size(), 2u);
}

// Every option marked live follows the fresh configuration after a reload, and every other one
// keeps its running value: a value for each option, the file at its default and then with it.
TEST_F(ConfigTest, EveryLiveOptionIsCopiedAndNoOtherOne) {
  const std::map<std::string, std::string> sample = {
      {"listen", "127.0.0.1:7001"}, {"admin-listen", "127.0.0.1:7002"}, {"admin-token", "t"},
      {"provisioner", "docker"}, {"replicas", "5"}, {"max-replicas", "9"},
      {"backend", "127.0.0.1:9"}, {"replica-bin", "/bin/true"}, {"pool", "p2"}, {"name-prefix", "t1."}, {"swarm-constraint", "node.role==worker"},
      {"swarm-spread", "node.labels.zone"},
      {"docker-socket", "/tmp/d.sock"}, {"docker-network", "net2"}, {"replica-image", "img:2"},
      {"replica-port-range", "30000-30001"}, {"ring", "maglev"}, {"slots", "1024"}, {"vnodes", "50"},
      {"probe", "quadratic"}, {"hash", "murmur"}, {"table-size", "257"}, {"hash-key", "path"},
      {"retries", "5"}, {"balance-factor", "1.5"}, {"slow-start", "2000"}, {"assignment-404", "off"}, {"hb-interval", "123"},
      {"hb-timeout", "456"}, {"fall", "4"}, {"rise", "3"}, {"strikes", "7"}, {"heal", "off"},
      {"heal-name", "same"}, {"heal-backoff-max", "1234"}, {"start-timeout", "4321"},
      {"connect-timeout", "111"}, {"upstream-timeout", "222"}, {"header-timeout", "333"},
      {"idle-timeout", "444"}, {"drain-timeout", "555"}, {"admin-body-limit", "666"},
      {"body-timeout", "777"}, {"tunnel-timeout", "888"}, {"retry-on", "none"}, {"workers", "3"}, {"max-conns", "99"},
      {"pool-idle-max", "8"}, {"on-exit", "keep"}, {"log-level", "error"}, {"access-log", "text"},
      {"access-log-file", "/tmp/a.log"}, {"replica-env", "K=V"}, {"replica-cmd", "a b"},
      {"replica-cpus", "0.5"}, {"replica-memory", "64m"}, {"health-path", "/home"},
      {"tls-cert", "/tmp/c.pem"}, {"tls-key", "/tmp/k.pem"}, {"admin-tls-cert", "/tmp/ac.pem"},
      {"admin-tls-key", "/tmp/ak.pem"}};
  for (const std::string& name : config_option_names()) {
    if (name == "config" || name == "provisioner") continue;  // provisioner: the base below
    SCOPED_TRACE(name);
    auto it = sample.find(name);
    ASSERT_NE(it, sample.end()) << "no sample value for a new option: add one";
    // docker: so that on-exit keep and the docker options are valid.
    const std::string with = "provisioner = docker\n" + name + " = " + it->second + "\n";
    const std::string without = "provisioner = docker\n";
    TempFile file(without);
    ConfigSources src;
    src.args = {"--config", file.path};
    Loaded run = load(src);
    ASSERT_EQ(run.rc, 0) << run.err;
    file.set(with);
    Loaded fresh = load(src);
    ASSERT_EQ(fresh.rc, 0) << fresh.err;
    Config before = run.cfg;
    std::vector<std::string> changed, ignored;
    std::string err;
    ASSERT_TRUE(config_reload(&run.cfg, &run.given, fresh.cfg, fresh.given, &changed, &ignored, &err)) << err;
    // A config_load of the result's given texts is the running configuration: live ones took the
    // fresh value, restart ones kept theirs.
    file.set(config_option_live(name) ? with : without);
    Loaded want = load(src);
    ASSERT_EQ(want.rc, 0);
    EXPECT_EQ(run.given, want.given);
    if (config_option_live(name)) {
      EXPECT_EQ(changed.size(), 1u);
      EXPECT_TRUE(ignored.empty());
    } else {
      EXPECT_TRUE(changed.empty());
      EXPECT_EQ(ignored.size(), 1u);
    }
    // Field by field for the live ones: what a worker or the registry reads.
    file.set(with);
    Loaded w = load(src);
    if (config_option_live(name)) {
      EXPECT_EQ(run.cfg.hb_interval_ms, w.cfg.hb_interval_ms);
      EXPECT_EQ(run.cfg.retries, w.cfg.retries);
      EXPECT_EQ(run.cfg.admin_token, w.cfg.admin_token);
      EXPECT_EQ(run.cfg.log_level, w.cfg.log_level);
      EXPECT_EQ(run.cfg.access_log, w.cfg.access_log);
      EXPECT_EQ(run.cfg.access_log_file, w.cfg.access_log_file);
      EXPECT_EQ(run.cfg.upstream_timeout_ms, w.cfg.upstream_timeout_ms);
      EXPECT_EQ(run.cfg.body_timeout_ms, w.cfg.body_timeout_ms);
      EXPECT_EQ(run.cfg.tunnel_timeout_ms, w.cfg.tunnel_timeout_ms);
      EXPECT_EQ(run.cfg.retry_on, w.cfg.retry_on);
      EXPECT_EQ(run.cfg.max_replicas, w.cfg.max_replicas);
      EXPECT_EQ(run.cfg.replica_image, w.cfg.replica_image);
      EXPECT_EQ(run.cfg.balance_factor, w.cfg.balance_factor);
      EXPECT_EQ(run.cfg.strikes, w.cfg.strikes);
      EXPECT_EQ(run.cfg.fall, w.cfg.fall);
      EXPECT_EQ(run.cfg.rise, w.cfg.rise);
      EXPECT_EQ(run.cfg.hb_timeout_ms, w.cfg.hb_timeout_ms);
    } else {
      EXPECT_EQ(run.cfg.listen, before.listen);
      EXPECT_EQ(run.cfg.ring.mode, before.ring.mode);
      EXPECT_EQ(run.cfg.ring.hash, before.ring.hash);
      EXPECT_EQ(run.cfg.workers, before.workers);
      EXPECT_EQ(run.cfg.pool, before.pool);
      EXPECT_EQ(run.cfg.provisioner, before.provisioner);
      EXPECT_EQ(run.cfg.admin_listen, before.admin_listen);
      EXPECT_EQ(run.cfg.max_conns, before.max_conns);
    }
  }
}

TEST_F(ConfigTest, TheRestartOnlyOptionsAreTheOnesThatNeedARestart) {
  for (const char* name : {"listen", "admin-listen", "provisioner", "ring", "hash", "workers", "pool",
                           "slots", "vnodes", "backend", "replica-bin"})
    EXPECT_FALSE(config_option_live(name)) << name;
  for (const char* name : {"hb-interval", "hb-timeout", "fall", "rise", "retries", "retry-on", "strikes",
                           "balance-factor", "log-level", "access-log", "access-log-file", "admin-token",
                           "max-replicas", "replica-image", "connect-timeout", "upstream-timeout",
                           "body-timeout", "header-timeout", "idle-timeout", "tunnel-timeout"})
    EXPECT_TRUE(config_option_live(name)) << name;
}

TEST_F(ConfigTest, AReloadThatTheRunningRingCannotHoldChangesNothing) {
  ConfigSources src;
  TempFile before("ring = slots\nslots = 512\nmax-replicas = 10\n");
  src.args = {"--config", before.path};
  Loaded run = load(src);
  ASSERT_EQ(run.rc, 0) << run.err;
  // Valid on its own (a bigger ring), but the running ring (restart-only) cannot hold it.
  before.set("ring = slots\nslots = 65536\nmax-replicas = 1000\nhb-interval = 100\n");
  Loaded fresh = load(src);
  ASSERT_EQ(fresh.rc, 0) << fresh.err;
  Config kept = run.cfg;
  std::vector<std::string> changed, ignored;
  std::string err;
  EXPECT_FALSE(config_reload(&run.cfg, &run.given, fresh.cfg, fresh.given, &changed, &ignored, &err));
  EXPECT_NE(err.find("max-replicas"), std::string::npos) << err;
  EXPECT_EQ(run.cfg.hb_interval_ms, kept.hb_interval_ms);
  EXPECT_EQ(run.cfg.max_replicas, kept.max_replicas);
}

// --- the access log's lines --------------------------------------------------------------------

AccessLogEntry sample_entry() {
  AccessLogEntry e;
  e.client = "127.0.0.1";
  e.method = "GET";
  e.target = "/home?x=1";
  e.status = 200;
  e.bytes_in = 78;
  e.bytes_out = 140;
  e.replica = "server1";
  e.ring_id = 1;
  e.duration_us = 412;
  e.retries = 1;
  e.request_id = "123456";
  return e;
}

TEST(AccessLogFormat, TextAndJsonLines) {
  std::string text, json;
  access_log_format(&text, AccessLogMode::text, sample_entry(), "2026-12-02T10:40:01.123Z");
  EXPECT_EQ(text, "2026-12-02T10:40:01.123Z 127.0.0.1 \"GET /home?x=1 HTTP/1.1\" 200 in=78 out=140 "
                  "replica=server1 ring_id=1 ms=0.412 retries=1 rid=123456\n");
  access_log_format(&json, AccessLogMode::json, sample_entry(), "2026-12-02T10:40:01.123Z");
  EXPECT_EQ(json, "{\"time\":\"2026-12-02T10:40:01.123Z\",\"client\":\"127.0.0.1\",\"method\":\"GET\","
                  "\"path\":\"/home?x=1\",\"status\":200,\"bytes_in\":78,\"bytes_out\":140,"
                  "\"replica\":\"server1\",\"ring_id\":1,\"duration_ms\":0.412,\"retries\":1,"
                  "\"request_id\":\"123456\"}\n");
  AccessLogEntry none = sample_entry();
  none.replica = "";
  none.request_id = "";
  none.duration_us = 1234567;
  std::string t2;
  access_log_format(&t2, AccessLogMode::text, none, "T");
  EXPECT_NE(t2.find(" replica=- ring_id=1 ms=1234.567 retries=1 rid=-\n"), std::string::npos) << t2;
}

TEST(AccessLogFormat, HostileBytesAreEscaped) {
  struct Case {
    std::string in, json;
  } cases[] = {
      {"a\"b\\c", "a\\\"b\\\\c"},
      {std::string("nl\n cr\r tab\t nul") + '\0' + " esc\x1b del\x7f", "nl\\u000a cr\\u000d tab\\u0009 nul\\u0000 esc\\u001b del\\u007f"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},  // valid UTF-8 kept
      {"bad\xff\xfe", "bad\\ufffd\\ufffd"},
      {"cut\xe2\x82", "cut\\ufffd\\ufffd"},              // a sequence cut short
      {"overlong\xc0\xaf", "overlong\\ufffd\\ufffd"},    // overlong '/'
      {"surrogate\xed\xa0\x80", "surrogate\\ufffd\\ufffd\\ufffd"},
      {"past\xf4\x90\x80\x80", "past\\ufffd\\ufffd\\ufffd\\ufffd"},
  };
  for (const Case& c : cases) {
    std::string out;
    access_log_json_escape(&out, c.in);
    EXPECT_EQ(out, c.json) << c.in;
  }
  // A whole line stays one line of valid JSON, and the text format one line of printable ASCII.
  AccessLogEntry e = sample_entry();
  std::string hostile = "/\"}\n{\"status\":999\xff";
  e.target = hostile;
  e.request_id = "x\r\ny";
  std::string json, text;
  access_log_format(&json, AccessLogMode::json, e, "T");
  access_log_format(&text, AccessLogMode::text, e, "T");
  EXPECT_EQ(json.find('\n'), json.size() - 1);
  EXPECT_NE(json.find("\"path\":\"/\\\"}\\u000a{\\\"status\\\":999\\ufffd\""), std::string::npos) << json;
  EXPECT_EQ(text.find('\n'), text.size() - 1);
  for (size_t i = 0; i + 1 < text.size(); i++)
    EXPECT_TRUE(text[i] >= 0x20 && text[i] < 0x7f) << i;
  EXPECT_NE(text.find("\"GET /\\x22}\\x0a{\\x22status\\x22:999\\xff HTTP/1.1\""), std::string::npos) << text;
}

}  // namespace

// ketama's default K keeps the ring within 2^20 points over --max-replicas (at least 160), so a
// large static pool does not build a ring of millions of points; a K that is given is kept.
TEST(Config, KetamaDefaultPointsShrinkForLargePools) {
  EXPECT_EQ(parse({"--max-replicas", "128"}).cfg.ring.vnodes, 8000u);
  EXPECT_EQ(parse({"--max-replicas", "1024"}).cfg.ring.vnodes, 1024u);
  std::string backends;
  for (int i = 0; i < 2000; i++) backends += (i ? "," : "") + std::string("127.0.0.1:") + std::to_string(1000 + i);
  Parsed p = parse({"--provisioner", "static", "--backend", backends});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_EQ(p.cfg.max_replicas, 2000u);
  EXPECT_EQ(p.cfg.ring.vnodes, 524u);
  EXPECT_EQ(parse({"--max-replicas", "1024", "--vnodes", "3000"}).cfg.ring.vnodes, 3000u);
  EXPECT_EQ(parse({"--ring", "maglev"}).cfg.ring.vnodes, 0u);
}
