// Redis Cluster, as the test makes it on 127.0.0.1: three masters
// (redis-server --cluster-enabled yes, joined by redis-cli --cluster
// create). A `bulwark serve` given one node that does not hold the
// namespace learns the slot map and runs jobs on the master of the
// namespace's slot. Mid-run the test moves that slot to another master the
// way `redis-cli --cluster reshard` does (SETSLOT IMPORTING/MIGRATING,
// MIGRATE in batches, SETSLOT NODE), while jobs are submitted and ended:
// the process follows ASK and MOVED, and every accepted job ends exactly
// once. Named queues, each under its own hash tag, are spread over the
// three masters, and one queue's slot is moved the same way mid-run.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "support/http_client.hpp"
#include "support/redis_server.hpp"
#include "support/serve_process.hpp"
#include "support/submit_load.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::detail::redis::Connection;
using bulwark::detail::redis::ConnectOptions;
using bulwark::detail::redis::Value;
using bulwark::testing::eventually;
using bulwark::testing::http;
using bulwark::testing::RedisServer;
using bulwark::testing::ServeProcess;
using nlohmann::json;

namespace {

// Three masters serving every slot, each with `replicas` replicas.
struct Cluster {
  std::vector<std::unique_ptr<RedisServer>> nodes;

  explicit Cluster(int replicas = 0) {
    std::string create = "redis-cli --cluster create";
    for (int i = 0; i < 3 * (1 + replicas); ++i) {
      nodes.push_back(std::make_unique<RedisServer>(RedisServer::Options{
          .tcp = true,
          .args = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"},
          .cluster = true}));
      create += " 127.0.0.1:" + std::to_string(nodes.back()->port());
    }
    create += " --cluster-replicas " + std::to_string(replicas) + " --cluster-yes > " + nodes[0]->dir() + "/create.log 2>&1";
    REQUIRE(std::system(create.c_str()) == 0);
    REQUIRE(eventually(
        [&] {
          for (const auto& n : nodes) {
            if (ask(*n, {"CLUSTER", "INFO"}).str.find("cluster_state:ok") == std::string::npos) return false;
            // A replica has synced with its master (its data is there).
            const std::string role = ask(*n, {"INFO", "replication"}).str;
            if (role.find("role:slave") != std::string::npos && role.find("master_link_status:up") == std::string::npos) {
              return false;
            }
          }
          return true;
        },
        30s));
  }

  static Value ask(const RedisServer& node, const std::vector<std::string>& command) {
    ConnectOptions o;
    o.address.host = "127.0.0.1";
    o.address.port = node.port();
    o.command_timeout = 5000ms;
    return Connection(o).command(command);
  }
  // The node that serves `slot` now, as `from` sees it.
  RedisServer& owner(int slot, const RedisServer& from) {
    for (const Value& range : ask(from, {"CLUSTER", "SLOTS"}).elements) {
      if (slot < range.elements[0].integer || slot > range.elements[1].integer) continue;
      for (auto& n : nodes) {
        if (n->port() == range.elements[2].elements[1].integer) return *n;
      }
    }
    FAIL("no node serves slot " << slot);
    return *nodes[0];
  }

  // Three queue names ("<letter>a", "<letter>b", ...) of namespace `ns`
  // whose hash tags fall on three different masters, and those masters.
  std::pair<std::vector<std::string>, std::vector<RedisServer*>> spread(const std::string& ns, char letter) {
    std::vector<std::string> queues;
    std::vector<RedisServer*> homes;
    for (char c = 'a'; c <= 'z' && queues.size() < 3; ++c) {
      const std::string name = std::string(1, letter).append(1, c);
      RedisServer& home = owner(bulwark::detail::redis::key_slot("{" + ns + ":" + name + "}"), *nodes[0]);
      if (std::find(homes.begin(), homes.end(), &home) != homes.end()) continue;
      queues.push_back(name);
      homes.push_back(&home);
    }
    REQUIRE(queues.size() == 3);
    return {queues, homes};
  }

  // Moves `slot` from `from` to `to` as redis-cli --cluster reshard does,
  // slowly (a few keys at a time), so the processes meet the migration.
  void move(int slot, RedisServer& from, RedisServer& to) {
    const std::string s = std::to_string(slot);
    const std::string from_id = ask(from, {"CLUSTER", "MYID"}).str, to_id = ask(to, {"CLUSTER", "MYID"}).str;
    REQUIRE(ask(to, {"CLUSTER", "SETSLOT", s, "IMPORTING", from_id}).str == "OK");
    REQUIRE(ask(from, {"CLUSTER", "SETSLOT", s, "MIGRATING", to_id}).str == "OK");
    for (;;) {
      const Value keys = ask(from, {"CLUSTER", "GETKEYSINSLOT", s, "5"});
      if (keys.elements.empty()) break;
      std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(to.port()), "", "0", "5000", "KEYS"};
      for (const Value& k : keys.elements) migrate.push_back(k.str);
      ask(from, migrate);
      std::this_thread::sleep_for(10ms);
    }
    for (RedisServer* n : {&to, &from}) REQUIRE(ask(*n, {"CLUSTER", "SETSLOT", s, "NODE", to_id}).str == "OK");
    for (auto& n : nodes) {
      if (n.get() != &to && n.get() != &from) ask(*n, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
    }
  }
};

// A serve config on the cluster `addresses` (host:port seeds), namespace
// `ns`, with `redis` keys added (and `top` keys at the top); written to `path`.
std::string serve_config(const std::string& path, const std::string& ns, const json& addresses, const json& redis = {},
                         const json& top = {}) {
  json r = {{"url", "redis://127.0.0.1/0"}, {"namespace", ns}, {"cluster", {{"addresses", addresses}}}};
  if (redis.is_object()) r.update(redis);
  json config = {{"workers", 2},
                 {"logging", {{"level", "warn"}}},
                 {"server", {{"listen", "127.0.0.1:0"}, {"drain_timeout_ms", 1000}}},
                 {"queue", {{"backend", "redis"}}},
                 {"redis", r},
                 {"retention", {{"max_finished", 100'000}}}};
  if (top.is_object()) config.update(top);
  std::ofstream(path) << config.dump();
  return path;
}

// How many times each id ended as succeeded in `stream` on `node`.
std::map<std::string, int> ends_in(const RedisServer& node, const std::string& stream);

std::map<std::string, int> ends_in(const RedisServer& node, const std::string& stream) {
  std::map<std::string, int> ends;
  for (const Value& entry : Cluster::ask(node, {"XRANGE", stream, "-", "+"}).elements) {
    const Value& fields = entry.elements.at(1);
    for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
      if (fields.elements[i + 1].str == "succeeded") ++ends[fields.elements[i].str];
    }
  }
  return ends;
}

}  // namespace

TEST_SUITE("redis cluster") {
  TEST_CASE("a slot map learnt from one node, and the namespace's slot moved mid-run: every accepted job ends once" *
            doctest::timeout(240)) {
    Cluster cluster;
    const int slot = bulwark::detail::redis::key_slot("{clus}");
    RedisServer& home = cluster.owner(slot, *cluster.nodes[0]);
    RedisServer* seed = nullptr;  // a node that does not hold the namespace
    for (auto& n : cluster.nodes) {
      if (n.get() != &home) seed = n.get();
    }
    const std::string config = serve_config(home.dir() + "/serve.json", "clus", {"127.0.0.1:" + std::to_string(seed->port())},
                                            {{"lease_ms", 5000}});
    ServeProcess serve(config, home.dir() + "/serve.err");
    const std::uint16_t port = serve.port_from_banner();
    REQUIRE(http(port, "POST", "/v1/jobs", json{{"id", "first"}, {"type", "echo"}, {"payload", 0}}.dump()).status == 201);
    REQUIRE(eventually([&] { return http(port, "GET", "/v1/jobs/first").json()["state"] == "succeeded"; }, 20s));
    CHECK(Cluster::ask(home, {"EXISTS", "{clus}:job:first"}).integer == 1);  // on the slot's master, not the seed

    bulwark::testing::SubmitLoad load({port}, "c-");
    std::this_thread::sleep_for(1s);
    RedisServer& to = *seed;
    cluster.move(slot, home, to);
    std::this_thread::sleep_for(2s);
    load.stop();
    std::vector<std::string> accepted = load.accepted();
    accepted.push_back("first");

    CHECK(&cluster.owner(slot, *cluster.nodes[0]) == &to);
    INFO("accepted " << accepted.size());
    CHECK(accepted.size() > 100);
    const auto all_ended = [&] {
      for (const std::string& id : accepted) {
        const auto r = http(port, "GET", "/v1/jobs/" + id);
        if (r.status != 200 || r.json()["state"] != "succeeded") return false;
      }
      return true;
    };
    CHECK(eventually(all_ended, 60s));
    // Each end once in the ended stream, now on the new master.
    std::map<std::string, int> ends = ends_in(to, "{clus}:ended");
    std::size_t once = 0;
    for (const std::string& id : accepted) {
      if (ends[id] == 1) {
        ++once;
      } else if (ends[id] != 1) {
        MESSAGE(id << " ended " << ends[id] << " times");
      }
    }
    CHECK(once == accepted.size());
    CHECK(Cluster::ask(to, {"EXISTS", "{clus}:job:" + accepted.back()}).integer == 1);
    // The move was met (MOVED, TRYAGAIN: counted as unavailable), not missed.
    const std::string metrics = http(port, "GET", "/metrics").body;
    const std::string line = "bulwark_redis_errors_total{kind=\"unavailable\"} ";
    const auto at = metrics.find(line);
    REQUIRE(at != std::string::npos);
    const double met = std::stod(metrics.substr(at + line.size()));
    MESSAGE("accepted " << accepted.size() << "; unavailable answers met (MOVED, TRYAGAIN): " << met);
    CHECK(met > 0);
  }

  TEST_CASE("named queues spread over the shards, each queue's keys on its own master, and a queue's slot moved "
            "mid-run: every queue's jobs run, every accepted job ends once" * doctest::timeout(240)) {
    Cluster cluster;
    const auto spread = cluster.spread("sh", 'q');
    const std::vector<std::string>& queues = spread.first;
    const std::vector<RedisServer*>& homes = spread.second;
    const std::string config =
        serve_config(homes[0]->dir() + "/serve.json", "sh", {"127.0.0.1:" + std::to_string(homes[0]->port())},
                     {{"lease_ms", 5000}}, {{"queues", {{queues[0], 3}, {queues[1], 2}, {queues[2], 1}}}});
    ServeProcess serve(config, homes[0]->dir() + "/serve.err");
    const std::uint16_t port = serve.port_from_banner();

    bulwark::testing::SubmitLoad load({port}, "s-", queues);  // job n to queues[n % 3]
    std::this_thread::sleep_for(1s);
    // Every queue's jobs on its own master: three shards at work.
    const std::vector<std::string> early = load.accepted();
    REQUIRE(early.size() >= 6);
    for (std::size_t q = 0; q < 3; ++q) {
      INFO("queue " << queues[q]);
      CHECK(Cluster::ask(*homes[q], {"EXISTS", "{sh:" + queues[q] + "}:job:" + early[q]}).integer == 1);
      CHECK(Cluster::ask(*homes[q], {"DBSIZE"}).integer > 0);
    }
    // The second queue's slot moves to the third queue's master, mid-run.
    const int moved = bulwark::detail::redis::key_slot("{sh:" + queues[1] + "}");
    cluster.move(moved, *homes[1], *homes[2]);
    std::this_thread::sleep_for(2s);
    load.stop();
    CHECK(&cluster.owner(moved, *cluster.nodes[0]) == homes[2]);
    const std::vector<std::string> accepted = load.accepted();
    INFO("accepted " << accepted.size());
    CHECK(accepted.size() > 100);
    CHECK(load.lost(port, 60s) == 0);
    // Each end once, in its queue's ended stream on the master that holds it now.
    std::map<std::string, int> ends;
    for (std::size_t q = 0; q < 3; ++q) {
      RedisServer& now = cluster.owner(bulwark::detail::redis::key_slot("{sh:" + queues[q] + "}"), *cluster.nodes[0]);
      for (const auto& [id, n] : ends_in(now, "{sh:" + queues[q] + "}:ended")) ends[id] += n;
    }
    std::size_t once = 0;
    for (const std::string& id : accepted) {
      if (ends[id] == 1) {
        ++once;
      } else {
        MESSAGE(id << " ended " << ends[id] << " times");
      }
    }
    CHECK(once == accepted.size());
    // Counts and the listing see every queue; each has its consumer.
    const json stats = http(port, "GET", "/v1/stats").json();
    for (const std::string& q : queues) {
      INFO("queue " << q);
      CHECK(stats["queues"][q]["consumers"] == 1);
      CHECK(stats["queues"][q]["waiting"] == 0);
    }
    CHECK(stats["by_state"]["succeeded"].get<std::size_t>() >= accepted.size());
    const json page = http(port, "GET", "/v1/jobs?limit=9").json();
    REQUIRE(page["jobs"].size() == 9);
    std::set<std::string> listed;
    for (const json& j : page["jobs"]) listed.insert(j["queue"].get<std::string>());
    CHECK(listed.size() == 3);  // the newest nine, merged from the three queues
    MESSAGE("accepted " << accepted.size() << " over three queues on three masters, one moved mid-run");
  }

  TEST_CASE("a flow whose children live on other masters: each end is relayed to the parent's slot, the parent starts "
            "once" * doctest::timeout(240)) {
    Cluster cluster;
    const auto spread = cluster.spread("fl", 'f');
    const std::vector<std::string>& queues = spread.first;
    const std::vector<RedisServer*>& homes = spread.second;
    const std::string config =
        serve_config(homes[0]->dir() + "/serve.json", "fl", {"127.0.0.1:" + std::to_string(homes[0]->port())},
                     {{"lease_ms", 5000}}, {{"queues", {{queues[0], 1}, {queues[1], 1}, {queues[2], 1}}}});
    ServeProcess serve(config, homes[0]->dir() + "/serve.err");
    const std::uint16_t port = serve.port_from_banner();
    // The parent in the first queue; 30 children over the other two, and a
    // child of its own queue whose child lives on the third master.
    json flow = {{"type", "collect"}, {"id", "fan"}, {"queue", queues[0]}, {"children", json::array()}};
    for (int i = 0; i < 30; ++i) {
      flow["children"].push_back({{"type", "echo"}, {"payload", i}, {"queue", queues[1 + i % 2]}});
    }
    flow["children"].push_back({{"type", "collect"}, {"queue", queues[0]},
                                {"children", {{{"type", "echo"}, {"payload", "deep"}, {"queue", queues[2]}}}}});
    auto r = http(port, "POST", "/v1/jobs", flow.dump());
    REQUIRE_MESSAGE(r.status == 201, r.body);
    json parent;
    REQUIRE(eventually([&] {
      parent = http(port, "GET", "/v1/jobs/fan").json();
      return parent["state"] == "succeeded";
    }, 60s));
    REQUIRE(parent["result"].size() == 31);
    CHECK(parent["result"][7] == 7);
    CHECK(parent["result"][30] == json::array({"deep"}));
    CHECK(parent["attempts"] == 1);
    CHECK(parent["children"]["succeeded"] == 31);
    // The children on their own masters, the parent's list of ends on its.
    CHECK(Cluster::ask(*homes[1], {"EXISTS", "{fl:" + queues[1] + "}:job:fan.c0"}).integer == 1);
    CHECK(Cluster::ask(*homes[2], {"EXISTS", "{fl:" + queues[2] + "}:job:fan.c1"}).integer == 1);
    CHECK(Cluster::ask(*homes[0], {"HLEN", "{fl:" + queues[0] + "}:kids-ended:fan"}).integer == 31);
    CHECK(ends_in(*homes[0], "{fl:" + queues[0] + "}:ended")["fan"] == 1);
    for (std::size_t q = 0; q < 3; ++q) {
      CHECK(Cluster::ask(*homes[q], {"ZCARD", "{fl:" + queues[q] + "}:relay"}).integer == 0);  // every relay carried
    }
    // A child on another master that fails: the parent fails as child_failed.
    r = http(port, "POST", "/v1/jobs",
             json{{"type", "collect"}, {"id", "fan2"}, {"queue", queues[0]},
                  {"children", {{{"type", "fail"}, {"queue", queues[2]}, {"max_attempts", 1}}}}}.dump());
    REQUIRE(r.status == 201);
    REQUIRE(eventually([&] {
      parent = http(port, "GET", "/v1/jobs/fan2").json();
      return parent["state"] == "failed";
    }, 60s));
    CHECK(parent["error"]["kind"] == "child_failed");
    CHECK(parent["error"]["message"].get<std::string>().find("fan2.c0") != std::string::npos);
  }

  TEST_CASE("the namespace's master SIGKILLed: a replica takes over, the process follows; with min_replicas_ack 1 "
            "no accepted job is lost" * doctest::timeout(240)) {
    Cluster cluster(2);  // the promoted replica keeps one replica to acknowledge writes
    const int slot = bulwark::detail::redis::key_slot("{fail}");
    RedisServer& home = cluster.owner(slot, *cluster.nodes[0]);
    json seeds = json::array();
    for (auto& n : cluster.nodes) seeds.push_back("127.0.0.1:" + std::to_string(n->port()));
    const std::string config = serve_config(home.dir() + "/serve.json", "fail", seeds,
                                            {{"min_replicas_ack", 1}, {"lease_ms", 2000}, {"command_timeout_ms", 500},
                                             {"connect_timeout_ms", 300}});
    ServeProcess serve(config, cluster.nodes[1]->dir() + "/serve.err");
    const std::uint16_t port = serve.port_from_banner();

    bulwark::testing::SubmitLoad load({port}, "k-");
    std::this_thread::sleep_for(1500ms);
    load.killed();
    home.kill_hard();
    const bool recovered = load.wait_recovered(20s, 90s);
    std::this_thread::sleep_for(1s);
    load.stop();
    CHECK(recovered);
    RedisServer* alive = nullptr;
    for (auto& n : cluster.nodes) {
      if (n.get() != &home) alive = n.get();
    }
    CHECK(&cluster.owner(slot, *alive) != &home);  // a replica serves the slot now
    const std::size_t accepted = load.accepted().size();
    const std::size_t lost = load.lost(port, 30s);
    MESSAGE("cluster failover: " << accepted << " accepted, " << lost << " lost, submits refused for "
                                 << load.refused_seconds() << " s");
    CHECK(accepted > 100);
    CHECK(lost == 0);
  }
}
