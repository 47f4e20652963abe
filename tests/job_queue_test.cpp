#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "runtime/job_queue.hpp"
#include "support/fake_task.hpp"
#include "support/wait.hpp"
#include "core/task_access.hpp"

using bulwark::Clock;
using bulwark::JobState;
using bulwark::detail::Ack;
using bulwark::detail::JobQueue;
using bulwark::detail::Lease;
using bulwark::testing::fake_task;
using bulwark::detail::TaskAccess;
using namespace std::chrono_literals;

TEST_SUITE("JobQueue") {
  TEST_CASE("try_push rejects when full, and accepts again once a job is taken" * doctest::timeout(10)) {
    JobQueue q(2, 1);
    CHECK(q.try_push(fake_task("a"), Clock::now()));
    CHECK(q.try_push(fake_task("b"), Clock::now()));
    CHECK_FALSE(q.try_push(fake_task("c"), Clock::now()));
    CHECK(q.size() == 2);
    CHECK(q.pop().task->id() == "a");
    CHECK(q.try_push(fake_task("c"), Clock::now()));
  }

  TEST_CASE("concurrent producers fill exactly to the capacity, and nothing accepted is lost" *
            doctest::timeout(60)) {
    constexpr int kCapacity = 50;
    JobQueue q(kCapacity, 1);
    std::atomic<int> accepted{0}, taken{0};
    const auto produce = [&](int n) {
      std::vector<std::thread> producers;
      for (int p = 0; p < 3; ++p) {
        producers.emplace_back([&] {
          for (int i = 0; i < n; ++i) {
            if (q.try_push(fake_task("x"), Clock::now())) accepted.fetch_add(1);
          }
        });
      }
      for (auto& t : producers) t.join();
    };
    produce(1'000);  // nobody takes: exactly the capacity gets in
    CHECK(accepted.load() == kCapacity);
    CHECK(q.size() == kCapacity);
    std::vector<std::thread> consumers;
    for (int c = 0; c < 2; ++c) {
      consumers.emplace_back([&] {
        while (q.pop()) taken.fetch_add(1);
      });
    }
    produce(20'000);
    CHECK(bulwark::testing::eventually([&] { return taken.load() >= accepted.load(); }));
    CHECK(q.size() == 0);
    q.close();
    for (auto& t : consumers) t.join();
    CHECK(taken.load() == accepted.load());
    CHECK(accepted.load() > kCapacity);
  }

  TEST_CASE("delayed jobs count against the capacity" * doctest::timeout(10)) {
    JobQueue q(1, 1);
    CHECK(q.try_push(fake_task("later", 0, JobState::scheduled), Clock::now() + 1h));
    CHECK_FALSE(q.try_push(fake_task("now"), Clock::now()));
  }

  TEST_CASE("higher priority first, first-in first-out within one" * doctest::timeout(10)) {
    JobQueue q(100, 1);
    const int priorities[] = {0, 5, 0, 9, 5, 0};
    for (int i = 0; i < 6; ++i) REQUIRE(q.try_push(fake_task(std::to_string(i), priorities[i]), Clock::now()));
    std::vector<std::string> order;
    for (int i = 0; i < 6; ++i) order.push_back(q.pop().task->id());
    CHECK(order == std::vector<std::string>{"3", "1", "4", "0", "2", "5"});
  }

  TEST_CASE("a delayed job waits for its time and then runs before later-due ones" * doctest::timeout(10)) {
    JobQueue q(100, 1);
    const auto start = Clock::now();
    REQUIRE(q.try_push(fake_task("second", 0, JobState::scheduled), start + 120ms));
    REQUIRE(q.try_push(fake_task("first", 0, JobState::scheduled), start + 60ms));
    auto a = q.pop();
    const auto first_at = Clock::now();
    auto b = q.pop();
    CHECK(a.task->id() == "first");
    CHECK(b.task->id() == "second");
    CHECK(first_at - start >= 60ms);
    CHECK(Clock::now() - start >= 120ms);
    CHECK(a.task->state() == JobState::queued);  // moved from scheduled when due
  }

  TEST_CASE("a due retry yields to a fresh job of the same priority" * doctest::timeout(10)) {
    JobQueue q(100, 4);
    q.push_retry(fake_task("retry", 3, JobState::scheduled), Clock::now());
    REQUIRE(bulwark::testing::eventually([&] { return q.ready() > 0; }));  // the scheduler admits it
    REQUIRE(q.try_push(fake_task("fresh", 3), Clock::now()));
    REQUIRE(q.try_push(fake_task("fresh-low", 2), Clock::now()));
    CHECK(q.pop().task->id() == "fresh");
    auto retry = q.pop();
    CHECK(retry.task->id() == "retry");
    CHECK(retry.is_retry());
    CHECK(q.pop().task->id() == "fresh-low");
  }

  TEST_CASE("with a retry priority offset, a retry also yields to fresh jobs down to its priority minus the offset" *
            doctest::timeout(10)) {
    JobQueue q(100, 4, 2);  // recovery.priority_offset 2
    q.push_retry(fake_task("retry", 3, JobState::scheduled), Clock::now());
    REQUIRE(bulwark::testing::eventually([&] { return q.ready() > 0; }));
    REQUIRE(q.try_push(fake_task("fresh-2", 2), Clock::now()));
    REQUIRE(q.try_push(fake_task("fresh-1", 1), Clock::now()));
    REQUIRE(q.try_push(fake_task("fresh-0", 0), Clock::now()));
    CHECK(q.pop().task->id() == "fresh-2");
    CHECK(q.pop().task->id() == "fresh-1");  // the retry waits at priority 3 - 2 = 1, after fresh work there
    CHECK(q.pop().task->id() == "retry");
    CHECK(q.pop().task->id() == "fresh-0");
  }

  TEST_CASE("no more retries are admitted than the limit until a slot is released" * doctest::timeout(10)) {
    JobQueue q(100, 1);
    q.push_retry(fake_task("r1", 0, JobState::scheduled), Clock::now());
    q.push_retry(fake_task("r2", 0, JobState::scheduled), Clock::now());
    auto first = q.pop();
    CHECK(first.task->id() == "r1");
    std::this_thread::sleep_for(50ms);
    CHECK(q.ready() == 0);  // r2 is due but the only slot is taken
    CHECK(q.size() == 1);
    q.ack(std::move(first), Ack::done);  // its retry slot goes back with the lease
    CHECK(q.pop().task->id() == "r2");
  }

  TEST_CASE("a job cancelled while delayed is dropped when due and frees its place" * doctest::timeout(10)) {
    JobQueue q(1, 1);
    auto t = fake_task("x", 0, JobState::scheduled);
    REQUIRE(q.try_push(t, Clock::now() + 30ms));
    TaskAccess::set_state(*t, JobState::cancelled);
    REQUIRE(bulwark::testing::eventually([&] { return q.size() == 0; }));
    CHECK(q.ready() == 0);
    CHECK(q.try_push(fake_task("y"), Clock::now()));
  }

  TEST_CASE("close wakes every blocked pop, and drain returns what was left" * doctest::timeout(10)) {
    JobQueue q(100, 1);
    std::vector<std::thread> consumers;
    std::atomic<int> woke{0};
    for (int i = 0; i < 3; ++i) {
      consumers.emplace_back([&] {
        while (q.pop()) {
        }
        ++woke;
      });
    }
    std::this_thread::sleep_for(20ms);
    REQUIRE(q.try_push(fake_task("later", 0, JobState::scheduled), Clock::now() + 1h));
    q.close();
    for (auto& t : consumers) t.join();
    CHECK(woke == 3);
    CHECK_FALSE(q.try_push(fake_task("after"), Clock::now()));
    auto left = q.drain();
    REQUIRE(left.size() == 1);
    CHECK(left[0]->id() == "later");
    CHECK(q.size() == 0);
  }

  TEST_CASE("many producers and consumers lose nothing" * doctest::timeout(30)) {
    JobQueue q(1'000'000, 1);
    constexpr int kPerProducer = 20'000;
    std::atomic<int> popped{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < 2; ++c) {
      threads.emplace_back([&] {
        while (q.pop()) ++popped;
      });
    }
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p) {
      producers.emplace_back([&, p] {
        for (int i = 0; i < kPerProducer; ++i) REQUIRE(q.try_push(fake_task("t", (i + p) % 10), Clock::now()));
      });
    }
    for (auto& t : producers) t.join();
    CHECK(bulwark::testing::eventually([&] { return popped.load() >= 2 * kPerProducer; }));
    q.close();
    for (auto& t : threads) t.join();
    CHECK(popped.load() == 2 * kPerProducer);
    CHECK(q.size() == 0);
  }

  TEST_CASE("named queues: a weighted pick among the queues with jobs ready, each in priority order" * doctest::timeout(30)) {
    JobQueue q(100'000, 1, 0, {{"critical", 3, 0}, {"low", 1, 0}});
    for (int i = 0; i < 2000; ++i) {
      const std::string n = std::to_string(i);  // (GCC 12 warns, wrongly, of "c" + to_string(i))
      REQUIRE(q.try_push(fake_task(std::string("c").append(n), 0, JobState::queued, "critical"), Clock::now()));
      REQUIRE(q.try_push(fake_task(std::string("l").append(n), i % 2 == 0 ? 9 : 0, JobState::queued, "low"), Clock::now()));
    }
    int critical = 0;
    for (int i = 0; i < 1000; ++i) {
      const auto lease = q.pop();
      REQUIRE(lease.task);
      if (lease.task->spec().queue == "critical") {
        ++critical;
      } else {
        CHECK(lease.task->spec().priority == 9);  // the low queue's own order: priority first
      }
    }
    // 3:1 weights: 750 of 1000 expected; far outside chance either way.
    CHECK(critical > 650);
    CHECK(critical < 850);
    const auto depths = q.queue_depths();
    REQUIRE(depths.size() == 2);
    CHECK(depths[0].name == "critical");
    CHECK(depths[0].waiting + depths[1].waiting == 3000);
    CHECK(depths[0].waiting == static_cast<std::size_t>(2000 - critical));
    // Once one queue is empty, the other gets every pick.
    while (q.queue_depths()[0].ready > 0) q.pop();
    CHECK(q.pop().task->spec().queue == "low");
  }

  TEST_CASE("named queues, strict: the greatest weight with a job ready always goes first" * doctest::timeout(30)) {
    JobQueue q(1000, 1, 0, {{"a", 1, 0}, {"b", 5, 0}, {"c", 2, 0}}, true);
    for (const char* name : {"a", "b", "c"}) {
      for (int i = 0; i < 3; ++i) {
        REQUIRE(q.try_push(fake_task(std::string(name).append(std::to_string(i)), 0, JobState::queued, name), Clock::now()));
      }
    }
    std::string order;
    for (int i = 0; i < 9; ++i) order += q.pop().task->spec().queue;
    CHECK(order == "bbbcccaaa");
  }

  TEST_CASE("a named queue's capacity bounds its jobs; queue.capacity bounds them all; posts go to default" * doctest::timeout(30)) {
    JobQueue q(5, 1, 0, {{"default", 1, 0}, {"small", 1, 2}});
    CHECK(q.takes_queue("small"));
    CHECK(q.takes_queue("default"));
    CHECK_FALSE(q.takes_queue("other"));
    CHECK(q.try_push(fake_task("s1", 0, JobState::queued, "small"), Clock::now()));
    CHECK(q.try_push(fake_task("s2", 0, JobState::queued, "small"), Clock::now()));
    CHECK_FALSE(q.try_push(fake_task("s3", 0, JobState::queued, "small"), Clock::now()));  // its own capacity
    CHECK(q.try_push(fake_task("d1"), Clock::now()));  // no queue named: default
    CHECK(q.try_push(fake_task("d2"), Clock::now()));
    CHECK(q.try_push(fake_task("d3"), Clock::now()));
    CHECK_FALSE(q.try_push(fake_task("d4"), Clock::now()));  // five in all
    const auto depths = q.queue_depths();
    REQUIRE(depths.size() == 2);
    CHECK(depths[0].name == "default");
    CHECK(depths[0].waiting == 3);
    CHECK(depths[1].waiting == 2);
    // A job of `small` taken: its place is free again, for `small` too.
    Lease taken;
    while (true) {
      taken = q.pop();
      if (taken.task->spec().queue == "small") break;
    }
    CHECK(q.try_push(fake_task("s3", 0, JobState::queued, "small"), Clock::now()));
    // A delayed job and a retry count in their queue until they run.
    JobQueue delayed(10, 1, 0, {{"default", 1, 0}, {"small", 1, 1}});
    CHECK(delayed.try_push(fake_task("later", 0, JobState::scheduled, "small"), Clock::now() + 1h));
    CHECK_FALSE(delayed.try_push(fake_task("now", 0, JobState::queued, "small"), Clock::now()));
    CHECK(delayed.queue_depths()[1].waiting == 1);
    CHECK(delayed.queue_depths()[1].ready == 0);
  }

  TEST_CASE("without \"default\", a job naming no queue goes to the queue of the greatest weight" * doctest::timeout(30)) {
    JobQueue q(10, 1, 0, {{"a", 1, 0}, {"b", 4, 0}});
    CHECK_FALSE(q.takes_queue("default"));
    REQUIRE(q.try_push(fake_task("posted"), Clock::now()));
    const auto depths = q.queue_depths();
    CHECK(depths[1].name == "b");
    CHECK(depths[1].ready == 1);
  }

  TEST_CASE("a paused named queue keeps its jobs; a worker waiting only on it sleeps until it is resumed" *
            doctest::timeout(30)) {
    JobQueue q(100, 1, 0, {{"default", 1, 0}, {"slow", 5, 0}});
    CHECK_FALSE(q.set_paused("other", true));
    CHECK(q.set_paused("slow", true));
    CHECK_FALSE(q.set_paused("slow", true));  // already
    REQUIRE(q.try_push(fake_task("s1", 0, JobState::queued, "slow"), Clock::now()));
    REQUIRE(q.try_push(fake_task("d1"), Clock::now()));
    CHECK(q.pop().task->id() == "d1");  // the paused queue's job, of the greater weight, waits
    CHECK(q.queue_depths()[1].paused);
    std::atomic<bool> got{false};
    std::thread worker([&] {
      if (q.pop().task) got = true;
    });
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(got.load());  // its only job is in a paused queue
    CHECK(q.set_paused("slow", false));
    CHECK(bulwark::testing::eventually([&] { return got.load(); }));
    worker.join();
    CHECK(q.size() == 0);
  }
}
