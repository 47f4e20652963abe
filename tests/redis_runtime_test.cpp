// Runtimes with queue.backend "redis" sharing one real redis-server: every
// process runs jobs any process admitted, and answers for every job.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "bulwark/runtime.hpp"
#include "redis/keys.hpp"
#include "redis/redis_broker.hpp"
#include "redis/scripts.hpp"
#include "support/helpers.hpp"
#include "support/redis_server.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::JobState;
using bulwark::Runtime;

namespace {

bulwark::RuntimeOptions shared(const bulwark::testing::RedisServer& server, unsigned workers = 1) {
  auto o = bulwark::testing::test_options(workers);
  o.backend = bulwark::QueueBackend::redis;
  o.redis.url = server.url();
  o.redis.ns.assign(1, 'q');
  o.redis.lease = 2s;
  o.shutdown_timeout = 2s;
  return o;
}

// Leases every job waiting in namespace "q" to a process that then dies
// (nothing renews the lease), after heartbeating once as `holder`.
std::size_t lease_to_dead_process(const bulwark::testing::RedisServer& server, const std::string& holder,
                                  std::chrono::milliseconds lease) {
  namespace redis = bulwark::detail::redis;
  const redis::Keys keys("q");
  auto c = server.connect();
  const long long now = redis::epoch_ms(bulwark::Clock::now());
  c.command({"ZADD", keys.processes, std::to_string(now), holder});
  const auto leased = c.eval(redis::kFetch, {keys.leased, keys.held, keys.ready},
                             {"100", std::to_string(now), std::to_string(lease.count()), holder, keys.job_prefix});
  return leased.elements.size();
}

}  // namespace

TEST_SUITE("redis_runtime") {
  TEST_CASE("a lease lost by a dead process ends through the failure path: kind lease_lost, backoff, counted, "
            "in the event stream" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    auto producer_options = shared(server);
    producer_options.redis.consume = false;
    Runtime producer(bulwark::testing::builtins(), producer_options);
    REQUIRE(producer.submit({.type = "echo", .id = "again", .max_attempts = 2}));
    REQUIRE(producer.submit({.type = "echo", .id = "once", .max_attempts = 1}));
    REQUIRE(lease_to_dead_process(server, "gone-host:4242:dead01", 200ms) == 2);
    auto o = shared(server);
    o.retry.initial = 300ms;  // the lost attempt's retry waits its backoff
    o.retry.max = 300ms;
    Runtime taker(bulwark::testing::builtins(), o);
    taker.events_after(0, 1);  // the stream records while it is read
    const auto once = bulwark::testing::await_terminal(taker, "once", 20s);
    REQUIRE(once);
    CHECK(once->state == JobState::failed);
    REQUIRE(once->error);
    CHECK(once->error->kind == bulwark::FailureKind::lease_lost);
    CHECK(once->error->message.find("gone-host:4242:dead01") != std::string::npos);
    CHECK(once->error->message.find("last seen") != std::string::npos);
    const auto again = bulwark::testing::await_terminal(taker, "again", 20s);
    REQUIRE(again);
    CHECK(again->state == JobState::succeeded);
    CHECK(again->attempts == 2);
    const auto stats = taker.stats();
    CHECK(stats.by_type.at("echo").failed.at("lease_lost") == 1);     // bulwark_jobs_failed_total{kind="lease_lost"}
    CHECK(stats.by_type.at("echo").recovered.at("lease_lost") == 2);  // both lost attempts
    CHECK(stats.by_type.at("echo").retried == 1);
    CHECK(stats.breaker_opened == 0);
    bool retried_event = false, dead_event = false;
    CHECK(bulwark::testing::eventually([&] {  // the events come back through Redis's stream
      for (const auto& e : taker.events_after(0, 1000).events) {
        if (e.job_id == "again" && e.state == JobState::scheduled && e.failure == bulwark::FailureKind::lease_lost) {
          retried_event = true;
        }
        if (e.job_id == "once" && e.state == JobState::failed && e.failure == bulwark::FailureKind::lease_lost) {
          dead_event = true;
        }
      }
      return retried_event && dead_event;
    }));
  }

  TEST_CASE("a process whose lease was taken over: its handler sees lease_valid false and a smaller token; "
            "its result is dropped and counted" * doctest::timeout(60)) {
    namespace redis = bulwark::detail::redis;
    bulwark::testing::RedisServer server;
    std::atomic<bool> running{false};
    std::atomic<bool> saw_invalid{false};
    std::atomic<std::uint64_t> token{0};
    std::atomic<bool> valid_at_start{false};
    bulwark::Registry r = bulwark::testing::builtins();
    r.add("fenced", [&](bulwark::JobContext& ctx, const nlohmann::json&) -> nlohmann::json {
      token = ctx.fencing_token();
      valid_at_start = ctx.lease_valid();
      running = true;
      // A cooperative handler: it stops when its lease is gone.
      while (ctx.lease_valid() && !ctx.stop_requested()) std::this_thread::sleep_for(5ms);
      saw_invalid = !ctx.lease_valid();
      return "late";
    });
    auto o = shared(server);
    o.redis.lease = 600ms;  // renewed every 200 ms
    Runtime rt(std::move(r), o);
    REQUIRE(rt.submit({.type = "fenced", .id = "f", .max_attempts = 3}));
    REQUIRE(bulwark::testing::eventually([&] { return running.load(); }));
    CHECK(token.load() == 1);
    CHECK(valid_at_start.load());
    // Another process takes the lease over (as the recover script does).
    const redis::Keys keys("q");
    auto c = server.connect();
    const long long newer = c.command({"HINCRBY", keys.job("f"), "fence", "1"}).as_integer();
    c.command({"HSET", keys.job("f"), "owner", "thief:1:abc"});
    c.command({"ZADD", keys.leased, "99999999999999", "f"});  // and renews it
    REQUIRE(bulwark::testing::eventually([&] { return saw_invalid.load(); }, 10s));
    CHECK(token.load() < static_cast<std::uint64_t>(newer));
    REQUIRE(bulwark::testing::eventually([&] { return rt.stats().results_dropped == 1; }, 10s));
    std::this_thread::sleep_for(200ms);
    // Its end was not written: the job is still the thief's.
    CHECK(c.command({"HGET", keys.job("f"), "owner"}).str == "thief:1:abc");
    CHECK(c.command({"HGET", keys.job("f"), "state"}).str == "running");
  }


  TEST_CASE("no worker waits for Redis: while Redis is paused, posted callables run and a job's `then` is "
            "written once it answers" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    auto o = shared(server, 1);  // one worker: anything it waited for would hold up the callables
    o.redis.command_timeout = 2s;  // a worker that waited for Redis would wait this long
    Runtime rt(bulwark::testing::builtins(), o);
    bulwark::JobSpec spec{.type = "sleep", .payload = {{"ms", 200}}, .id = "parent"};
    spec.then = {{"type", "echo"}, {"payload", {{"k", 1}}}};
    REQUIRE(rt.submit(spec));
    REQUIRE(bulwark::testing::eventually([&] { return rt.stats().running == 1; }));
    auto c = server.connect();
    c.command({"CLIENT", "PAUSE", "3000", "ALL"});
    const auto paused_at = bulwark::Clock::now();
    // The parent succeeds during the pause; its follow-up cannot be admitted
    // yet. The worker goes on to the posted callables all the same.
    std::vector<bulwark::JobHandle<int>> handles;
    for (int i = 0; i < 50; ++i) handles.push_back(rt.post([i] { return i; }));
    for (int i = 0; i < 50; ++i) CHECK(handles[static_cast<std::size_t>(i)].get() == i);
    const auto callables_done = bulwark::Clock::now() - paused_at;
    MESSAGE("50 posted callables done " << std::chrono::duration<double>(callables_done).count()
                                        << " s into a 3 s Redis pause");
    CHECK(callables_done < 1500ms);  // not after a command timeout: nothing on the worker waited for Redis
    // Once Redis answers, the acker writes the follow-up, then the end.
    std::this_thread::sleep_until(paused_at + 3100ms);  // reads during the pause time out (an error, not a wait)
    const auto parent = bulwark::testing::await_terminal(rt, "parent", 20s);
    REQUIRE(parent);
    CHECK(parent->state == JobState::succeeded);
    const auto follow_up = bulwark::testing::await_terminal(rt, "parent.then", 20s);
    REQUIRE(follow_up);
    CHECK(follow_up->state == JobState::succeeded);
    CHECK(follow_up->result["previous"]["id"] == "parent");
  }

  TEST_CASE("one event stream for the queue: events of jobs another process ran, in one numbering, resumable "
            "from any process" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    auto producer_options = shared(server);
    producer_options.redis.consume = false;  // runs nothing: every job event of a run is another process's
    Runtime a(bulwark::testing::builtins(), producer_options);
    Runtime b(bulwark::testing::builtins(), shared(server));
    (void)a.events_after(0);  // a reader on A; B learns of it from Redis
    std::this_thread::sleep_for(600ms);
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
      auto s = a.submit({.type = "echo", .payload = i});
      REQUIRE(s);
      ids.push_back(s.id);
    }
    std::set<std::string> run_elsewhere;
    std::string b_process;
    for (const auto& p : b.processes()) {
      if (p.self) b_process = p.id;
    }
    REQUIRE_FALSE(b_process.empty());
    bulwark::EventPage page;
    REQUIRE(bulwark::testing::eventually([&] {
      page = a.events_after(0, 1000);
      run_elsewhere.clear();
      for (const auto& e : page.events) {
        if (e.state == JobState::succeeded && e.process == b_process) run_elsewhere.insert(e.job_id);
      }
      return run_elsewhere.size() == ids.size();
    }, 20s));
    std::uint64_t last = 0;
    for (const auto& e : page.events) {
      CHECK(e.id > last);  // one order
      last = e.id;
      CHECK_FALSE(e.process.empty());
    }
    CHECK(bulwark::to_json(page.events.back())["process"].is_string());
    // B numbers them the same: a reader resumes there from A's number.
    REQUIRE(page.events.size() >= 2);
    const std::uint64_t resume_after = page.events[page.events.size() - 2].id;
    bulwark::EventPage there;
    REQUIRE(bulwark::testing::eventually([&] {
      there = b.events_after(resume_after, 10);
      return !there.events.empty() && there.events.front().id == page.events.back().id;
    }, 10s));
    CHECK(there.events.front().job_id == page.events.back().job_id);
    CHECK(there.events.front().state == page.events.back().state);
  }

  TEST_CASE("two processes share the work and answer for every job" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    Runtime a(bulwark::testing::builtins(), shared(server));
    Runtime b(bulwark::testing::builtins(), shared(server));
    std::vector<std::string> ids;
    for (int i = 0; i < 200; ++i) {
      auto s = a.submit({.type = "sleep", .payload = {{"ms", 1}}});
      REQUIRE(s);
      ids.push_back(s.id);
    }
    REQUIRE(a.wait_idle(30s));
    std::size_t from_b = 0;
    for (const std::string& id : ids) {
      auto r = b.get(id);  // any process answers
      REQUIRE(r);
      CHECK(r->state == JobState::succeeded);
      CHECK(r->attempts == 1);
    }
    // Both ran some (each holds at most workers + prefetch at a time).
    from_b = b.stats().by_type["sleep"].succeeded;
    CHECK(from_b > 0);
    CHECK(from_b < 200);
    CHECK(a.stats().by_type["sleep"].succeeded + from_b == 200);
    // A listing pages across processes with the cursor one of them gave.
    auto first = a.page({.type = "sleep", .limit = 150});
    REQUIRE(first);
    REQUIRE_FALSE(first->next_cursor.empty());
    auto rest = b.page({.type = "sleep", .limit = 150, .cursor = first->next_cursor});
    REQUIRE(rest);
    std::set<std::string> listed;
    for (const auto& r : first->jobs) listed.insert(r.id);
    for (const auto& r : rest->jobs) listed.insert(r.id);
    CHECK(listed.size() == 200);
    CHECK(rest->next_cursor.empty());
    // Both processes are registered, alive, and each knows which is itself.
    const auto procs = b.processes();
    REQUIRE(procs.size() == 2);
    CHECK(procs[0].alive);
    CHECK(procs[1].alive);
    CHECK(procs[0].self != procs[1].self);
    CHECK(procs[0].pid == static_cast<int>(getpid()));
    CHECK(procs[0].workers == 1);
    for (const auto& p : procs) {  // each one's health, from its heartbeat
      CHECK(p.verdict == "healthy");
      REQUIRE(p.health["workers"].is_array());
      CHECK(p.health["workers"].size() == 1);
    }
  }

  TEST_CASE("on_finished_anywhere hears every wanted end, whichever process wrote it, once" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    std::mutex mutex;
    std::map<std::string, int> heard;                   // guarded by mutex
    std::map<std::string, JobState> states;             // guarded by mutex
    std::atomic<int> local{0};
    auto o = shared(server);
    o.on_finished = [&](const bulwark::JobRecord&) { local.fetch_add(1); };
    o.on_finished_anywhere = [&](const bulwark::JobRecord& r) {
      std::lock_guard lock(mutex);
      ++heard[r.id];
      states[r.id] = r.state;
    };
    o.finished_filter = [](const bulwark::JobId& id) { return id.rfind("mine-", 0) == 0; };
    Runtime a(bulwark::testing::builtins(), o);
    Runtime b(bulwark::testing::builtins(), shared(server, 2));
    for (int i = 0; i < 60; ++i) {
      std::string id = "mine-";
      id.append(std::to_string(i));
      REQUIRE(a.submit({.type = i % 10 == 0 ? "fail" : "sleep", .payload = {{"ms", 10}}, .id = id,
                        .max_attempts = 1}));
    }
    REQUIRE(b.submit({.type = "echo", .id = "theirs"}));
    REQUIRE(bulwark::testing::eventually([&] {
      std::lock_guard lock(mutex);
      return heard.size() == 60;
    }, 30s));
    std::this_thread::sleep_for(300ms);  // time for a duplicate or an unwanted end to show up
    std::lock_guard lock(mutex);
    CHECK(heard.size() == 60);  // not "theirs": the filter said no
    for (const auto& entry : heard) {
      const std::string& id = entry.first;
      CAPTURE(id);
      CHECK(entry.second == 1);
      const bool failing = std::stoi(id.substr(5)) % 10 == 0;
      CHECK(states[id] == (failing ? JobState::failed : JobState::succeeded));
    }
    CHECK(local.load() < 60);  // b ran some of them: a's own on_finished did not hear those
  }

  TEST_CASE("a process with redis.consume false submits and answers but runs nothing of the queue" *
            doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    auto producer_options = shared(server);
    producer_options.redis.consume = false;
    Runtime producer(bulwark::testing::builtins(), producer_options);
    std::vector<bulwark::JobSpec> specs(40, bulwark::JobSpec{.type = "sleep", .payload = {{"ms", 1}}});
    const auto submitted = producer.submit_many(std::move(specs));
    std::this_thread::sleep_for(300ms);
    CHECK(producer.stats().queue_depth == 40);  // nobody has taken any
    Runtime consumer(bulwark::testing::builtins(), shared(server, 2));
    REQUIRE(producer.wait_idle(30s));
    for (const auto& s : submitted) CHECK(producer.get(s.id)->state == JobState::succeeded);
    CHECK(producer.stats().by_type["sleep"].succeeded == 0);
    CHECK(consumer.stats().by_type["sleep"].succeeded == 40);
    CHECK(producer.post([] { return 42; }).get() == 42);  // its own posted callables still run
  }

  TEST_CASE("an id is taken across processes; a failing job is retried, dead-lettered and requeued" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    Runtime a(bulwark::testing::builtins(), shared(server));
    Runtime b(bulwark::testing::builtins(), shared(server));
    REQUIRE(a.submit({.type = "echo", .id = "once"}));
    const auto again = b.submit({.type = "echo", .id = "once"});
    REQUIRE(again.error);
    CHECK(again.error->code == bulwark::SubmitError::Code::duplicate_id);
    REQUIRE(a.submit({.type = "fail", .payload = {{"throw", "runtime_error"}}, .id = "bad", .max_attempts = 2}));
    REQUIRE(a.wait_idle(30s));
    auto r = b.get("bad");
    REQUIRE(r);
    CHECK(r->state == JobState::failed);
    CHECK(r->attempts == 2);
    REQUIRE(r->error);
    CHECK(r->error->type == "std::runtime_error");
    CHECK_FALSE(r->error->frames.empty());  // the throw site, symbolized where it was caught
    auto dead = b.dead_letters();
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].id == "bad");
    CHECK(b.requeue("bad") == bulwark::RequeueResult::requeued);
    CHECK(b.requeue("once") == bulwark::RequeueResult::not_failed);
    REQUIRE(a.wait_idle(30s));
    CHECK(a.get("bad")->attempts == 2);
    CHECK(a.get("bad")->state == JobState::failed);
  }

  TEST_CASE("a cancel from any process ends a waiting job and stops a running one" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    Runtime a(bulwark::testing::builtins(), shared(server));
    Runtime b(bulwark::testing::builtins(), shared(server));
    REQUIRE(a.submit({.type = "echo", .id = "later", .delay = 1h}));
    CHECK(b.cancel("later") == bulwark::CancelResult::cancelled);
    CHECK(a.get("later")->state == JobState::cancelled);
    REQUIRE(a.submit({.type = "sleep", .payload = {{"ms", 20'000}}, .id = "long", .max_attempts = 1}));
    REQUIRE(bulwark::testing::eventually([&] { return a.get("long")->state == JobState::running; }, 10s));
    CHECK(b.cancel("long") == bulwark::CancelResult::stop_requested);
    REQUIRE(bulwark::testing::eventually([&] { return bulwark::is_terminal(a.get("long")->state); }, 10s));
    CHECK(a.get("long")->state == JobState::cancelled);
    CHECK(a.cancel("long") == bulwark::CancelResult::already_terminal);
    CHECK(a.cancel("nobody") == bulwark::CancelResult::not_found);
  }

  TEST_CASE("a stopping process leaves what waits in the shared queue for the others" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    std::string running_id;
    {
      Runtime a(bulwark::testing::builtins(), shared(server));
      running_id = a.submit({.type = "sleep", .payload = {{"ms", 200}}, .id = "busy"}).id;
      REQUIRE(a.submit({.type = "echo", .id = "later", .delay = 300ms}));
      for (int i = 0; i < 20; ++i) REQUIRE(a.submit({.type = "sleep", .payload = {{"ms", 50}}}));
      REQUIRE(bulwark::testing::eventually([&] { return a.get("busy")->state == JobState::running; }));
      const auto report = a.shutdown(100ms);
      CHECK(report.not_run == 0);  // nothing of the shared queue ends with this process
      auto later = a.get("later");
      REQUIRE(later);
      CHECK_FALSE(bulwark::is_terminal(later->state));
    }
    Runtime b(bulwark::testing::builtins(), shared(server));
    REQUIRE(b.wait_idle(30s));
    CHECK(b.get("later")->state == JobState::succeeded);
    const auto counts = b.stats().by_state;
    CHECK(counts.at("succeeded") == 22);
    CHECK(b.processes().size() == 1);  // the stopped one left the list
  }

  TEST_CASE("Redis restarted in the middle of a run: no accepted job is lost, the processes carry on" *
            doctest::timeout(120)) {
    bulwark::testing::RedisServer server(/*append_only=*/true);
    auto o = shared(server, 2);
    o.redis.lease = 5s;
    Runtime a(bulwark::testing::builtins(), o);
    Runtime b(bulwark::testing::builtins(), o);
    std::vector<std::string> ids;
    for (int i = 0; i < 300; ++i) {
      auto s = (i % 2 == 0 ? a : b).submit({.type = "sleep", .payload = {{"ms", 5}}});
      REQUIRE(s);
      ids.push_back(s.id);
    }
    REQUIRE(bulwark::testing::eventually([&] { return a.stats().by_type["sleep"].succeeded > 20; }, 30s));
    server.stop();  // SIGTERM: Redis writes its append-only file and exits
    std::this_thread::sleep_for(300ms);
    server.start();
    REQUIRE(a.wait_idle(60s));
    REQUIRE(b.wait_idle(60s));
    int succeeded = 0;
    for (const std::string& id : ids) {
      auto r = a.get(id);
      REQUIRE(r);
      succeeded += r->state == JobState::succeeded ? 1 : 0;
    }
    CHECK(succeeded == 300);
    // Each loop reconnects after its backoff (at most 1.5 s).
    CHECK(bulwark::testing::eventually([&] { return a.counters().backend_reachable; }, 5s));
    CHECK(bulwark::testing::eventually([&] { return b.counters().backend_reachable; }, 5s));
  }

  TEST_CASE("a Redis that cannot be reached refuses submits with backend_unavailable" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    auto o = shared(server);
    Runtime a(bulwark::testing::builtins(), o);
    server.stop();
    const auto s = a.submit({.type = "echo"});
    REQUIRE(s.error);
    CHECK(s.error->code == bulwark::SubmitError::Code::backend_unavailable);
    // The feeder finds it too, within a round: /readyz answers 503 from this.
    CHECK(bulwark::testing::eventually([&] { return !a.counters().backend_reachable; }, 10s));
    server.start();
    CHECK(bulwark::testing::eventually([&] { return static_cast<bool>(a.submit({.type = "echo"})); }, 10s));
    CHECK(bulwark::testing::eventually([&] { return a.counters().backend_reachable; }, 10s));
    CHECK(a.wait_idle(20s));
  }

  TEST_CASE("a pause holds for every process and outlives them; any process resumes" * doctest::timeout(60)) {
    bulwark::testing::RedisServer server;
    const auto paused_in = [](const Runtime& rt) {
      for (const bulwark::TypeControl& t : rt.types()) {
        if (t.name == "echo") return t.stats.paused;
      }
      return false;
    };
    std::vector<std::string> ids;
    {
      Runtime a(bulwark::testing::builtins(), shared(server, 2));
      Runtime b(bulwark::testing::builtins(), shared(server, 2));
      REQUIRE(a.pause("echo") == bulwark::PauseResult::changed);
      CHECK(bulwark::testing::eventually([&] { return paused_in(b); }, 10s));  // b hears at its heartbeat
      for (int i = 0; i < 20; ++i) {
        auto s = b.submit({.type = "echo", .payload = i});
        REQUIRE(s);
        ids.push_back(s.id);
      }
      REQUIRE(b.submit({.type = "sleep", .payload = {{"ms", 1}}}));  // other types run meanwhile
      CHECK(bulwark::testing::eventually([&] { return a.stats().by_state["succeeded"] == 1; }, 10s));
      std::this_thread::sleep_for(200ms);
      for (const std::string& id : ids) CHECK(a.get(id)->state == JobState::queued);
    }
    // Both processes are gone; a new one starts paused and a resume from it
    // runs every job.
    Runtime c(bulwark::testing::builtins(), shared(server, 2));
    CHECK(bulwark::testing::eventually([&] { return paused_in(c); }, 10s));
    for (const std::string& id : ids) CHECK(c.get(id)->state == JobState::queued);
    REQUIRE(c.resume("echo") == bulwark::PauseResult::changed);
    REQUIRE(c.wait_idle(20s));
    for (const std::string& id : ids) CHECK(c.get(id)->state == JobState::succeeded);
  }
}
