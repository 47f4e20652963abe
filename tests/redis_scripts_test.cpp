// The redis backend's transitions, each a Lua script, run directly against
// a real redis-server (started by the test on a unix socket). Times are
// logical milliseconds passed in, so nothing here depends on the clock.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "redis/connection.hpp"
#include "redis/keys.hpp"
#include "redis/scripts.hpp"
#include "support/redis_server.hpp"

using namespace std::chrono_literals;
using bulwark::detail::redis::Connection;
using bulwark::detail::redis::Keys;
using bulwark::detail::redis::RedisError;
using bulwark::detail::redis::Value;
namespace redis = bulwark::detail::redis;

namespace {

struct Leased {
  std::string id;
  std::string attempt;
  bool retry = false;
  std::string priority;
  std::string fence;
};

// The scripts with one named queue's keys ("": the default), on one
// connection, called as the broker calls them.
struct Queue {
  explicit Queue(const bulwark::testing::RedisServer& server, std::string ns = "t", const std::string& queue = "")
      : keys(ns, queue), c(server.connect()) {}

  // The enqueue script's first arguments for `jobs` jobs (a named queue's
  // sequence numbers reserved as the broker does).
  // `cluster`: as on a cluster, where a named queue's call may not name the
  // namespace's sequence key.
  bool cluster = false;
  std::vector<std::string> head(long long capacity, std::size_t jobs, long long queue_capacity = 0,
                                long long elsewhere = 0) {
    std::string seq;
    if (!keys.is_default() && cluster) {
      seq = std::to_string(c.command({"INCRBY", keys.seq, std::to_string(jobs)}).as_integer() -
                           static_cast<long long>(jobs));
    }
    return {std::to_string(capacity), keys.job_prefix, std::to_string(elsewhere), std::to_string(queue_capacity),
            seq, keys.queue};
  }
  Value run_enqueue(const std::vector<std::string>& args) {
    if (keys.is_default() || !cluster) return c.eval(redis::kEnqueue, {keys.index, keys.ready, keys.scheduled, keys.held, keys.seq}, args);
    return c.eval(redis::kEnqueue, {keys.index, keys.ready, keys.scheduled, keys.held}, args);
  }
  long long enqueue(const std::string& id, int priority = 0, long long due = 0, long long now = 1000,
                    long long capacity = 1000, int max_attempts = 3, long long queue_capacity = 0,
                    long long elsewhere = 0) {
    std::vector<std::string> args = head(capacity, 1, queue_capacity, elsewhere);
    args.insert(args.end(), {id, "echo", R"({"x":1})", std::to_string(priority), std::to_string(max_attempts), "0",
                             std::to_string(due), std::to_string(now), "", "", "", "", "", "", "", "", "", "", "", "", ""});
    return run_enqueue(args).elements.at(0).as_integer();
  }
  std::vector<std::string> paused;  // job types paused, as the broker passes them
  std::vector<Leased> fetch(const std::string& owner, int max, long long now = 1000, long long lease = 30'000) {
    std::vector<std::string> args = {std::to_string(max), std::to_string(now), std::to_string(lease), owner,
                                     keys.job_prefix, "0"};
    args.insert(args.end(), paused.begin(), paused.end());
    Value v = c.eval(redis::kFetch, {keys.leased, keys.held, keys.ready}, args);
    std::vector<Leased> out;
    for (const Value& job : v.elements) {
      out.push_back({job.elements[0].str, job.elements[6].str, job.elements[8].str == "1", job.elements[3].str,
                     job.elements[13].str});
    }
    return out;
  }
  // One batch of acks: {lease, how, state, due} each; the reply per ack.
  struct AckOf {
    Leased lease;
    std::string how, state;
    long long due = 0;
  };
  std::vector<long long> ack(const std::string& owner, const std::vector<AckOf>& acks, long long now = 2000,
                             long long keep = 100, long long cutoff = 0) {
    std::vector<std::string> args = {owner, std::to_string(now), std::to_string(keep), std::to_string(keep),
                                     std::to_string(cutoff), std::to_string(cutoff), keys.job_prefix, "0"};
    for (const AckOf& a : acks) {
      args.insert(args.end(), {a.lease.id, a.lease.fence, a.how, a.state,
                               a.how == "retry" ? R"({"error":{"kind":"exception"}})" : R"({"result":1})",
                               std::to_string(a.due), ""});
    }
    Value v = c.eval(redis::kAck, {keys.leased, keys.done, keys.dead, keys.index, keys.ended, keys.counts, keys.scheduled},
                     args);
    std::vector<long long> out;  // 1 written; 0 fenced (holders: who holds it instead)
    holders.clear();
    for (const Value& e : v.elements) {
      out.push_back(e.type == Value::Type::integer ? e.as_integer() : 0);
      holders.push_back(e.type == Value::Type::integer ? std::string() : e.str);
    }
    return out;
  }
  std::vector<std::string> holders;  // of the last ack call, per attempt: "" written, else who holds the job
  long long finish(const Leased& l, const std::string& owner, const std::string& state, long long now = 2000,
                   long long keep = 100, long long cutoff = 0) {
    return ack(owner, {{l, "done", state}}, now, keep, cutoff).at(0);
  }
  long long retry(const Leased& l, const std::string& owner, long long due) {
    return ack(owner, {{l, "retry", "", due}}).at(0);
  }
  // 1, or who holds the lease instead.
  std::string extend(const Leased& l, const std::string& owner, long long deadline) {
    const Value v =
        c.eval(redis::kExtend, {keys.job(l.id), keys.leased}, {l.id, owner, l.fence, std::to_string(deadline)});
    return v.type == Value::Type::integer ? std::to_string(v.integer) : "held by " + v.str;
  }
  long long promote(long long now) {
    std::vector<std::string> args = {std::to_string(now), "100", keys.job_prefix};
    args.insert(args.end(), paused.begin(), paused.end());
    return c.eval(redis::kPromote, {keys.scheduled, keys.ready, keys.held}, args).as_integer();
  }
  // The rows of the leases `owner` takes over at `now`.
  std::vector<Value> take_over(const std::string& owner, long long now, long long lease = 30'000) {
    return c.eval(redis::kRecover, {keys.leased},
                  {std::to_string(now), "100", owner, std::to_string(now + lease), keys.job_prefix})
        .elements;
  }
  std::vector<std::string> recover(long long now, const std::string& owner = "taker") {
    std::vector<std::string> ids;
    for (const Value& row : take_over(owner, now)) ids.push_back(row.elements[0].str);
    return ids;
  }
  void trim(long long keep_dead = 100, long long done_cutoff = 0) {
    c.eval(redis::kTrim, {keys.dead, keys.done, keys.index, keys.counts},
           {keys.job_prefix, std::to_string(keep_dead), "100", "0", std::to_string(done_cutoff)});
  }
  long long cancel(const std::string& id, long long now = 1500) {
    return c.eval(redis::kCancel,
                  {keys.job(id), keys.done, keys.index, keys.ended, keys.counts, keys.ready, keys.scheduled, keys.held},
                  {id, std::to_string(now), "100", keys.job_prefix, "0", keys.cancel})
        .as_integer();
  }
  long long requeue(const std::string& id, long long capacity = 1000, long long elsewhere = 0) {
    return c.eval(redis::kRequeue, {keys.job(id), keys.dead, keys.ready, keys.scheduled, keys.held},
                  {id, std::to_string(capacity), std::to_string(elsewhere)})
        .as_integer();
  }
  // {queued, scheduled, running, failed, succeeded, cancelled}
  std::vector<long long> counts() {
    std::vector<long long> out;
    for (const Value& v :
         c.eval(redis::kCounts, {keys.leased, keys.dead, keys.counts, keys.held, keys.ready, keys.scheduled}, {})
             .elements) {
      out.push_back(v.as_integer());
    }
    return out;
  }
  std::string field(const std::string& id, const std::string& name) {
    Value v = c.command({"HGET", keys.job(id), name});
    return v.is_nil() ? "<nil>" : v.str;
  }
  long long card(const std::string& key) { return c.command({"ZCARD", key}).as_integer(); }
  long long count(const char* state) {
    const Value v = c.command({"HGET", keys.counts, state});
    return v.is_nil() ? 0 : v.as_integer();
  }
  // The ended stream as "id=state" entries, oldest first.
  std::vector<std::string> ended() {
    std::vector<std::string> out;
    for (const Value& entry : c.command({"XRANGE", keys.ended, "-", "+"}).elements) {
      const Value& f = entry.elements.at(1);  // id, state, id, state, ...
      for (std::size_t i = 0; i + 1 < f.elements.size(); i += 2) {
        std::string line = f.elements[i].str;
        line.append("=").append(f.elements[i + 1].str);
        out.push_back(std::move(line));
      }
    }
    return out;
  }

  Keys keys;
  Connection c;
};

// "<prefix><i>", built with append (GCC 12's -Wrestrict misfires on operator+).
std::string numbered(const char* prefix, int i) { return std::string(prefix).append(std::to_string(i)); }

std::vector<std::string> ids_of(const std::vector<Leased>& ls) {
  std::vector<std::string> out;
  for (const Leased& l : ls) out.push_back(l.id);
  return out;
}

}  // namespace

TEST_SUITE("redis_scripts") {
  TEST_CASE("a Redis URL is read or refused with the reason") {
    auto tcp = redis::parse_url("redis://10.0.0.5:6380/2");
    REQUIRE(tcp);
    CHECK(tcp->host == "10.0.0.5");
    CHECK(tcp->port == 6380);
    CHECK(tcp->db == 2);
    auto plain = redis::parse_url("redis://cache");
    REQUIRE(plain);
    CHECK(plain->port == 6379);
    CHECK(plain->db == 0);
    auto sock = redis::parse_url("unix:///run/redis.sock?db=3");
    REQUIRE(sock);
    CHECK(sock->unix_path == "/run/redis.sock");
    CHECK(sock->db == 3);
    auto login = redis::parse_url("rediss://app:p%40ss%3Aw0rd@cache.example:6380/1");
    REQUIRE(login);
    CHECK(login->tls);
    CHECK(login->username == "app");
    CHECK(login->password == "p@ss:w0rd");
    CHECK(login->host == "cache.example");
    CHECK(login->port == 6380);
    CHECK(login->text() == "rediss://app@cache.example:6380/1");  // never the password
    auto only_password = redis::parse_url("redis://:pw@10.0.0.1");
    REQUIRE(only_password);
    CHECK(only_password->username.empty());
    CHECK(only_password->password == "pw");
    CHECK(only_password->text().find("pw") == std::string::npos);
    auto v6 = redis::parse_url("redis://[::1]:7000/0");
    REQUIRE(v6);
    CHECK(v6->host == "::1");
    CHECK(v6->port == 7000);
    CHECK(v6->text() == "redis://[::1]:7000/0");
    std::string why;
    for (const char* bad : {"http://x", "redis://", "redis://h:0", "redis://h:70000", "redis://h/x", "unix://rel",
                            "unix:///s?db=x", "", "redis://u:p%4@h", "redis://u:p%zz@h", "redis://[::1:7000",
                            "rediss://:pw@"}) {
      CAPTURE(bad);
      CHECK_FALSE(redis::parse_url(bad, &why));
      CHECK_FALSE(why.empty());
      CHECK(why.find("pw") == std::string::npos);  // the reason never quotes the URL
    }
  }

  TEST_CASE("every Redis error answer is classified once, by its first word") {
    using Kind = redis::RedisError::Kind;
    const auto of = [](const char* reply) { return redis::RedisError::from_reply(reply); };
    for (const char* busy : {"LOADING loading", "BUSY script", "MASTERDOWN link", "READONLY replica", "TRYAGAIN split",
                             "CLUSTERDOWN down", "ASK 12 127.0.0.1:7001"}) {
      CAPTURE(busy);
      CHECK(of(busy).kind() == Kind::unavailable);
      CHECK_FALSE(of(busy).login());
      CHECK_FALSE(of(busy).moved());
    }
    CHECK(of("MOVED 5468 127.0.0.1:7002").kind() == Kind::unavailable);
    CHECK(of("MOVED 5468 127.0.0.1:7002").moved());
    CHECK(of("WRONGPASS invalid").login());
    CHECK(of("NOAUTH needed").login());
    CHECK(of("ERR AUTH <password> called without any password configured").login());
    CHECK(of("OOM command not allowed").kind() == Kind::full);
    CHECK(of("ERR wrong number of arguments").kind() == Kind::other);
    CHECK(of("MOVEDX nothing").kind() == Kind::other);  // the whole first word
  }

  TEST_CASE("a key's cluster slot is CRC16 of its hash tag, as the Redis Cluster spec gives it") {
    CHECK(redis::key_slot("123456789") == 0x31C3);  // the spec's CRC16 check value
    CHECK(redis::key_slot("") == 0);
    CHECK(redis::key_slot("{user1000}.following") == redis::key_slot("user1000"));
    CHECK(redis::key_slot("{user1000}.followers") == redis::key_slot("{user1000}.following"));
    CHECK(redis::key_slot("foo{}{bar}") != redis::key_slot("bar"));  // an empty tag: the whole key
    CHECK(redis::key_slot("foo{{bar}}zap") == redis::key_slot("{bar"));  // from the first '{' to the next '}'
    CHECK(redis::key_slot("foo{bar}{zap}") == redis::key_slot("bar"));
    CHECK(redis::key_slot("{ns}:job:1") == redis::key_slot("{ns}:ready"));
    for (const char* key : {"a", "bulwark", "{clus}", "\xff\xfe"}) CHECK(redis::key_slot(key) < 16384);
  }

  TEST_CASE("a missing or stopped server is 'unavailable', not a reply error" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Connection c = server.connect();
    CHECK(c.command({"PING"}).str == "PONG");
    server.kill_hard();
    try {
      c.command({"PING"});
      FAIL("a command to a dead server returned");
    } catch (const RedisError& e) {
      CHECK(e.unavailable());
    }
    CHECK_FALSE(c.usable());
    CHECK_THROWS_AS(server.connect(), RedisError);
    server.start();
    Connection again = server.connect();
    CHECK_THROWS_WITH_AS(again.command({"NOSUCHCOMMAND"}), doctest::Contains("unknown command"), RedisError);
    CHECK(again.usable());
  }

  TEST_CASE("enqueue refuses a taken id and a full queue, and schedules a delayed job" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    CHECK(q.enqueue("a") == 1);
    CHECK(q.enqueue("b") == 2);
    CHECK(q.enqueue("a") == -1);
    CHECK(q.enqueue("c", 0, 0, 1000, 2) == -2);
    CHECK(q.enqueue("later", 0, 5000) == 3);
    CHECK(q.field("later", "state") == "scheduled");
    CHECK(q.card(q.keys.scheduled) == 1);
    CHECK(q.card(q.keys.ready) == 2);
    CHECK(q.card(q.keys.index) == 3);
  }

  TEST_CASE("one enqueue call admits a batch, each job on its own: a repeated id or a full queue refuses only it" *
            doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    std::vector<std::string> args = q.head(3, 5);
    for (const char* id : {"m1", "m2", "m1", "m3", "m4"}) {
      args.insert(args.end(), {id, "echo", "null", "0", "3", "0", "0", "1000", "", "", "", "", "", "", "", "", "", "", "", "", ""});
    }
    std::vector<long long> got;
    for (const Value& v : q.run_enqueue(args).elements) {
      got.push_back(v.as_integer());
    }
    CHECK(got == std::vector<long long>{1, 2, -1, 3, -2});  // the second m1 is a duplicate; m4 finds 3 waiting
    CHECK(q.card(q.keys.ready) == 3);
    CHECK(ids_of(q.fetch("p", 5)) == std::vector<std::string>{"m1", "m2", "m3"});
  }

  TEST_CASE("a unique job's lock answers later submits with its holder until the window passes" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    const std::string lock = q.keys.unique("echo", "k:1");
    const auto unique_args = [&](const std::string& id, const std::string& window_ms) {
      return std::vector<std::string>{id, "echo", "null", "0", "3", "0", "0", "1000", "", "", lock, window_ms, "k:1", "", "", "", "", "", "", "", ""};
    };
    std::vector<std::string> args = q.head(100, 2);
    for (const char* id : {"u1", "u2"}) {
      const auto more = unique_args(id, "60000");
      args.insert(args.end(), more.begin(), more.end());
    }
    const Value first = q.run_enqueue(args);
    REQUIRE(first.elements.size() == 2);
    CHECK(first.elements[0].as_integer() == 1);
    REQUIRE(first.elements[1].elements.size() == 2);  // the second in the same batch: held by u1
    CHECK(first.elements[1].elements[0].str == "u1");
    CHECK(first.elements[1].elements[1].str == "queued");
    CHECK(q.field("u1", "unique_key") == "k:1");
    CHECK(q.c.command({"GET", lock}).str == "u1");
    CHECK(q.c.command({"PTTL", lock}).as_integer() > 50'000);
    // The lock gone (its window passed): the key is free again.
    q.c.command({"DEL", lock});
    args = q.head(100, 1);
    const auto again = unique_args("u3", "5");
    args.insert(args.end(), again.begin(), again.end());
    CHECK(q.run_enqueue(args).elements.at(0).as_integer() == 2);
    CHECK(q.card(q.keys.ready) == 2);
  }

  TEST_CASE("fetch hands out by priority, fresh before retry, then submit order, each once" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    q.enqueue("low", 1);
    q.enqueue("high", 7);
    q.enqueue("mid", 4);
    q.enqueue("high2", 7);
    auto first = q.fetch("p1", 2);
    CHECK(ids_of(first) == std::vector<std::string>{"high", "high2"});
    CHECK(first[0].attempt == "1");
    CHECK(q.field("high", "owner") == "p1");
    CHECK(q.field("high", "state") == "running");
    // A retry of priority 4 goes after the fresh job of priority 4.
    auto mid = q.fetch("p1", 1);
    REQUIRE(ids_of(mid) == std::vector<std::string>{"mid"});
    CHECK(q.retry(mid[0], "p1", 1500) == 1);
    q.enqueue("mid2", 4);
    CHECK(q.promote(1400) == 0);  // not due yet
    CHECK(q.promote(1500) == 1);
    auto rest = q.fetch("p2", 10, 1600);
    CHECK(ids_of(rest) == std::vector<std::string>{"mid2", "mid", "low"});
    CHECK(rest[1].retry);
    CHECK(rest[1].attempt == "2");
    CHECK(q.fetch("p2", 10).empty());
    CHECK(q.card(q.keys.leased) == 5);
  }

  TEST_CASE("a paused type's jobs are set aside at fetch, count as waiting, and go back in order on resume" *
            doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    q.enqueue("a", 1);
    q.enqueue("b", 5);
    q.paused = {"other", "echo"};
    CHECK(q.fetch("p1", 10).empty());  // every job here is an echo
    CHECK(q.card(q.keys.held) == 2);
    CHECK(q.card(q.keys.ready) == 0);
    CHECK(q.field("a", "state") == "queued");
    CHECK(q.enqueue("c", 0, 0, 1000, 2) == -2);  // held jobs count against the capacity
    CHECK(q.counts().at(0) == 2);                // and as queued
    q.promote(1000);
    CHECK(q.card(q.keys.held) == 2);  // still paused: they stay aside
    q.paused = {"other"};
    q.promote(1000);
    CHECK(q.card(q.keys.held) == 0);
    CHECK(ids_of(q.fetch("p1", 10)) == std::vector<std::string>{"b", "a"});  // priority order kept
  }

  TEST_CASE("racing fetchers on their own connections never get the same job" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    {
      Queue q(server);
      for (int i = 0; i < 2000; ++i) REQUIRE(q.enqueue(numbered("j", i), i % 10, 0, 1000, 10'000) > 0);
    }
    std::vector<std::vector<std::string>> got(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        Queue mine(server);
        for (;;) {
          auto batch = mine.fetch(numbered("p", t), 7);
          if (batch.empty()) return;
          for (auto& l : batch) got[t].push_back(l.id);
        }
      });
    }
    for (auto& t : threads) t.join();
    std::set<std::string> all;
    std::size_t total = 0;
    for (const auto& g : got) {
      total += g.size();
      all.insert(g.begin(), g.end());
    }
    CHECK(total == 2000);
    CHECK(all.size() == 2000);
  }

  TEST_CASE("a finish is fenced: after a lease was taken over, only the new holder's counts" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    q.enqueue("x");
    auto old = q.fetch("dead-process", 1, 1000, 100);
    REQUIRE(old.size() == 1);
    CHECK(old[0].fence == "1");
    CHECK(q.extend(old[0], "dead-process", 1200) == "1");
    CHECK(q.recover(1150, "alive").empty());  // not expired yet: the extension counts
    const auto rows = q.take_over("alive", 1300);
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].elements[0].str == "x");
    CHECK(rows[0].elements[6].str == "1");   // the attempt that was lost
    CHECK(rows[0].elements[13].str == "2");  // a new fence
    CHECK(rows[0].elements[14].str == "dead-process");
    CHECK(q.field("x", "state") == "running");  // the taker ends the lost attempt itself
    CHECK(q.field("x", "owner") == "alive");
    CHECK(q.field("x", "lost_ms") == "1300");
    CHECK(q.finish(old[0], "dead-process", "succeeded") == 0);
    CHECK(q.holders == std::vector<std::string>{"alive"});
    CHECK(q.extend(old[0], "dead-process", 99'999) == "held by alive");
    Leased taken{"x", "1", false, "0", "2"};
    CHECK(q.retry(taken, "alive", 1400) == 1);  // the taker's retry decision, fenced by its own lease
    CHECK(q.promote(1400) == 1);
    auto now = q.fetch("alive", 1, 1400);
    REQUIRE(now.size() == 1);
    CHECK(now[0].retry);
    CHECK(now[0].attempt == "2");
    CHECK(now[0].fence == "3");
    CHECK(q.finish(now[0], "alive", "succeeded") == 1);
    CHECK(q.field("x", "state") == "succeeded");
    CHECK(q.field("x", "owner") == "alive");  // who ran it last
    CHECK(q.finish(now[0], "alive", "succeeded") == 0);  // once
    CHECK(q.card(q.keys.leased) == 0);
    CHECK(q.ended() == std::vector<std::string>{"x=succeeded"});  // one end on the stream, the fenced ones none
  }

  TEST_CASE("a take-over says who held the lease and whether a cancel was asked for" *
            doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    q.enqueue("once", 0, 0, 1000, 1000, 1);
    q.enqueue("stop");
    auto a = q.fetch("p", 2, 1000, 10);
    REQUIRE(a.size() == 2);
    CHECK(q.cancel("stop") == 2);
    CHECK(q.field("stop", "cancel") == "1");
    auto rows = q.take_over("taker", 2000);
    REQUIRE(rows.size() == 2);
    std::map<std::string, const Value*> by_id;
    for (const Value& r : rows) by_id[r.elements[0].str] = &r;
    REQUIRE(by_id.count("once") == 1);
    REQUIRE(by_id.count("stop") == 1);
    CHECK(by_id["once"]->elements[4].str == "1");  // max_attempts: the taker decides it is a dead letter
    CHECK(by_id["once"]->elements[15].str == "0");  // when p was last seen: the caller's to fill
    CHECK(by_id["once"]->elements[16].str == "0");
    CHECK(by_id["stop"]->elements[16].str == "1");
    CHECK(q.card(q.keys.dead) == 0);  // nothing ended by the script
    CHECK(q.ended().empty());
    CHECK(q.take_over("again", 2001).empty());  // each lease is taken over once
  }

  TEST_CASE("cancel ends a waiting job at once and publishes the id of a running one" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    Connection listener = server.connect();
    listener.command({"SUBSCRIBE", q.keys.cancel});
    q.enqueue("waiting");
    q.enqueue("delayed", 0, 9000);
    q.enqueue("running");
    CHECK(q.cancel("waiting") == 1);
    CHECK(q.cancel("delayed") == 1);
    CHECK(q.card(q.keys.scheduled) == 0);
    auto r = q.fetch("p", 5);
    REQUIRE(ids_of(r) == std::vector<std::string>{"running"});  // the cancelled ones are gone from ready
    CHECK(q.cancel("running") == 2);
    const Value message = listener.next_message();
    REQUIRE(message.elements.size() == 3);
    CHECK(message.elements[0].str == "message");
    CHECK(message.elements[2].str == "running");
    CHECK(q.cancel("waiting") == 3);
    CHECK(q.cancel("nobody") == 0);
    CHECK(q.ended() == std::vector<std::string>{"waiting=cancelled", "delayed=cancelled"});  // not the running one
    CHECK(q.count("cancelled") == 2);
  }

  TEST_CASE("retention keeps the newest finished jobs and forgets the rest entirely" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    for (int i = 0; i < 5; ++i) q.enqueue(numbered("d", i));
    auto all = q.fetch("p", 5);
    REQUIRE(all.size() == 5);
    for (int i = 0; i < 5; ++i) CHECK(q.finish(all[static_cast<std::size_t>(i)], "p", "succeeded", 2000 + i, 3) == 1);
    CHECK(q.card(q.keys.done) == 3);
    CHECK(q.count("succeeded") == 3);  // the counts follow what retention forgot
    CHECK(q.field("d0", "state") == "<nil>");
    CHECK(q.field("d1", "state") == "<nil>");
    CHECK(q.field("d2", "state") == "succeeded");
    CHECK(q.card(q.keys.index) == 3);
  }

  TEST_CASE("one ack call writes a batch: each attempt fenced on its own, ends on the stream in order" *
            doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    q.enqueue("b1");
    auto leased = q.fetch("p", 1, 1000, 100);  // b1 on a short lease
    for (const char* id : {"b2", "b3", "b4"}) q.enqueue(id);
    auto rest = q.fetch("p", 3, 1050, 100'000);
    leased.insert(leased.end(), rest.begin(), rest.end());
    REQUIRE(leased.size() == 4);
    REQUIRE(q.recover(1200, "other") == std::vector<std::string>{"b1"});  // lost, and taken over elsewhere
    const auto replies = q.ack("p", {{leased[0], "done", "succeeded"},
                                      {leased[1], "done", "failed"},
                                      {leased[2], "retry", "", 5000},
                                      {leased[3], "done", "succeeded"}});
    CHECK(replies == std::vector<long long>{0, 1, 1, 1});
    CHECK(q.holders == std::vector<std::string>{"other", "", "", ""});
    CHECK(q.field("b1", "state") == "running");  // still the other process's
    CHECK(q.field("b2", "state") == "failed");
    CHECK(q.field("b3", "state") == "scheduled");
    CHECK(q.field("b4", "state") == "succeeded");
    CHECK(q.card(q.keys.dead) == 1);
    CHECK(q.card(q.keys.done) == 1);
    CHECK(q.card(q.keys.scheduled) == 1);
    CHECK(q.count("succeeded") == 1);
    CHECK(q.ended() == std::vector<std::string>{"b2=failed", "b4=succeeded"});
  }

  TEST_CASE("retention forgets records finished before the cutoff, at a finish and at a sweep" *
            doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    for (int i = 0; i < 4; ++i) q.enqueue(numbered("t", i));
    auto all = q.fetch("p", 4);
    REQUIRE(all.size() == 4);
    CHECK(q.finish(all[0], "p", "succeeded", 1000) == 1);
    CHECK(q.finish(all[1], "p", "succeeded", 2000) == 1);
    CHECK(q.finish(all[2], "p", "succeeded", 5000, 100, /*cutoff=*/1500) == 1);  // t0 is older than the cutoff
    CHECK(q.field("t0", "state") == "<nil>");
    CHECK(q.field("t1", "state") == "succeeded");
    CHECK(q.card(q.keys.done) == 2);
    q.trim(100, /*done_cutoff=*/4000);  // a sweep ages the lists
    CHECK(q.field("t1", "state") == "<nil>");
    CHECK(q.field("t2", "state") == "succeeded");
    CHECK(q.field("t3", "state") == "running");  // only finished records age
    CHECK(q.count("succeeded") == 1);
    CHECK(q.card(q.keys.index) == 2);
  }

  TEST_CASE("requeue puts a dead letter back with fresh attempts" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    q.enqueue("f");
    q.enqueue("ok");
    auto l = q.fetch("p", 2);
    REQUIRE(l.size() == 2);
    CHECK(q.finish(l[0], "p", "failed") == 1);
    CHECK(q.card(q.keys.dead) == 1);
    CHECK(q.requeue("ok") == -1);  // still running
    CHECK(q.requeue("f", 0) == -2);
    CHECK(q.requeue("f") == 1);
    CHECK(q.requeue("missing") == 0);
    CHECK(q.card(q.keys.dead) == 0);
    CHECK(q.field("f", "attempts") == "0");
    auto again = q.fetch("p", 1);
    REQUIRE(again.size() == 1);
    CHECK(again[0].id == "f");
    CHECK(again[0].attempt == "1");
    CHECK_FALSE(again[0].retry);
  }

  TEST_CASE("a script Redis forgot (restart, SCRIPT FLUSH) is loaded again" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue q(server);
    CHECK(q.enqueue("a") == 1);
    q.c.command({"SCRIPT", "FLUSH"});
    CHECK(q.enqueue("b") == 2);
  }

  TEST_CASE("named queues: each under its own hash tag, numbered from the namespace's sequence, each with a capacity" *
            doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue d(server);
    Queue hi(server, "t", "hi");
    Queue lo(server, "t", "lo");
    CHECK(hi.keys.ready == "{t:hi}:ready");
    CHECK(redis::key_slot(hi.keys.job("x")) == redis::key_slot("{t:hi}"));
    CHECK(redis::key_slot(hi.keys.unique("echo", "k")) == redis::key_slot("{t:hi}"));
    CHECK(redis::key_slot(d.keys.seq) == redis::key_slot(d.keys.ready));
    lo.cluster = true;  // its numbers reserved first, as on a cluster
    CHECK(d.enqueue("d") == 1);
    CHECK(hi.enqueue("h") == 2);  // one sequence for the namespace: listings merge by it
    CHECK(lo.enqueue("l") == 3);
    CHECK(d.enqueue("d2") == 4);
    CHECK(hi.field("h", "queue") == "hi");
    CHECK(d.field("d", "queue") == "<nil>");
    CHECK(hi.card(hi.keys.ready) == 1);
    CHECK(d.card(d.keys.ready) == 2);
    // Each queue's fetch takes only its own.
    CHECK(ids_of(hi.fetch("p", 5)) == std::vector<std::string>{"h"});
    CHECK(ids_of(d.fetch("p", 5)) == std::vector<std::string>{"d", "d2"});
    // Capacity: the queue's own, and the namespace's with the others' count.
    CHECK(lo.enqueue("l2", 0, 0, 1000, 100, 3, 2) > 0);
    CHECK(lo.enqueue("l3", 0, 0, 1000, 100, 3, 2) == -3);
    CHECK(lo.enqueue("l3", 0, 0, 1000, 10, 3, 0, 8) == -2);  // 2 here and 8 elsewhere
    CHECK(lo.enqueue("l3", 0, 0, 1000, 11, 3, 0, 8) > 0);
  }

  TEST_CASE("a named queue's delays, retries, cancels and requeues stay in that queue" * doctest::timeout(30)) {
    bulwark::testing::RedisServer server;
    Queue d(server);
    Queue q(server, "t", "small");
    CHECK(q.enqueue("a") > 0);
    CHECK(q.enqueue("b", 0, 5000) > 0);
    CHECK(q.card(q.keys.scheduled) == 1);
    CHECK(q.promote(6000) == 1);
    CHECK(q.card(q.keys.ready) == 2);
    CHECK(d.card(d.keys.ready) == 0);
    // A retry waits in its queue's scheduled set, and comes back to its ready set.
    auto leased = q.fetch("p", 1, 7000);
    REQUIRE(leased.size() == 1);
    CHECK(q.retry(leased[0], "p", 9000) == 1);
    CHECK(q.card(q.keys.scheduled) == 1);
    CHECK(q.promote(9500) == 1);
    CHECK(q.card(q.keys.ready) == 2);
    // A cancel ends it in its queue.
    CHECK(q.cancel("b") == 1);
    CHECK(q.card(q.keys.ready) == 1);
    CHECK(q.ended() == std::vector<std::string>{"b=cancelled"});
    CHECK(q.counts() == std::vector<long long>{1, 0, 0, 0, 0, 1});
    // A dead letter requeued goes back to its queue.
    auto last = q.fetch("p", 1, 10'000);
    REQUIRE(last.size() == 1);
    CHECK(q.finish(last[0], "p", "failed") == 1);
    CHECK(q.requeue(last[0].id, 10, 10) == -2);  // 10 wait elsewhere
    CHECK(q.requeue(last[0].id) == 1);
    CHECK(q.card(q.keys.ready) == 1);
    CHECK(d.card(d.keys.ready) == 0);
  }
}
