// Concurrency behaviours of the whole runtime, each at 1, 2, 4 and 8
// workers (with 2 cores, 8 workers means threads that lose their CPU in the
// middle of anything): every accepted job ends exactly once, whatever races
// it (retries, cancels, shutdown), and nothing is lost.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "bulwark/runtime.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::JobState;
using bulwark::Runtime;

namespace {

constexpr unsigned kWorkerCounts[] = {1, 2, 4, 8};

// Counts on_finished calls per job id.
struct Endings {
  std::mutex mutex;
  std::map<std::string, int> by_id;
  std::map<JobState, int> by_state;
  void add(const bulwark::JobRecord& r) {
    std::lock_guard lock(mutex);
    ++by_id[r.id];
    ++by_state[r.state];
  }
  bool each_once(std::size_t expected) {
    std::lock_guard lock(mutex);
    if (by_id.size() != expected) return false;
    for (const auto& [id, n] : by_id) {
      if (n != 1) return false;
    }
    return true;
  }
};

// "p<producer>-<i>"; built with appends (GCC 12's -Wrestrict misfires on
// chains of operator+ when inlined).
std::string job_id(unsigned long producer, unsigned long i) {
  std::string id = "p";
  id.append(std::to_string(producer)).append("-").append(std::to_string(i));
  return id;
}

bulwark::RuntimeOptions options_with(unsigned workers, Endings& endings) {
  auto o = bulwark::testing::test_options(workers);
  o.on_finished = [&endings](const bulwark::JobRecord& r) { endings.add(r); };
  return o;
}

// Two producers submit a mix of succeeding, failing-then-retried and
// sleeping jobs while a third thread cancels some of them.
void submit_cancel_race(unsigned workers) {
  Endings endings;
  Runtime rt(bulwark::testing::builtins(), options_with(workers, endings));
  constexpr int kPerProducer = 400;
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < 2; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const std::string id = job_id(static_cast<unsigned long>(p), static_cast<unsigned long>(i));
        bulwark::JobSpec spec{.type = "echo", .id = id};
        if (i % 3 == 1) spec = {.type = "fail", .payload = {{"throw", "runtime_error"}}, .id = id, .max_attempts = 3};
        if (i % 3 == 2) spec = {.type = "sleep", .payload = {{"ms", 1}}, .id = id};
        if (rt.submit(std::move(spec))) accepted.fetch_add(1);
      }
    });
  }
  threads.emplace_back([&] {
    std::minstd_rand rng(7);
    for (int i = 0; i < 300; ++i) {
      rt.cancel(job_id(rng() % 2, rng() % kPerProducer));
    }
  });
  for (auto& t : threads) t.join();
  REQUIRE(rt.wait_idle(60s));
  CHECK(accepted.load() == 2 * kPerProducer);
  CHECK(endings.each_once(static_cast<std::size_t>(accepted.load())));
  const auto s = rt.stats();
  CHECK(s.succeeded + s.failed + s.cancelled == static_cast<std::uint64_t>(accepted.load()));
  CHECK(s.running == 0);
  CHECK(s.queue_depth == 0);
  CHECK(s.by_type.at("fail").retried > 0);
}

// Shutdown with a backlog: what ran and what did not both end, once. (With
// the redis backend what did not run stays in the shared queue instead:
// redis_runtime_test covers that.)
void shutdown_with_backlog(unsigned workers) {
  Endings endings;
  auto o = options_with(workers, endings);
  std::size_t accepted = 0;
  bulwark::ShutdownReport report;
  {
    Runtime rt(bulwark::testing::builtins(), o);
    for (int i = 0; i < 2'000; ++i) accepted += rt.submit({.type = "sleep", .payload = {{"ms", i % 2}}}) ? 1 : 0;
    for (int i = 0; i < 50; ++i) accepted += rt.submit({.type = "echo", .delay = 1h}) ? 1 : 0;
    report = rt.shutdown(20ms);
    CHECK_FALSE(rt.submit({.type = "echo"}));
  }
  CHECK(accepted == 2'050);
  CHECK(report.not_run >= 50);  // the delayed ones at least
  CHECK(endings.each_once(accepted));
  std::lock_guard lock(endings.mutex);
  CHECK(endings.by_state[JobState::failed] == static_cast<int>(report.not_run));
  CHECK(endings.by_state[JobState::succeeded] + endings.by_state[JobState::failed] == static_cast<int>(accepted));
}

// Posted callables from several threads: every handle resolves to its value.
void posts_resolve(unsigned workers) {
  Runtime rt(bulwark::testing::builtins(), bulwark::testing::test_options(workers));
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < 3; ++p) {
    threads.emplace_back([&] {
      std::vector<bulwark::JobHandle<int>> handles;
      for (int i = 1; i <= 500; ++i) handles.push_back(rt.post([i] { return i; }));
      for (auto& h : handles) sum.fetch_add(h.get());
    });
  }
  for (auto& t : threads) t.join();
  CHECK(sum.load() == 3L * 500 * 501 / 2);
}

}  // namespace

TEST_SUITE("concurrency") {
  TEST_CASE("submits, retries and cancels racing: every accepted job ends exactly once" * doctest::timeout(240)) {
    for (unsigned w : kWorkerCounts) {
      CAPTURE(w);
      submit_cancel_race(w);
    }
  }

  TEST_CASE("memory backend only: shutdown with a backlog ends every accepted job exactly once" *
            doctest::timeout(240) * doctest::skip(bulwark::testing::test_backend_is_redis())) {
    for (unsigned w : kWorkerCounts) {
      CAPTURE(w);
      shutdown_with_backlog(w);
    }
  }

  TEST_CASE("posted callables from several threads all resolve to their values" * doctest::timeout(240)) {
    for (unsigned w : kWorkerCounts) {
      CAPTURE(w);
      posts_resolve(w);
    }
  }
}
