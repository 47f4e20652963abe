// Job controls per type: a concurrency limit, a rate limit (token bucket),
// pause and resume. Jobs over a limit wait queued and run later; none fails
// for it. Runs on either backend (job_controls_on_redis).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "bulwark/runtime.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::Clock;
using bulwark::JobState;
using bulwark::Runtime;

namespace {

// "slow": sleeps its payload's ms and notes how many ran at once; "stamp":
// notes when it started.
struct Probe {
  std::atomic<int> now{0};
  std::atomic<int> most{0};
  std::mutex mutex;
  std::vector<Clock::time_point> starts;

  bulwark::Registry registry() {
    bulwark::Registry r = bulwark::testing::builtins();
    r.add("slow", [this](bulwark::JobContext&, const nlohmann::json& p) {
      const int n = ++now;
      int seen = most.load();
      while (n > seen && !most.compare_exchange_weak(seen, n)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(p.value("ms", 20)));
      --now;
      return nlohmann::json(n);
    });
    r.add("stamp", [this](bulwark::JobContext&, const nlohmann::json&) {
      std::lock_guard lock(mutex);
      starts.push_back(Clock::now());
      return nlohmann::json(true);
    });
    return r;
  }
};

const bulwark::TypeControl& control(const std::vector<bulwark::TypeControl>& all, const std::string& name) {
  const auto it = std::find_if(all.begin(), all.end(), [&](const bulwark::TypeControl& t) { return t.name == name; });
  REQUIRE(it != all.end());
  return *it;
}

std::vector<std::string> submit(Runtime& rt, const std::string& type, int n, nlohmann::json payload = {}) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    auto s = rt.submit({.type = type, .payload = payload});
    REQUIRE(s);
    ids.push_back(s.id);
  }
  return ids;
}

void require_all_succeeded(const Runtime& rt, const std::vector<std::string>& ids) {
  for (const std::string& id : ids) {
    const auto r = bulwark::testing::await_terminal(rt, id);
    REQUIRE(r);
    CHECK(r->state == JobState::succeeded);
    CHECK(r->attempts == 1);  // waiting for a limit is not an attempt
  }
}

}  // namespace

TEST_SUITE("job_controls") {
  TEST_CASE("a concurrency limit holds jobs of its type without holding up other types" * doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(4);
    o.handlers["slow"].concurrency = 2;
    Runtime rt(probe.registry(), o);
    const auto slow = submit(rt, "slow", 12, {{"ms", 60}});
    // While the slow ones queue up behind their limit (6 rounds of 60 ms),
    // other work runs on the free workers: it is done before they are.
    const auto quick = submit(rt, "echo", 20, 1);
    require_all_succeeded(rt, quick);
    CHECK(std::any_of(slow.begin(), slow.end(), [&](const std::string& id) { return !bulwark::is_terminal(rt.get(id)->state); }));
    const auto held = control(rt.types(), "slow");
    CHECK(held.concurrency == 2u);
    CHECK(held.running <= 2);
    require_all_succeeded(rt, slow);
    CHECK(probe.most.load() == 2);  // the limit was reached, and never passed
    CHECK(control(rt.types(), "slow").stats.limit_waits > 0);
  }

  TEST_CASE("a rate limit spaces starts one interval apart after the burst" * doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(2);
    o.handlers["stamp"].rate = bulwark::RateLimit{.per_second = 50, .burst = 3};
    Runtime rt(probe.registry(), o);
    const auto ids = submit(rt, "stamp", 13);
    require_all_succeeded(rt, ids);
    std::vector<Clock::time_point> starts;
    {
      std::lock_guard lock(probe.mutex);
      starts = probe.starts;
    }
    REQUIRE(starts.size() == 13);
    std::sort(starts.begin(), starts.end());
    // 13 starts at 50/s with a burst of 3: the last no sooner than 10
    // intervals (200 ms) after the first. A slow machine only adds to it.
    CHECK(starts.back() - starts.front() >= 190ms);
    const auto t = control(rt.types(), "stamp");
    CHECK(t.stats.rate_waits >= 10);
    REQUIRE(t.tokens);
    CHECK(*t.tokens >= 0);
    CHECK(*t.tokens <= 3);
  }

  TEST_CASE("a paused type's jobs stay queued until it is resumed" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    CHECK(rt.pause("stamp") == bulwark::PauseResult::changed);
    CHECK(rt.pause("stamp") == bulwark::PauseResult::unchanged);
    CHECK(rt.pause("nope") == bulwark::PauseResult::not_found);
    const auto ids = submit(rt, "stamp", 5);
    const auto other = submit(rt, "echo", 3, 1);
    require_all_succeeded(rt, other);  // other types run
    std::this_thread::sleep_for(100ms);
    for (const std::string& id : ids) CHECK(rt.get(id)->state == JobState::queued);
    {
      std::lock_guard lock(probe.mutex);
      CHECK(probe.starts.empty());
    }
    CHECK(control(rt.types(), "stamp").stats.paused);
    CHECK(rt.resume("stamp") == bulwark::PauseResult::changed);
    CHECK(rt.resume("stamp") == bulwark::PauseResult::unchanged);
    require_all_succeeded(rt, ids);
    CHECK_FALSE(control(rt.types(), "stamp").stats.paused);
  }

  TEST_CASE("a pause with a concurrency limit releases only as many as there are places" * doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(4);
    o.handlers["slow"].concurrency = 1;
    Runtime rt(probe.registry(), o);
    REQUIRE(rt.pause("slow") == bulwark::PauseResult::changed);
    const auto ids = submit(rt, "slow", 6, {{"ms", 10}});
    std::this_thread::sleep_for(50ms);
    REQUIRE(rt.resume("slow") == bulwark::PauseResult::changed);
    require_all_succeeded(rt, ids);
    CHECK(probe.most.load() == 1);
  }

  TEST_CASE("a paused type's retry gives its retry place back: other types' retries go on, it runs when resumed" *
            doctest::timeout(60)) {
    std::atomic<Runtime*> self{nullptr};
    bulwark::Registry r = bulwark::testing::builtins();
    // Fails its first attempt after pausing its own type, so its retry
    // meets a paused gate.
    r.add("held", [&](bulwark::JobContext& ctx, const nlohmann::json&) -> nlohmann::json {
      if (ctx.attempt() == 1) {
        self.load()->pause("held");
        throw std::runtime_error("first attempt fails");
      }
      return ctx.attempt();
    });
    auto o = bulwark::testing::test_options(2);
    o.max_concurrent_retries = 1;  // one retry place in all
    o.recovery.adaptive = false;
    Runtime rt(std::move(r), o);
    self = &rt;
    auto held = rt.submit({.type = "held"});
    REQUIRE(held);
    REQUIRE(bulwark::testing::eventually([&] {
      auto rec = rt.get(held.id);
      return rec && rec->attempts == 1 && control(rt.types(), "held").stats.paused;
    }));
    std::this_thread::sleep_for(50ms);  // its retry is due and meets the paused gate
    // Each of these needs the one retry place for its second attempt.
    const auto others = submit(rt, "flaky", 4, {{"fail_times", 1}});
    for (const std::string& id : others) {
      const auto rec = bulwark::testing::await_terminal(rt, id, 20s);
      REQUIRE(rec);
      CHECK(rec->state == JobState::succeeded);
      CHECK(rec->attempts == 2);
    }
    CHECK(rt.get(held.id)->state != JobState::succeeded);
    REQUIRE(rt.resume("held") == bulwark::PauseResult::changed);
    const auto rec = bulwark::testing::await_terminal(rt, held.id, 20s);
    REQUIRE(rec);
    CHECK(rec->state == JobState::succeeded);
    CHECK(rec->attempts == 2);
  }

  TEST_CASE("at shutdown the jobs of a paused type end with kind shutdown (redis: they stay queued in the shared "
            "queue), none lost" * doctest::timeout(60)) {
    Probe probe;
    auto o = bulwark::testing::test_options(2);
    o.shutdown_timeout = 200ms;
    std::vector<std::string> ids;
    std::optional<Runtime> rt;
    rt.emplace(probe.registry(), o);
    REQUIRE(rt->pause("stamp") == bulwark::PauseResult::changed);
    ids = submit(*rt, "stamp", 4);
    std::this_thread::sleep_for(50ms);
    const bulwark::ShutdownReport report = rt->shutdown();
    if (bulwark::testing::test_backend_is_redis()) {
      // The shared queue keeps them for other processes: still queued there.
      CHECK(report.not_run == 0);
      for (const std::string& id : ids) CHECK(rt->get(id)->state == JobState::queued);
    } else {
      CHECK(report.not_run == 4);
      for (const std::string& id : ids) {
        const auto r = rt->get(id);
        REQUIRE(r);
        CHECK(r->state == JobState::failed);
        REQUIRE(r->error);
        CHECK(r->error->kind == bulwark::FailureKind::shutdown);
      }
    }
  }
}

TEST_SUITE("unique jobs") {
  TEST_CASE("a submit within the window answers with the first job; other keys and types are their own" *
            doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(2));
    REQUIRE(rt.pause("stamp") == bulwark::PauseResult::changed);  // keep the first one waiting
    bulwark::JobSpec spec{.type = "stamp", .payload = 1};
    spec.unique_key = "report:2026-11";
    spec.unique_for = 60s;
    const auto first = rt.submit(spec);
    REQUIRE(first);
    CHECK_FALSE(first.duplicate);
    const auto second = rt.submit(spec);
    REQUIRE(second);
    CHECK(second.duplicate);
    CHECK(second.id == first.id);
    CHECK(second.state == JobState::queued);
    bulwark::JobSpec other_key = spec;
    other_key.unique_key = "report:2026-12";
    CHECK_FALSE(rt.submit(other_key).duplicate);
    bulwark::JobSpec other_type = spec;
    other_type.type = "echo";
    CHECK_FALSE(rt.submit(other_type).duplicate);
    // A batch: the first of the key in it holds it for the rest.
    bulwark::JobSpec fresh = spec;
    fresh.unique_key = "batch";
    const auto many = rt.submit_many({fresh, fresh, spec});
    REQUIRE(many.size() == 3);
    CHECK_FALSE(many[0].duplicate);
    CHECK(many[1].duplicate);
    CHECK(many[1].id == many[0].id);
    CHECK(many[2].duplicate);
    CHECK(many[2].id == first.id);
    REQUIRE(rt.resume("stamp") == bulwark::PauseResult::changed);
    REQUIRE(rt.wait_idle(20s));
    {
      std::lock_guard lock(probe.mutex);
      CHECK(probe.starts.size() == 3);  // first, other_key, the batch's first
    }
    const auto record = rt.get(first.id);
    REQUIRE(record);
    CHECK(record->unique_key == "report:2026-11");
    // Still within the window after the job ended: still answered by it.
    const auto after = rt.submit(spec);
    CHECK(after.duplicate);
    CHECK(after.id == first.id);
    CHECK(after.state == JobState::succeeded);
  }

  TEST_CASE("once the window has passed the key makes a new job" * doctest::timeout(60)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(1));
    bulwark::JobSpec spec{.type = "echo", .payload = 1};
    spec.unique_key = "k";
    spec.unique_for = 50ms;
    const auto first = rt.submit(spec);
    REQUIRE(first);
    std::this_thread::sleep_for(120ms);
    const auto second = rt.submit(spec);
    REQUIRE(second);
    CHECK_FALSE(second.duplicate);
    CHECK(second.id != first.id);
  }

  TEST_CASE("a unique key needs its window, and both are checked" * doctest::timeout(30)) {
    Probe probe;
    Runtime rt(probe.registry(), bulwark::testing::test_options(1));
    bulwark::JobSpec no_window{.type = "echo"};
    no_window.unique_key = "k";
    const auto r = rt.submit(no_window);
    REQUIRE_FALSE(r);
    CHECK(r.error->code == bulwark::SubmitError::Code::invalid);
    CHECK(r.error->message == "unique_for_ms: required with unique_key");
    bulwark::JobSpec control{.type = "echo"};
    control.unique_key = std::string("a\nb");
    control.unique_for = 1s;
    CHECK(rt.submit(control).error->message == "unique_key: control characters are not allowed");
  }
}

TEST_SUITE("follow-up jobs") {
  TEST_CASE("a job's `then` runs after it succeeds with its result; a chain goes on; a failure stops it" *
            doctest::timeout(60)) {
    Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(2));
    bulwark::JobSpec spec{.type = "echo", .payload = 5};
    spec.trace_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    spec.then = {{"type", "echo"}, {"payload", {{"k", "v"}}}, {"then", {{"type", "echo"}}}};
    const auto first = rt.submit(spec);
    REQUIRE(first);
    const auto parent = bulwark::testing::await_terminal(rt, first.id);
    REQUIRE(parent);
    CHECK(parent->state == JobState::succeeded);
    CHECK(parent->then_type == "echo");
    CHECK(parent->then_id == first.id + ".then");
    // The follow-up exists once its parent's success is seen.
    const auto second = bulwark::testing::await_terminal(rt, first.id + ".then");
    REQUIRE(second);
    CHECK(second->state == JobState::succeeded);
    CHECK(second->result == nlohmann::json{{"k", "v"}, {"previous", {{"id", first.id}, {"type", "echo"}, {"result", 5}}}});
    REQUIRE(second->trace);
    CHECK(second->trace->trace_id == "0af7651916cd43dd8448eb211c80319c");
    CHECK(second->trace->parent_id == parent->span_id);  // a child of the job's last attempt
    const auto third = bulwark::testing::await_terminal(rt, first.id + ".then.then");
    REQUIRE(third);
    CHECK(third->result["previous"]["result"] == second->result);

    bulwark::JobSpec failing{.type = "fail", .payload = {{"throw", "runtime_error"}}, .max_attempts = 1};
    failing.then = {{"type", "echo"}};
    const auto failed = rt.submit(failing);
    REQUIRE(failed);
    REQUIRE(bulwark::testing::await_terminal(rt, failed.id)->state == JobState::failed);
    REQUIRE(rt.wait_idle(10s));
    CHECK_FALSE(rt.get(failed.id + ".then").has_value());
  }

  TEST_CASE("a follow-up with an id of its own keeps it; a bad one is refused at submit" * doctest::timeout(30)) {
    Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(1));
    bulwark::JobSpec named{.type = "echo", .payload = 1};
    named.then = {{"type", "echo"}, {"id", "after-named"}};
    const auto first = rt.submit(named);
    REQUIRE(first);
    REQUIRE(bulwark::testing::await_terminal(rt, first.id));
    const auto after = bulwark::testing::await_terminal(rt, "after-named");
    REQUIRE(after);
    CHECK(after->state == JobState::succeeded);
    const auto refused = [&](nlohmann::json then) {
      bulwark::JobSpec s{.type = "echo"};
      s.then = std::move(then);
      const auto r = rt.submit(s);
      return r ? std::string() : r.error->message;
    };
    CHECK(refused({{"type", "nope"}}) == "then.type: unknown job type 'nope'");
    CHECK(refused({{"type", "echo"}, {"then", {{"type", "nope"}}}}) == "then.then.type: unknown job type 'nope'");
    CHECK(refused({{"type", "echo"}, {"payload", 3}}).rfind("then.payload: expected an object", 0) == 0);
    CHECK(refused({{"payload", {}}}) == "then.type: required");
  }
}

TEST_SUITE("progress") {
  TEST_CASE("ctx.progress shows on the record while the job runs and after, and in the event stream" *
            doctest::timeout(60)) {
    Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(1));
    (void)rt.events_after(0);  // start recording
    const auto s = rt.submit({.type = "progress", .payload = {{"steps", 4}, {"gap_ms", 110}, {"hold_ms", 3000}}});
    REQUIRE(s);
    // Seen while it runs (with Redis: once the acker wrote it).
    CHECK(bulwark::testing::eventually([&] {
      const auto r = rt.get(s.id);
      return r && r->state == JobState::running && r->progress && r->progress->fraction == 1.0;
    }));
    auto running = rt.get(s.id);
    REQUIRE(running->progress);
    CHECK(running->progress->note == "step 4 of 4");
    CHECK(bulwark::to_json(*running)["progress"]["note"] == "step 4 of 4");
    CHECK(rt.cancel(s.id) == bulwark::CancelResult::stop_requested);
    const auto ended = bulwark::testing::await_terminal(rt, s.id);
    REQUIRE(ended);
    REQUIRE(ended->progress);
    CHECK(ended->progress->fraction == 1.0);
    std::vector<double> seen;
    for (const bulwark::Event& e : rt.events_after(0, 1000).events) {
      if (e.job_id == s.id && e.progress) {
        CHECK(e.state == JobState::running);
        seen.push_back(e.progress->fraction);
      }
    }
    REQUIRE(!seen.empty());
    CHECK(seen.back() == 1.0);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
  }

  TEST_CASE("fractions are clamped to 0..1, NaN is ignored, the note is cut at 200 bytes" * doctest::timeout(30)) {
    bulwark::Registry r = bulwark::testing::builtins();
    r.add("odd", [](bulwark::JobContext& ctx, const nlohmann::json& p) {
      ctx.progress(p.at(0).get<double>(), std::string(300, 'n'));
      ctx.progress(std::nan(""), "ignored");
      return nlohmann::json();
    });
    Runtime rt(std::move(r), bulwark::testing::test_options(1));
    const auto over = rt.submit({.type = "odd", .payload = {7.5}});
    const auto under = rt.submit({.type = "odd", .payload = {-1}});
    REQUIRE(rt.wait_idle(10s));
    const auto a = rt.get(over.id);
    REQUIRE(a->progress);
    CHECK(a->progress->fraction == 1.0);
    CHECK(a->progress->note.size() == 200);
    CHECK(rt.get(under.id)->progress->fraction == 0.0);
  }

  TEST_CASE("a job names its queue: this process runs the queues it lists, and counts each" * doctest::timeout(60)) {
    auto o = bulwark::testing::test_options(2);
    o.queues = {{"default", bulwark::QueueOptions{}}, {"gpu", bulwark::QueueOptions{.weight = 3, .capacity = 50}}};
    Runtime rt(bulwark::testing::builtins(), o);
    const auto gpu = rt.submit({.type = "echo", .payload = 1, .queue = "gpu"});
    REQUIRE(gpu);
    const auto plain = rt.submit({.type = "echo", .payload = 2});
    REQUIRE(plain);
    const auto ran = bulwark::testing::await_terminal(rt, gpu.id);
    REQUIRE(ran);
    CHECK(ran->state == JobState::succeeded);
    CHECK(ran->queue == "gpu");
    CHECK(bulwark::to_json(*ran)["queue"] == "gpu");
    REQUIRE(bulwark::testing::await_terminal(rt, plain.id));
    CHECK(rt.get(plain.id)->queue == "default");
    // A name that is not one is refused, naming the field.
    const auto bad = rt.submit({.type = "echo", .queue = "a b"});
    REQUIRE_FALSE(bad);
    CHECK(bad.error->message.rfind("queue: ", 0) == 0);
    // A queue this process does not run: the memory backend refuses it
    // (nothing would run it); a shared queue keeps it for a process that
    // lists it, and says nobody runs it now.
    const auto elsewhere = rt.submit({.type = "echo", .queue = "reports"});
    const auto stats = rt.stats();
    const auto find = [&](const std::string& name) -> const bulwark::QueueStats* {
      for (const auto& q : stats.queues) {
        if (q.name == name) return &q;
      }
      return nullptr;
    };
    REQUIRE(find("gpu") != nullptr);
    CHECK(find("gpu")->weight == 3u);
    CHECK(find("gpu")->capacity == 50u);
    CHECK(find("gpu")->consumers == 1u);
    REQUIRE(find("default") != nullptr);
    CHECK(find("default")->weight == 1u);
    if (bulwark::testing::test_backend_is_redis()) {
      REQUIRE(elsewhere);
      CHECK(rt.get(elsewhere.id)->state == JobState::queued);
      CHECK(rt.get(elsewhere.id)->queue == "reports");
      REQUIRE(find("reports") != nullptr);
      CHECK(find("reports")->waiting == 1u);
      CHECK(find("reports")->consumers == 0u);
      CHECK(find("reports")->weight == 0u);
    } else {
      REQUIRE_FALSE(elsewhere);
      CHECK(elsewhere.error->code == bulwark::SubmitError::Code::invalid);
      CHECK(elsewhere.error->message ==
            "queue: no queue 'reports' runs here, so the job would never run (queues: default, gpu)");
      CHECK(find("reports") == nullptr);
    }
  }

  TEST_CASE("a paused named queue holds its jobs for every process until resumed; other queues run" *
            doctest::timeout(60)) {
    auto o = bulwark::testing::test_options(2);
    o.queues = {{"default", bulwark::QueueOptions{}}, {"bulk", bulwark::QueueOptions{.weight = 5}}};
    Runtime rt(bulwark::testing::builtins(), o);
    CHECK(rt.pause_queue("bulk") == bulwark::PauseResult::changed);
    CHECK(rt.pause_queue("bulk") == bulwark::PauseResult::unchanged);
    CHECK(rt.pause_queue("not a name") == bulwark::PauseResult::not_found);
    CHECK(rt.pause_queue("elsewhere") ==
          (bulwark::testing::test_backend_is_redis() ? bulwark::PauseResult::changed : bulwark::PauseResult::not_found));
    const auto held = rt.submit({.type = "echo", .payload = 1, .queue = "bulk"});
    REQUIRE(held);
    const auto other = rt.submit({.type = "echo", .payload = 2});
    REQUIRE(other);
    REQUIRE(bulwark::testing::await_terminal(rt, other.id));
    std::this_thread::sleep_for(200ms);  // fetches come and go: the paused queue's job is not taken
    CHECK(rt.get(held.id)->state == JobState::queued);
    bool paused = false;
    for (const auto& q : rt.stats().queues) {
      if (q.name == "bulk") paused = q.paused;
    }
    CHECK(paused);
    // Listing by queue.
    const auto listed = rt.list({.queue = "bulk"});
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].id == held.id);
    CHECK(rt.resume_queue("bulk") == bulwark::PauseResult::changed);
    const auto ran = bulwark::testing::await_terminal(rt, held.id);
    REQUIRE(ran);
    CHECK(ran->state == JobState::succeeded);
    // Each queue's jobs counted apart (the default's: the totals less the named ones').
    REQUIRE(rt.cancel(rt.submit({.type = "echo", .payload = 3, .queue = "bulk", .delay = 60s}).id) ==
            bulwark::CancelResult::cancelled);
    std::map<std::string, bulwark::QueueJobCounts> jobs;
    for (const auto& q : rt.stats().queues) jobs[q.name] = q.jobs;
    CHECK(jobs["bulk"].submitted == 2);
    CHECK(jobs["bulk"].succeeded == 1);
    CHECK(jobs["bulk"].cancelled == 1);
    CHECK(jobs["bulk"].failed == 0);
    CHECK(jobs["default"].submitted == 1);
    CHECK(jobs["default"].succeeded == 1);
    CHECK(jobs["default"].cancelled == 0);
  }
}
