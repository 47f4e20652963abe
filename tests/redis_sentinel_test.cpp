// Redis Sentinel, as the test starts it on 127.0.0.1: one master, two
// replicas, three sentinels; two `bulwark serve` processes that find the
// master through the sentinels, under a steady submit load. The master is
// SIGKILLed: the sentinels promote a replica, the processes find it on
// their own, and with redis.min_replicas_ack 1 no job that was answered
// 201 is lost. Prints how long submits were refused.
//
// BULWARK_SENTINEL_COMPARE=1 runs the same failover without
// min_replicas_ack too and prints how many accepted jobs were lost there
// (asynchronous replication; the README's figure).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "support/http_client.hpp"
#include "support/redis_server.hpp"
#include "support/serve_process.hpp"
#include "support/submit_load.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::testing::eventually;
using bulwark::testing::http;
using bulwark::testing::RedisServer;
using bulwark::testing::ServeProcess;
using nlohmann::json;

namespace {

// A sentinel: redis-server --sentinel on a port of 127.0.0.1, watching
// "mymaster"; stopped when the fixture goes.
class Sentinel {
 public:
  Sentinel(const std::string& dir, int master_port) : port_(RedisServer::free_port()) {
    const std::string conf = dir + "/sentinel-" + std::to_string(port_) + ".conf";
    std::ofstream(conf) << "port " << port_ << "\nbind 127.0.0.1\ndir " << dir << "\n"
                        << "sentinel monitor mymaster 127.0.0.1 " << master_port << " 2\n"
                        << "sentinel down-after-milliseconds mymaster 1000\n"
                        << "sentinel failover-timeout mymaster 10000\n"
                        << "sentinel parallel-syncs mymaster 2\n";
    std::vector<std::string> args = {"redis-server", conf, "--sentinel", "--logfile",
                                     dir + "/sentinel-" + std::to_string(port_) + ".log"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawnp(&pid_, "redis-server", nullptr, nullptr, argv.data(), environ) == 0);
    REQUIRE(eventually(
        [&] {
          try {
            return ask({"PING"}).str == "PONG";
          } catch (const bulwark::detail::redis::RedisError&) {
            return false;
          }
        },
        10s));
  }
  ~Sentinel() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  int port() const noexcept { return port_; }
  bulwark::detail::redis::Value ask(const std::vector<std::string>& command) const {
    bulwark::detail::redis::ConnectOptions o;
    o.address.host = "127.0.0.1";
    o.address.port = port_;
    return bulwark::detail::redis::Connection(o).command(command);
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

struct Outcome {
  std::size_t accepted = 0;
  std::size_t lost = 0;          // answered 201, never ended
  double refused_seconds = 0;    // from the first refused submit after the kill to the first accepted one after it
};

// One master, two replicas synced to it, three sentinels that know them all.
struct Group {
  RedisServer master{{.tcp = true, .args = {"--repl-diskless-sync-delay", "0"}}};
  RedisServer replica_a{{.tcp = true, .args = {"--replicaof", "127.0.0.1", std::to_string(master.port())}}};
  RedisServer replica_b{{.tcp = true, .args = {"--replicaof", "127.0.0.1", std::to_string(master.port())}}};
  std::vector<std::unique_ptr<Sentinel>> sentinels;
  json addresses = json::array();

  Group() {
    REQUIRE(eventually(
        [&] {
          const std::string info = master.connect().command({"INFO", "replication"}).str;
          std::size_t online = 0;
          for (auto at = info.find("state=online"); at != std::string::npos; at = info.find("state=online", at + 1)) ++online;
          return online == 2;  // synced, not only connected
        },
        20s));
    for (int i = 0; i < 3; ++i) {
      sentinels.push_back(std::make_unique<Sentinel>(master.dir(), master.port()));
      addresses.push_back("127.0.0.1:" + std::to_string(sentinels.back()->port()));
    }
    // Each sentinel has found the replicas and the other sentinels.
    REQUIRE(eventually(
        [&] {
          for (const auto& s : sentinels) {
            if (s->ask({"SENTINEL", "REPLICAS", "mymaster"}).elements.size() != 2) return false;
            if (s->ask({"SENTINEL", "SENTINELS", "mymaster"}).elements.size() != 2) return false;
          }
          return true;
        },
        30s));
  }

  // A serve config that finds the master through the sentinels.
  std::string config(unsigned min_replicas_ack, const std::string& level) const {
    const std::string path = master.dir() + "/serve.json";
    std::ofstream(path) << json{{"workers", 2},
                                {"logging", {{"level", level}}},
                                {"server", {{"listen", "127.0.0.1:0"}, {"drain_timeout_ms", 1000}}},
                                {"queue", {{"backend", "redis"}}},
                                {"redis",
                                 {{"url", "redis://mymaster/0"},
                                  {"namespace", "failover"},
                                  {"sentinel", {{"master", "mymaster"}, {"addresses", addresses}}},
                                  {"min_replicas_ack", min_replicas_ack},
                                  {"lease_ms", 2000},
                                  {"command_timeout_ms", 500},
                                  {"connect_timeout_ms", 300}}},
                                {"retention", {{"max_finished", 100'000}}}}
                               .dump();
    return path;
  }
};

Outcome failover_under_load(unsigned min_replicas_ack) {
  Group group;
  RedisServer& master = group.master;
  const std::string config = group.config(min_replicas_ack, "warn");
  ServeProcess a(config, master.dir() + "/a.err");
  ServeProcess b(config, master.dir() + "/b.err");
  const std::uint16_t ports[2] = {a.port_from_banner(), b.port_from_banner()};

  bulwark::testing::SubmitLoad load({ports[0], ports[1]}, "f-");
  std::this_thread::sleep_for(2s);
  load.killed();
  master.kill_hard();
  const bool recovered = load.wait_recovered(15s, 60s);
  std::this_thread::sleep_for(2s);  // and it goes on
  load.stop();
  CHECK(recovered);

  Outcome out;
  out.accepted = load.accepted().size();
  out.refused_seconds = load.refused_seconds();
  // Every accepted job ends (some run twice: their end was lost with the
  // master, their lease ran out on the new one).
  out.lost = load.lost(ports[0], 30s);
  return out;
}

}  // namespace

TEST_SUITE("redis sentinel") {
  TEST_CASE("a master SIGKILLed under load: the processes find the new one; with min_replicas_ack 1 no accepted job is lost" *
            doctest::timeout(240)) {
    const Outcome o = failover_under_load(1);
    MESSAGE("min_replicas_ack 1: " << o.accepted << " accepted, " << o.lost << " lost, submits refused for "
                                   << o.refused_seconds << " s");
    CHECK(o.accepted > 100);
    CHECK(o.lost == 0);
    if (std::getenv("BULWARK_SENTINEL_COMPARE") != nullptr) {
      const Outcome plain = failover_under_load(0);
      MESSAGE("min_replicas_ack 0: " << plain.accepted << " accepted, " << plain.lost << " lost, submits refused for "
                                     << plain.refused_seconds << " s");
    }
  }

  TEST_CASE("a failover the sentinels name or announce (+switch-master) is followed at once, with the old master alive" *
            doctest::timeout(180)) {
    Group group;
    const std::string err = group.master.dir() + "/a.err";
    ServeProcess a(group.config(0, "info"), err);
    const std::uint16_t port = a.port_from_banner();
    REQUIRE(http(port, "POST", "/v1/jobs", json{{"id", "before"}, {"type", "echo"}, {"payload", 1}}.dump()).status == 201);
    REQUIRE(eventually([&] { return http(port, "GET", "/v1/jobs/before").json()["state"] == "succeeded"; }, 20s));

    // A manual failover: the old master stays up and becomes a replica, so
    // no connection to it breaks; only the announcement tells.
    REQUIRE(group.sentinels[0]->ask({"SENTINEL", "FAILOVER", "mymaster"}).str == "OK");
    std::string promoted;
    REQUIRE(eventually(
        [&] {
          const auto named = group.sentinels[1]->ask({"SENTINEL", "get-master-addr-by-name", "mymaster"});
          promoted = named.elements.at(0).str + ":" + named.elements.at(1).str;
          return named.elements.at(1).str != std::to_string(group.master.port());
        },
        30s));
    const auto log_says = [&] {
      std::ifstream in(err);
      const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      return log.find(": the master is now " + promoted + " (was 127.0.0.1:" + std::to_string(group.master.port()) + ")") !=
             std::string::npos;
    };
    const auto named_at = std::chrono::steady_clock::now();
    CHECK(eventually(log_says, 10s));
    MESSAGE("the process logged the new master " << std::chrono::duration<double>(std::chrono::steady_clock::now() - named_at).count()
                                                 << " s after a sentinel named it");

    // Jobs go on, on the new master.
    REQUIRE(eventually(
        [&] { return http(port, "POST", "/v1/jobs", json{{"id", "after"}, {"type", "echo"}, {"payload", 2}}.dump()).status == 201; },
        20s));
    CHECK(eventually([&] { return http(port, "GET", "/v1/jobs/after").json()["state"] == "succeeded"; }, 20s));
    bulwark::detail::redis::ConnectOptions o;
    o.address.host = "127.0.0.1";
    o.address.port = std::stoi(promoted.substr(promoted.rfind(':') + 1));
    CHECK(bulwark::detail::redis::Connection(o).command({"EXISTS", "{failover}:job:after"}).integer == 1);
  }
}
