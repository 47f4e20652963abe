#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <latch>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sstream>

#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include "builtin_workers.hpp"
#include "bulwark/runtime.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::JobContext;
using bulwark::JobSpec;
using bulwark::JobState;
using bulwark::Registry;
using bulwark::Runtime;
using bulwark::RuntimeOptions;
using nlohmann::json;

namespace {

using bulwark::testing::builtins;
using bulwark::testing::test_options;


// A job that blocks its worker until opened.
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> waiting{0};
  void wait() {
    std::unique_lock lock(mutex);
    ++waiting;
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard lock(mutex);
      open = true;
    }
    cv.notify_all();
  }
  void await_waiters(int n) {
    while (waiting.load() < n) std::this_thread::sleep_for(1ms);
  }
};

bulwark::JobRecord finished_record(Runtime& rt, const bulwark::JobId& id) {
  REQUIRE(rt.wait_idle(20s));
  auto r = rt.get(id);
  REQUIRE(r.has_value());
  return *r;
}

__attribute__((noinline)) int runtime_test_throw_site(int x) {
  if (x > 0) throw std::invalid_argument("posted failure");
  return x;
}

void failures_leave_workers_alive(unsigned workers) {
  auto options = test_options(workers);
  options.retry.max_attempts = 1;
  Runtime rt(builtins(), options);
  for (int i = 0; i < 10'000; ++i) {
    const char* kinds[] = {"runtime_error", "int", "c_string", "custom", "nested", "bad_alloc"};
    auto s = rt.submit({.type = "fail", .payload = {{"throw", kinds[i % 6]}}});
    REQUIRE(s);
  }
  REQUIRE(rt.wait_idle(60s));
  auto stats = rt.stats();
  CHECK(stats.failed == 10'000);
  CHECK(stats.attempts_failed == 10'000);
  CHECK(stats.workers == workers);
  // Every worker still takes jobs: each of these waits until all of them run
  // at once, which only happens if all `workers` threads are alive and free.
  std::latch all_running(workers);
  std::vector<bulwark::JobHandle<void>> handles;
  for (unsigned i = 0; i < workers; ++i) handles.push_back(rt.post([&] { all_running.arrive_and_wait(); }));
  for (auto& h : handles) h.get();
  CHECK(rt.stats().workers == workers);
}

}  // namespace

TEST_SUITE("Runtime") {
  TEST_CASE("a registered job runs and its record holds the result" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(2));
    auto s = rt.submit({.type = "echo", .payload = {{"hello", "world"}}});
    REQUIRE(s);
    CHECK(s.state == JobState::queued);
    auto r = finished_record(rt, s.id);
    CHECK(r.state == JobState::succeeded);
    CHECK(r.result == json{{"hello", "world"}});
    CHECK(r.attempts == 1);
    CHECK(r.started_at.has_value());
    CHECK(r.finished_at.has_value());
    CHECK_FALSE(r.error.has_value());
  }

  TEST_CASE("wait(id, timeout) returns the record once the job has ended, or as it is when time is up" *
            doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(2));
    auto quick = rt.submit({.type = "sleep", .payload = {{"ms", 100}}});
    REQUIRE(quick);
    auto r = rt.wait(quick.id, 20s);
    REQUIRE(r);
    CHECK(r->state == JobState::succeeded);
    auto slow = rt.submit({.type = "sleep", .payload = {{"ms", 2000}}});
    REQUIRE(slow);
    r = rt.wait(slow.id, 30ms);
    REQUIRE(r);
    CHECK_FALSE(bulwark::is_terminal(r->state));
    CHECK_FALSE(rt.wait("no-such-job", 10ms).has_value());
    CHECK(rt.cancel(slow.id) != bulwark::CancelResult::not_found);
  }

  TEST_CASE("events: nothing is recorded until read; then each transition, numbered, in order" *
            doctest::timeout(30)) {
    RuntimeOptions o = test_options(1);
    o.retry.max_attempts = 2;
    o.retry.initial = 1ms;
    o.retry.max = 1ms;
    Runtime rt(builtins(), o);
    auto before = rt.submit({.type = "echo", .payload = 1});
    REQUIRE(rt.wait(before.id, 10s));
    bulwark::EventPage page = rt.events_after(0);
    CHECK(page.events.empty());  // not recorded: nobody was reading
    auto s = rt.submit({.type = "flaky", .payload = {{"fail_times", 1}}});
    REQUIRE(s);
    REQUIRE(rt.wait(s.id, 10s)->state == JobState::succeeded);
    // With a shared queue the events come back through Redis's stream.
    REQUIRE(bulwark::testing::eventually([&] {
      page = rt.events_after(0);
      return std::any_of(page.events.begin(), page.events.end(), [&](const bulwark::Event& e) {
        return e.job_id == s.id && e.state == JobState::succeeded;
      });
    }));
    std::vector<std::string> states;
    std::uint64_t last = 0;
    for (const bulwark::Event& e : page.events) {
      CHECK(e.id > last);
      last = e.id;
      if (e.supervisor || e.job_id != s.id) continue;
      states.emplace_back(bulwark::to_string(*e.state));
      if (*e.state == JobState::scheduled) CHECK(e.failure == bulwark::FailureKind::exception);
    }
    std::string seen;  // said when the check fails
    for (const bulwark::Event& e : page.events) {
      seen.append(std::to_string(e.id)).append(e.supervisor ? " supervisor " : " ").append(e.job_id).append(" ");
      seen.append(e.state ? bulwark::to_string(*e.state) : "-").append("; ");
    }
    INFO("events: " << seen);
    CHECK(states == std::vector<std::string>{"queued", "running", "scheduled", "running", "succeeded"});
    CHECK(page.newest == last);
    CHECK(rt.events_after(last).events.empty());
    CHECK(bulwark::to_json(page.events.front())["kind"] == "job");
  }

  TEST_CASE("bad submits are refused with a reason and counted" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(1));
    auto unknown = rt.submit({.type = "fial"});
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error->code == bulwark::SubmitError::Code::unknown_type);
    CHECK(unknown.error->message == "unknown job type 'fial'");

    auto bad_payload = rt.submit({.type = "sleep", .payload = {{"ms", "soon"}}});
    REQUIRE_FALSE(bad_payload);
    CHECK(bad_payload.error->code == bulwark::SubmitError::Code::invalid);
    CHECK(bad_payload.error->message.find("payload.ms") != std::string::npos);

    auto bad_priority = rt.submit({.type = "echo", .priority = 12});
    REQUIRE_FALSE(bad_priority);
    CHECK(bad_priority.error->message.rfind("priority:", 0) == 0);

    REQUIRE(rt.submit({.type = "echo", .id = "mine"}));
    auto dup = rt.submit({.type = "echo", .id = "mine"});
    REQUIRE_FALSE(dup);
    CHECK(dup.error->code == bulwark::SubmitError::Code::duplicate_id);
    CHECK(rt.stats().rejected == 4);
  }

  TEST_CASE("submit_many answers each spec as submit would, in order, and runs the accepted ones" *
            doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(2));
    std::vector<bulwark::JobSpec> specs;
    for (int i = 0; i < 50; ++i) specs.push_back({.type = "echo", .payload = {{"n", i}}});
    specs[3] = {.type = "nope"};
    specs[7] = {.type = "echo", .payload = 7, .id = "twice"};
    specs[8] = {.type = "echo", .payload = 8, .id = "twice"};  // the batch's own earlier job has the id
    specs[9] = {.type = "echo", .payload = {{"n", 9}}, .delay = 100ms};
    const auto got = rt.submit_many(std::move(specs));
    REQUIRE(got.size() == 50);
    CHECK(got[3].error->code == bulwark::SubmitError::Code::unknown_type);
    CHECK(got[7].id == "twice");
    REQUIRE_FALSE(got[8]);
    CHECK(got[8].error->code == bulwark::SubmitError::Code::duplicate_id);
    CHECK(got[9].state == JobState::scheduled);
    std::set<std::string> ids;
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (i == 3 || i == 8) continue;
      CAPTURE(i);
      REQUIRE(got[i]);
      ids.insert(got[i].id);
      const auto r = finished_record(rt, got[i].id);
      CHECK(r.state == JobState::succeeded);
      CHECK(r.result == (i == 7 ? json(7) : json{{"n", i}}));
    }
    CHECK(ids.size() == 48);  // every accepted job its own id
    CHECK(rt.stats().rejected == 2);
  }

  TEST_CASE("a full queue refuses at once with a clear error, and loses nothing accepted (redis: posted callables "
            "wait apart, in this process)" * doctest::timeout(30)) {
    Gate gate;
    Registry reg;
    reg.add("block", [&](JobContext&, const json&) {
      gate.wait();
      return json();
    });
    reg.add("echo", [](JobContext&, const json& p) { return p; });
    auto options = test_options(1);
    options.queue_capacity = 3;
    options.redis.prefetch = 0;  // redis: nothing beyond the running job leaves the shared queue's count
    Runtime rt(std::move(reg), options);
    REQUIRE(rt.submit({.type = "block"}));
    gate.await_waiters(1);
    std::vector<bulwark::JobId> accepted;
    for (int i = 0; i < 3; ++i) {
      auto s = rt.submit({.type = "echo", .payload = i});
      REQUIRE(s);
      accepted.push_back(s.id);
    }
    auto full = rt.submit({.type = "echo"});
    REQUIRE_FALSE(full);
    CHECK(full.error->code == bulwark::SubmitError::Code::queue_full);
    CHECK(full.error->message.find("queue is full") != std::string::npos);
    if (!bulwark::testing::test_backend_is_redis()) {  // redis: posted callables wait in this process, apart
      auto posted = rt.post([] { return 1; });
      CHECK_FALSE(posted.accepted());
      CHECK(posted.state() == JobState::rejected);
      CHECK_THROWS_AS(posted.get(), bulwark::JobError);
    }
    gate.release();
    REQUIRE(rt.wait_idle(10s));
    for (const auto& id : accepted) CHECK(rt.get(id)->state == JobState::succeeded);
  }

  TEST_CASE("priorities order the queue, delayed jobs wait for their time" * doctest::timeout(30)) {
    Gate gate;
    std::mutex mutex;
    std::vector<int> order;
    Registry reg;
    reg.add("block", [&](JobContext&, const json&) {
      gate.wait();
      return json();
    });
    reg.add("record", [&](JobContext&, const json& p) {
      std::lock_guard lock(mutex);
      order.push_back(p.get<int>());
      return json();
    });
    auto options = test_options(1);
    options.redis.prefetch = 0;  // with Redis, a job fetched ahead would run before a later, higher one
    Runtime rt(std::move(reg), options);
    REQUIRE(rt.submit({.type = "block"}));
    gate.await_waiters(1);
    const auto start = bulwark::Clock::now();
    REQUIRE(rt.submit({.type = "record", .payload = 100, .priority = 9, .delay = 300ms}));
    REQUIRE(rt.submit({.type = "record", .payload = 1, .priority = 1}));
    REQUIRE(rt.submit({.type = "record", .payload = 5, .priority = 5}));
    REQUIRE(rt.submit({.type = "record", .payload = 2, .priority = 1}));
    gate.release();
    REQUIRE(rt.wait_idle(10s));
    CHECK(order == std::vector<int>{5, 1, 2, 100});
    CHECK(bulwark::Clock::now() - start >= 300ms);
  }

  TEST_CASE("a failing job is retried up to max_attempts, then dead-lettered" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(2));
    auto s = rt.submit({.type = "fail", .payload = {{"throw", "runtime_error"}, {"message", "boom"}},
                        .max_attempts = 3});
    REQUIRE(s);
    auto r = finished_record(rt, s.id);
    CHECK(r.state == JobState::failed);
    CHECK(r.attempts == 3);
    REQUIRE(r.error.has_value());
    CHECK(r.error->type == "std::runtime_error");
    CHECK(r.error->message == "boom");
    CHECK(bulwark::testing::top_function(*r.error).find("fail_throw_site") != std::string::npos);
    auto stats = rt.stats();
    CHECK(stats.retried == 2);
    CHECK(stats.attempts_failed == 3);
    auto dead = rt.dead_letters();
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].id == s.id);
  }

  TEST_CASE("a job's W3C trace context reaches its handler, its record and its log lines; each attempt is a span" *
            doctest::timeout(30)) {
    struct Seen {
      std::string trace_id, span_id, traceparent;
    };
    std::mutex mutex;
    std::vector<Seen> seen;
    Registry reg;
    reg.add("traced", [&](JobContext& ctx, const json&) -> json {
      {
        std::lock_guard lock(mutex);
        seen.push_back({ctx.trace_id(), ctx.span_id(), ctx.traceparent()});
      }
      if (ctx.attempt() == 1) throw std::runtime_error("first attempt fails");
      return {{"span", ctx.span_id()}};
    });
    std::ostringstream log;
    auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
    logger->set_pattern("%v");
    RuntimeOptions o = test_options(1);
    o.logging.format = "json";
    o.logging.logger = logger;
    const std::string trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    {
      Runtime rt(std::move(reg), o);
      auto s = rt.submit({.type = "traced", .max_attempts = 2,
                          .trace_parent = "00-" + trace_id + "-00f067aa0ba902b7-01", .trace_state = "vendor=abc"});
      REQUIRE(s);
      auto untraced = rt.submit({.type = "traced", .max_attempts = 2});
      REQUIRE(untraced);
      const auto r = finished_record(rt, s.id);
      CHECK(r.state == JobState::succeeded);
      REQUIRE(r.trace.has_value());
      CHECK(r.trace->trace_id == trace_id);
      CHECK(r.trace->parent_id == "00f067aa0ba902b7");
      CHECK(r.trace->state == "vendor=abc");
      CHECK(r.span_id == r.result["span"]);  // the record names the last attempt's span
      const json rendered = bulwark::to_json(r);
      CHECK(rendered["trace"]["trace_id"] == trace_id);
      CHECK(rendered["trace"]["span_id"] == r.span_id);
      CHECK(rendered["trace"]["traceparent"] == "00-" + trace_id + "-00f067aa0ba902b7-01");
      const auto plain = finished_record(rt, untraced.id);
      CHECK_FALSE(plain.trace.has_value());
      CHECK_FALSE(bulwark::to_json(plain).contains("trace"));
    }
    std::vector<Seen> traced;
    for (const Seen& v : seen) {
      if (v.trace_id.empty()) {
        CHECK(v.span_id.empty());  // no trace: nothing made up
        CHECK(v.traceparent.empty());
      } else {
        traced.push_back(v);
      }
    }
    REQUIRE(traced.size() == 2);
    for (const Seen& v : traced) {
      CHECK(v.trace_id == trace_id);
      CHECK(v.span_id.size() == 16);
      CHECK(v.traceparent == "00-" + trace_id + "-" + v.span_id + "-01");  // to pass on downstream
    }
    CHECK(traced[0].span_id != traced[1].span_id);  // a new span per attempt
    // The failed attempt's log line carries the trace and that attempt's span.
    bool logged = false;
    std::istringstream lines(log.str());
    for (std::string line; std::getline(lines, line);) {
      const json j = json::parse(line);
      if (j["message"] != "job attempt failed" || !j.contains("trace.id")) continue;
      logged = true;
      CHECK(j["trace.id"] == trace_id);
      CHECK(j["span.id"] == traced[0].span_id);
    }
    CHECK(logged);
  }

  TEST_CASE("a malformed trace_parent is refused at submit, naming the field" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(1));
    auto bad = rt.submit({.type = "echo", .trace_parent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"});
    REQUIRE_FALSE(bad);
    CHECK(bad.error->code == bulwark::SubmitError::Code::invalid);
    CHECK(bad.error->message.find("trace_parent: ") == 0);
    auto orphan = rt.submit({.type = "echo", .trace_state = "a=b"});
    REQUIRE_FALSE(orphan);
    CHECK(orphan.error->message == "trace_state: needs trace_parent");
  }

  TEST_CASE("a flaky job succeeds on the attempt after its planned failures" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(2));
    auto s = rt.submit({.type = "flaky", .payload = {{"fail_times", 2}}, .max_attempts = 3});
    auto r = finished_record(rt, s.id);
    CHECK(r.state == JobState::succeeded);
    CHECK(r.attempts == 3);
    CHECK(r.result["succeeded_on_attempt"] == 3);
    CHECK(rt.dead_letters().empty());
  }

  TEST_CASE("the fencing token grows with every attempt, and an attempt holds its lease while it runs" *
            doctest::timeout(30)) {
    std::mutex mutex;
    std::vector<std::uint64_t> tokens;  // guarded by mutex
    std::atomic<bool> all_valid{true};
    bulwark::Registry r = builtins();
    r.add("fenced", [&](bulwark::JobContext& ctx, const nlohmann::json&) -> nlohmann::json {
      {
        std::lock_guard lock(mutex);
        tokens.push_back(ctx.fencing_token());
      }
      if (!ctx.lease_valid()) all_valid = false;
      if (ctx.attempt() < 3) throw std::runtime_error("again");
      return true;
    });
    Runtime rt(std::move(r), test_options(2));
    auto s = rt.submit({.type = "fenced", .max_attempts = 3});
    REQUIRE(s);
    CHECK(finished_record(rt, s.id).state == JobState::succeeded);
    std::lock_guard lock(mutex);
    REQUIRE(tokens.size() == 3);
    CHECK(tokens[0] > 0);
    CHECK(tokens[0] < tokens[1]);
    CHECK(tokens[1] < tokens[2]);
    CHECK(all_valid.load());
  }

  TEST_CASE("retries wait out an exponential backoff" * doctest::timeout(30)) {
    std::mutex mutex;
    std::vector<bulwark::Clock::time_point> attempts;
    Registry reg;
    reg.add(
        "always_fails",
        [&](JobContext&, const json&) -> json {
          {
            std::lock_guard lock(mutex);
            attempts.push_back(bulwark::Clock::now());
          }
          throw std::runtime_error("again");
        },
        {.max_attempts = 4, .backoff_initial = 30ms, .backoff_max = 60ms});
    auto options = test_options(2);
    options.retry.jitter = 0;
    Runtime rt(std::move(reg), options);
    auto s = rt.submit({.type = "always_fails"});
    auto r = finished_record(rt, s.id);
    CHECK(r.attempts == 4);
    REQUIRE(attempts.size() == 4);
    CHECK(attempts[1] - attempts[0] >= 30ms);
    CHECK(attempts[2] - attempts[1] >= 60ms);
    CHECK(attempts[3] - attempts[2] >= 60ms);  // capped at backoff_max
  }

  TEST_CASE("config per type overrides code defaults; the job's own field overrides both" * doctest::timeout(30)) {
    auto options = test_options(1);
    options.handlers["fail"] = {.max_attempts = 2};
    Runtime rt(builtins(), options);
    auto by_config = rt.submit({.type = "fail"});
    auto by_job = rt.submit({.type = "fail", .max_attempts = 1});
    REQUIRE(rt.wait_idle(10s));
    CHECK(rt.get(by_config.id)->attempts == 2);
    CHECK(rt.get(by_job.id)->attempts == 1);
  }

  TEST_CASE("config naming an unknown job type is refused" * doctest::timeout(30)) {
    auto options = test_options(1);
    options.handlers["fial"] = {.max_attempts = 2};
    CHECK_THROWS_WITH_AS(Runtime(builtins(), options), "handlers.fial: unknown job type 'fial'",
                         bulwark::ConfigError);
  }

  TEST_CASE("a dead-lettered job can be requeued with fresh attempts" * doctest::timeout(30)) {
    std::atomic<bool> healthy{false};
    Registry reg;
    reg.add("dependent", [&](JobContext&, const json&) -> json {
      if (!healthy) throw std::runtime_error("dependency down");
      return "ok";
    });
    Runtime rt(std::move(reg), test_options(1));
    auto s = rt.submit({.type = "dependent", .max_attempts = 2});
    CHECK(finished_record(rt, s.id).state == JobState::failed);
    CHECK(rt.requeue("nope") == bulwark::RequeueResult::not_found);
    healthy = true;
    CHECK(rt.requeue(s.id) == bulwark::RequeueResult::requeued);
    auto r = finished_record(rt, s.id);
    CHECK(r.state == JobState::succeeded);
    CHECK(r.attempts == 1);
    CHECK(r.result == "ok");
    CHECK(rt.requeue(s.id) == bulwark::RequeueResult::not_failed);
  }

  TEST_CASE("defer runs always and on_failure only on failure, last registered first" * doctest::timeout(30)) {
    std::mutex mutex;
    std::vector<std::string> calls;
    auto note = [&](std::string s) {
      std::lock_guard lock(mutex);
      calls.push_back(std::move(s));
    };
    Registry reg;
    reg.add("cleanup", [&](JobContext& ctx, const json& p) -> json {
      ctx.defer([&] { note("defer A"); });
      ctx.on_failure([&] { note("rollback B"); });
      ctx.defer([&] { note("defer C"); });
      if (p.get<bool>()) throw std::runtime_error("fail after registering");
      return nullptr;
    });
    Runtime rt(std::move(reg), test_options(1));
    auto ok = rt.submit({.type = "cleanup", .payload = false, .max_attempts = 1});
    REQUIRE(rt.wait_idle(10s));
    CHECK(calls == std::vector<std::string>{"defer C", "defer A"});
    CHECK(rt.get(ok.id)->state == JobState::succeeded);
    calls.clear();
    auto bad = rt.submit({.type = "cleanup", .payload = true, .max_attempts = 1});
    REQUIRE(rt.wait_idle(10s));
    CHECK(calls == std::vector<std::string>{"defer C", "rollback B", "defer A"});
    CHECK(rt.get(bad.id)->state == JobState::failed);
  }

  TEST_CASE("failures inside defer and on_failure are recorded, never lost" * doctest::timeout(30)) {
    Registry reg;
    reg.add("defer_throws", [](JobContext& ctx, const json&) -> json {
      ctx.defer([] { throw std::runtime_error("close failed"); });
      return "done";
    });
    reg.add("both_throw", [](JobContext& ctx, const json&) -> json {
      ctx.on_failure([] { throw std::logic_error("rollback failed"); });
      throw std::runtime_error("handler failed");
    });
    Runtime rt(std::move(reg), test_options(1));
    auto a = rt.submit({.type = "defer_throws", .max_attempts = 1});
    auto b = rt.submit({.type = "both_throw", .max_attempts = 1});
    REQUIRE(rt.wait_idle(10s));
    auto ra = *rt.get(a.id);
    CHECK(ra.state == JobState::failed);
    REQUIRE(ra.error.has_value());
    CHECK(ra.error->origin == bulwark::FailureOrigin::defer);
    CHECK(ra.error->message == "close failed");
    auto rb = *rt.get(b.id);
    CHECK(rb.state == JobState::failed);
    CHECK(rb.error->message == "handler failed");
    CHECK(rb.error->origin == bulwark::FailureOrigin::handler);
    REQUIRE(rb.cleanup_errors.size() == 1);
    CHECK(rb.cleanup_errors[0].origin == bulwark::FailureOrigin::on_failure);
    CHECK(rb.cleanup_errors[0].message == "rollback failed");
  }

  TEST_CASE("post runs a callable and get() returns its value" * doctest::timeout(30)) {
    Runtime rt(Registry{}, test_options(2));
    auto h = rt.post([] { return 6 * 7; });
    CHECK(h.get() == 42);
    CHECK(h.state() == JobState::succeeded);
    int side = 0;
    auto v = rt.post([&](JobContext& ctx) { side = ctx.attempt(); });
    v.get();
    CHECK(side == 1);
  }

  TEST_CASE("get() can be called again and from a copy; a move-only value is moved out once" * doctest::timeout(30)) {
    Runtime rt(Registry{}, test_options(2));
    auto h = rt.post([] { return std::string("forty-two"); });
    const auto copy = h;
    CHECK(h.get() == "forty-two");
    CHECK(h.get() == "forty-two");
    CHECK(copy.get() == "forty-two");
    auto once = rt.post([] { return std::make_unique<int>(7); });
    auto value = once.get();
    REQUIRE(value);
    CHECK(*value == 7);
    CHECK_THROWS_AS(once.get(), bulwark::JobError);
  }

  TEST_CASE("get() rethrows the original exception with its throw-site trace" * doctest::timeout(30)) {
    Runtime rt(Registry{}, test_options(2));
    auto h = rt.post([] { return runtime_test_throw_site(1); });
    try {
      h.get();
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) == "posted failure");
      CHECK(bulwark::testing::top_function(bulwark::current_exception_trace()).find("runtime_test_throw_site") !=
            std::string::npos);
    }
    REQUIRE(h.failure().has_value());
    CHECK(h.failure()->type == "std::invalid_argument");
  }

  TEST_CASE("worker count stays whole after 10,000 failing jobs" * doctest::timeout(120)) {
    for (unsigned workers : {1u, 2u, 4u}) {
      CAPTURE(workers);
      failures_leave_workers_alive(workers);
    }
  }

  TEST_CASE("max_concurrent_retries caps retry attempts running at once" * doctest::timeout(60)) {
    std::atomic<int> retrying{0};
    std::atomic<int> most{0};
    Registry reg;
    reg.add("slow_fail", [&](JobContext& ctx, const json&) -> json {
      if (ctx.attempt() > 1) {
        const int now = ++retrying;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(5ms);
        --retrying;
      }
      throw std::runtime_error("fails");
    });
    auto options = test_options(4);
    options.max_concurrent_retries = 1;
    options.retry.max_attempts = 3;
    Runtime rt(std::move(reg), options);
    for (int i = 0; i < 20; ++i) REQUIRE(rt.submit({.type = "slow_fail"}));
    REQUIRE(rt.wait_idle(30s));
    CHECK(rt.stats().failed == 20);
    CHECK(most.load() == 1);
  }

  TEST_CASE("cancel: queued jobs end cancelled, running ones are asked to stop" * doctest::timeout(30)) {
    auto options = test_options(1);
    options.redis.prefetch = 0;  // with Redis, a job fetched ahead is held (running there), not waiting
    Runtime rt(builtins(), options);
    auto running = rt.submit({.type = "sleep", .payload = {{"ms", 20'000}}});
    // Its attempt has begun on a worker (with Redis the record says running
    // from the lease on, a moment before the worker starts the attempt; a
    // cancel in between ends it cancelled before it started, with no error).
    REQUIRE(bulwark::testing::eventually([&] {
      for (const auto& w : rt.health().workers) {
        if (w.job == running.id) return true;
      }
      return false;
    }));
    auto queued = rt.submit({.type = "echo"});
    CHECK(rt.cancel(queued.id) == bulwark::CancelResult::cancelled);
    CHECK(rt.get(queued.id)->state == JobState::cancelled);
    CHECK(rt.cancel(running.id) == bulwark::CancelResult::stop_requested);
    auto r = finished_record(rt, running.id);
    CHECK(r.state == JobState::cancelled);  // it stopped early: no success claimed
    REQUIRE(r.error.has_value());
    CHECK(r.error->kind == bulwark::FailureKind::cancelled);
    CHECK(r.error->type == "bulwark::Stopped");
    CHECK(r.attempts == 1);  // a cancelled job is not retried
    CHECK(rt.cancel(running.id) == bulwark::CancelResult::already_terminal);
    CHECK(rt.cancel("missing") == bulwark::CancelResult::not_found);
  }

  // redis: jobs that did not run stay in the shared queue for the other
  // processes (redis_runtime_test: "a stopping process leaves ...").
  TEST_CASE("memory backend only: shutdown reports every job that did not run as failed with kind shutdown" *
            doctest::timeout(30) * doctest::skip(bulwark::testing::test_backend_is_redis())) {
    std::mutex mutex;
    std::vector<bulwark::JobRecord> finished;
    auto options = test_options(1);
    options.on_finished = [&](const bulwark::JobRecord& r) {
      std::lock_guard lock(mutex);
      finished.push_back(r);
    };
    Runtime rt(builtins(), options);
    auto sleeper = rt.submit({.type = "sleep", .payload = {{"ms", 20'000}}});
    REQUIRE(bulwark::testing::eventually([&] { return rt.get(sleeper.id)->state == JobState::running; }));
    std::vector<bulwark::JobId> waiting;
    for (int i = 0; i < 5; ++i) waiting.push_back(rt.submit({.type = "echo", .payload = i}).id);
    waiting.push_back(rt.submit({.type = "echo", .delay = 1h}).id);
    auto retrying = rt.submit({.type = "flaky", .payload = {{"fail_times", 5}}, .max_attempts = 5});
    auto posted = rt.post([] { return 1; }, {.delay = 1h});

    const auto report = rt.shutdown(50ms);
    CHECK_FALSE(report.drained);
    CHECK(report.not_run >= 6);
    for (const auto& id : waiting) {
      auto r = rt.get(id);
      REQUIRE(r.has_value());
      CHECK(r->state == JobState::failed);
      REQUIRE(r->error.has_value());
      CHECK(r->error->kind == bulwark::FailureKind::shutdown);
    }
    // The running job was asked to stop at the deadline and stopped: it
    // did not finish its work, so it ends failed with kind shutdown.
    CHECK(rt.get(sleeper.id)->state == JobState::failed);
    CHECK(rt.get(sleeper.id)->error->kind == bulwark::FailureKind::shutdown);
    CHECK(rt.get(retrying.id)->state == JobState::failed);
    CHECK_THROWS_AS(posted.get(), bulwark::JobError);
    CHECK(posted.failure()->kind == bulwark::FailureKind::shutdown);
    // Every accepted job was reported exactly once.
    std::set<std::string> ids;
    for (const auto& r : finished) ids.insert(r.id);
    CHECK(ids.size() == finished.size());
    CHECK(finished.size() == 9);
    auto late = rt.submit({.type = "echo"});
    REQUIRE_FALSE(late);
    CHECK(late.error->code == bulwark::SubmitError::Code::shutting_down);
  }

  TEST_CASE("finished records are retained up to the bound" * doctest::timeout(30)) {
    auto options = test_options(2);
    options.retention_max_finished = 32;
    Runtime rt(builtins(), options);
    std::vector<bulwark::JobId> ids;
    for (int i = 0; i < 500; ++i) ids.push_back(rt.submit({.type = "echo", .payload = i}).id);
    REQUIRE(rt.wait_idle(10s));
    const auto listed = rt.list({.limit = 1000});
    CHECK(listed.size() == 32);  // exact, not a per-shard approximation
    CHECK_FALSE(rt.get(ids.front()).has_value());
  }

  TEST_CASE("dead letters have their own bound: a flood of successes does not push them out" * doctest::timeout(60)) {
    auto options = test_options(2);
    options.retention_max_finished = 5;
    options.retention_max_dead = 3;
    Runtime rt(builtins(), options);
    std::vector<bulwark::JobId> dead;
    for (int i = 0; i < 4; ++i) dead.push_back(rt.submit({.type = "fail", .max_attempts = 1}).id);
    REQUIRE(rt.wait_idle(10s));
    for (int i = 0; i < 12'000; ++i) REQUIRE(rt.submit({.type = "echo", .payload = i}));
    REQUIRE(rt.wait_idle(30s));
    CHECK(rt.list({.state = JobState::succeeded, .limit = 100}).size() == 5);
    const auto letters = rt.dead_letters(100);
    CHECK(letters.size() == 3);  // the oldest of the four went, at exactly max_dead
    CHECK(rt.get(dead.back()).has_value());
  }

  // redis: a stopping process takes no more jobs; what is due later waits
  // in the shared queue for the others (redis_runtime_test).
  TEST_CASE("memory backend only: shutdown runs delayed jobs that fall due within the drain time; later ones end "
            "shutdown" * doctest::timeout(30) * doctest::skip(bulwark::testing::test_backend_is_redis())) {
    Runtime rt(builtins(), test_options(1));
    auto soon = rt.submit({.type = "echo", .payload = 1, .delay = 300ms});
    auto later = rt.submit({.type = "echo", .payload = 2, .delay = 1h});
    auto retrying = rt.submit({.type = "flaky", .payload = {{"fail_times", 1}}, .max_attempts = 2});
    const auto report = rt.shutdown(5s);
    CHECK(rt.get(soon.id)->state == JobState::succeeded);
    CHECK(rt.get(retrying.id)->state == JobState::succeeded);  // its retry was due within the window
    auto r = rt.get(later.id);
    CHECK(r->state == JobState::failed);
    CHECK(r->error->kind == bulwark::FailureKind::shutdown);
    CHECK(report.not_run == 1);
  }

  TEST_CASE("ids outside the safe alphabet are rejected at submit, embedded or not" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(1));
    auto bad = rt.submit({.type = "echo", .id = "x\r\nSet-Cookie: a=1"});
    REQUIRE_FALSE(bad);
    CHECK(bad.error->code == bulwark::SubmitError::Code::invalid);
    CHECK(bad.error->message.rfind("id:", 0) == 0);
    CHECK(rt.submit({.type = "echo", .id = "tenant:7~job.1"}));
  }

  TEST_CASE("listing while submitting is race-free (run under TSan)" * doctest::timeout(60)) {
    Runtime rt(builtins(), test_options(2));
    std::atomic<bool> done{false};
    std::thread lister([&] {
      while (!done.load()) {
        for (const auto& r : rt.list({.limit = 50})) CHECK(r.created_at.time_since_epoch().count() > 0);
        (void)rt.stats();
      }
    });
    for (int i = 0; i < 3'000; ++i) REQUIRE(rt.submit({.type = "echo", .payload = i}));
    done.store(true);
    lister.join();
    REQUIRE(rt.wait_idle(20s));
  }

  TEST_CASE("list filters by state and type, newest first, and pages by seq" * doctest::timeout(30)) {
    Runtime rt(builtins(), test_options(2));
    for (int i = 0; i < 6; ++i) REQUIRE(rt.submit({.type = i % 2 ? "echo" : "fail", .max_attempts = 1}));
    REQUIRE(rt.wait_idle(10s));
    auto failed = rt.list({.state = JobState::failed});
    CHECK(failed.size() == 3);
    auto first = rt.page({.type = "echo", .limit = 2});
    REQUIRE(first);
    const auto& echoes = first->jobs;
    REQUIRE(echoes.size() == 2);
    CHECK(echoes[0].seq > echoes[1].seq);
    REQUIRE_FALSE(first->next_cursor.empty());
    auto rest = rt.list({.type = "echo", .cursor = first->next_cursor});
    REQUIRE(rest.size() == 1);
    CHECK(rest[0].seq < echoes[1].seq);
  }
}
