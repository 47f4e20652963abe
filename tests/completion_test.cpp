// Completion, on its own: the one writer of terminal states, driven with
// hand-made attempt ends against a real in-memory broker and store.
#include <doctest/doctest.h>

#include <stdexcept>

#include "runtime/completion.hpp"
#include "runtime/job_queue.hpp"
#include "runtime/job_store.hpp"
#include "runtime/type_table.hpp"
#include "support/fake_task.hpp"
#include "support/wait.hpp"
#include "core/task_access.hpp"

using namespace std::chrono_literals;
using bulwark::Clock;
using bulwark::Failure;
using bulwark::FailureKind;
using bulwark::JobState;
using bulwark::detail::AttemptEnd;
using bulwark::detail::BreakerTicket;
using bulwark::detail::Lease;
using bulwark::detail::Running;
using bulwark::detail::TaskPtr;
using bulwark::detail::TaskRecord;
using bulwark::detail::TaskAccess;

namespace {

// A Completion with everything it talks to, all real.
struct Fixture {
  explicit Fixture(bulwark::CircuitBreakerOptions breaker = {}) : type(breaker, std::nullopt, std::nullopt) {
    type.name.assign(1, 't');
    type.policy.initial = 1ms;
    type.policy.max = 2ms;
  }

  // A job as submit() would leave it: stored, counted in, with `attempts` allowed.
  TaskPtr job(const std::string& id, int attempts = 1, JobState state = JobState::running) {
    TaskPtr t = bulwark::testing::fake_task(id, 0, state);
    TaskAccess::spec(*t).max_attempts = attempts;
    TaskAccess::spec(*t).stored = true;
    TaskAccess::set_type_entry(*t, &type);
    REQUIRE(store.insert(t));
    completion.count_accepted();
    return t;
  }

  // The running record a worker hands over for a new attempt, admitted by
  // the type's breaker.
  Running running(const TaskPtr& t) {
    TaskAccess::with_record(*t, [](TaskRecord& r) { ++r.attempts; });  // as Attempt::start does
    const auto d = type.breaker.admit(Clock::now());
    return Running{Lease{t, {}}, BreakerTicket(type.breaker, d.trial), {}, Clock::now()};
  }

  static AttemptEnd succeeded(int attempt) {
    AttemptEnd e;
    e.attempt = attempt;
    e.end = Clock::now();
    e.duration_ms = 3;
    return e;
  }

  static AttemptEnd failed(int attempt, FailureKind kind = FailureKind::exception) {
    AttemptEnd e = succeeded(attempt);
    Failure f = bulwark::make_failure(kind, "boom");
    f.type = "std::runtime_error";
    e.outcome = bulwark::Outcome<void>(std::move(f), std::make_exception_ptr(std::runtime_error("boom")));
    return e;
  }

  static bulwark::RuntimeOptions quiet() {
    bulwark::RuntimeOptions o;
    o.logging.level = "off";
    return o;
  }

  bulwark::RuntimeOptions options = quiet();
  bulwark::detail::Reporter reporter{options.logging};
  bulwark::detail::JobQueue queue{100, 2};
  bulwark::detail::MemoryJobStore store{10, 10};
  bulwark::detail::EventLog events{100, std::chrono::seconds(60)};
  bulwark::detail::Completion completion{options, reporter, events, queue, store};
  bulwark::detail::TypeEntry type;
};

std::size_t kind(FailureKind k) { return static_cast<std::size_t>(k); }

}  // namespace

TEST_SUITE("completion") {
  TEST_CASE("a successful attempt ends the job succeeded, recorded, counted, and wait_idle returns" * doctest::timeout(30)) {
    Fixture f;
    TaskPtr t = f.job("a");
    CHECK_FALSE(f.completion.wait_idle(0ms));
    f.completion.attempt_ended(f.running(t), Fixture::succeeded(1));
    CHECK(t->state() == JobState::succeeded);
    CHECK(f.completion.counts().succeeded == 1);
    CHECK(f.type.counters.succeeded.load() == 1);
    CHECK(f.completion.wait_idle(0ms));
    auto r = f.store.record("a");
    REQUIRE(r);
    CHECK(r->state == JobState::succeeded);
    CHECK(r->duration_ms == 3);
    CHECK(r->finished_at.has_value());
  }

  TEST_CASE("a failed attempt with attempts left goes back to the broker as a retry" * doctest::timeout(30)) {
    Fixture f;
    f.type.policy.initial = f.type.policy.max = std::chrono::milliseconds(200);  // still scheduled when checked
    TaskPtr t = f.job("r", 3);
    f.completion.attempt_ended(f.running(t), Fixture::failed(1));
    CHECK(t->state() == JobState::scheduled);
    CHECK(f.completion.counts().retried == 1);
    CHECK(f.completion.counts().attempts_failed == 1);
    CHECK(f.type.counters.recovered[kind(FailureKind::exception)].load() == 1);
    CHECK_FALSE(f.completion.wait_idle(0ms));  // it has not ended
    // After its backoff the broker hands it out again, as a retry.
    Lease again = f.queue.pop();
    REQUIRE(again);
    CHECK(again.task == t);
    CHECK(again.is_retry());
    CHECK(t->failure()->message == "boom");
  }

  TEST_CASE("the last failed attempt dead-letters the job with its kind counted and its exception kept" * doctest::timeout(30)) {
    Fixture f;
    TaskPtr t = f.job("d", 2);
    f.completion.attempt_ended(f.running(t), Fixture::failed(2, FailureKind::timeout));
    CHECK(t->state() == JobState::failed);
    CHECK(f.completion.counts().failed == 1);
    CHECK(f.type.counters.failed[kind(FailureKind::timeout)].load() == 1);
    CHECK(t->exception() != nullptr);
    auto dead = f.store.list({.state = JobState::failed});
    REQUIRE(dead);
    REQUIRE(dead->jobs.size() == 1);
    CHECK(dead->jobs[0].id == "d");
    CHECK(f.queue.size() == 0);
  }

  TEST_CASE("a cleanup that throws fails an attempt that had succeeded" * doctest::timeout(30)) {
    Fixture f;
    TaskPtr t = f.job("c");
    AttemptEnd end = Fixture::succeeded(1);
    Failure cleanup = bulwark::make_failure(FailureKind::exception, "rollback failed");
    cleanup.origin = bulwark::FailureOrigin::defer;
    end.cleanup_errors.push_back(cleanup);
    f.completion.attempt_ended(f.running(t), std::move(end));
    CHECK(t->state() == JobState::failed);
    REQUIRE(t->failure());
    CHECK(t->failure()->message == "rollback failed");
    CHECK(t->failure()->origin == bulwark::FailureOrigin::defer);
  }

  TEST_CASE("a job cancelled during its attempt ends cancelled, not retried" * doctest::timeout(30)) {
    Fixture f;
    TaskPtr t = f.job("x", 5);
    TaskAccess::with_record(*t, [](TaskRecord& r) { r.cancel_requested = true; });
    f.completion.attempt_ended(f.running(t), Fixture::failed(1, FailureKind::cancelled));
    CHECK(t->state() == JobState::cancelled);
    CHECK(f.completion.counts().cancelled == 1);
    CHECK(f.completion.counts().retried == 0);
    CHECK(f.queue.size() == 0);
  }

  TEST_CASE("cancel ends a waiting job at once and asks a running one to stop" * doctest::timeout(30)) {
    Fixture f;
    TaskPtr waiting = f.job("w", 1, JobState::queued);
    CHECK(f.completion.cancel(waiting) == bulwark::CancelResult::cancelled);
    CHECK(waiting->state() == JobState::cancelled);
    CHECK(f.completion.cancel(waiting) == bulwark::CancelResult::already_terminal);

    TaskPtr running = f.job("r", 1, JobState::running);
    std::stop_source source;
    TaskAccess::with_record(*running, [&](TaskRecord& r) { r.stop = source; });
    CHECK(f.completion.cancel(running) == bulwark::CancelResult::stop_requested);
    CHECK(source.stop_requested());
    CHECK(running->stop_reason() == FailureKind::cancelled);
    CHECK(running->state() == JobState::running);  // its attempt decides how it ends
  }

  TEST_CASE("a job shutdown never ran ends failed with kind shutdown, naming the last error" * doctest::timeout(30)) {
    Fixture f;
    f.type.policy.initial = f.type.policy.max = std::chrono::hours(1);  // the retry waits: still scheduled below
    TaskPtr t = f.job("s", 2);
    f.completion.attempt_ended(f.running(t), Fixture::failed(1));
    REQUIRE(t->state() == JobState::scheduled);
    CHECK(f.completion.end_unrun(t));
    CHECK(t->state() == JobState::failed);
    REQUIRE(t->failure());
    CHECK(t->failure()->kind == FailureKind::shutdown);
    CHECK(t->failure()->message.find("before attempt 2 of 2; last error: std::runtime_error: boom") !=
          std::string::npos);
    CHECK_FALSE(f.completion.end_unrun(t));  // already ended: not twice
    CHECK(f.completion.counts().failed == 1);
  }

  TEST_CASE("an abandoned attempt without a retry ends failed with the given failure" * doctest::timeout(30)) {
    Fixture f;
    TaskPtr t = f.job("h", 3);
    f.completion.abandoned(f.running(t), 1, bulwark::make_failure(FailureKind::shutdown, "left behind"), 12, false);
    CHECK(t->state() == JobState::failed);
    CHECK(t->failure()->kind == FailureKind::shutdown);
    CHECK(f.store.record("h")->duration_ms == 12);
    f.completion.abandoned(f.running(f.job("h2", 3)), 1, bulwark::make_failure(FailureKind::timeout, "hard"), 1, true);
    CHECK(f.completion.counts().hard_timeouts == 1);  // the timeout, not the shutdown
    CHECK(f.completion.counts().retried == 1);
  }

  TEST_CASE("a failed attempt counts towards its type's breaker, and a failed trial opens it again" * doctest::timeout(30)) {
    Fixture f({.failures = 1, .window = 10'000ms, .cooldown = 1ms});
    f.completion.attempt_ended(f.running(f.job("b1")), Fixture::failed(1));
    CHECK(f.type.breaker.state() == bulwark::BreakerState::open);
    CHECK(f.completion.counts().breaker_opened == 1);
    std::this_thread::sleep_for(5ms);
    TaskPtr trial = f.job("b2");
    Running r = f.running(trial);
    REQUIRE(r.breaker.trial());
    f.completion.attempt_ended(std::move(r), Fixture::failed(1));
    CHECK(f.completion.counts().breaker_opened == 2);
    std::this_thread::sleep_for(5ms);
    Running ok = f.running(f.job("b3"));
    REQUIRE(ok.breaker.trial());
    f.completion.attempt_ended(std::move(ok), Fixture::succeeded(1));
    CHECK(f.type.breaker.state() == bulwark::BreakerState::closed);
  }

  TEST_CASE("the on_finished listener sees each ending once, and one that throws does not escape" * doctest::timeout(30)) {
    Fixture f;
    int calls = 0;
    f.options.on_finished = [&](const bulwark::JobRecord& r) {
      ++calls;
      if (r.id == "boom") throw std::runtime_error("listener failed");
    };
    f.completion.attempt_ended(f.running(f.job("fine")), Fixture::succeeded(1));
    f.completion.attempt_ended(f.running(f.job("boom")), Fixture::succeeded(1));
    CHECK(calls == 2);
    CHECK(f.completion.wait_idle(0ms));
  }
}
