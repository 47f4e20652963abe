// Process isolation: crash-class failures in child worker processes. The
// test executable's main() (support/doctest_main.cpp) serves as the child.
#include <doctest/doctest.h>

#include <algorithm>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "bulwark/runtime.hpp"
#include "support/helpers.hpp"
#include "support/wait.hpp"

using namespace std::chrono_literals;
using bulwark::FailureKind;
using bulwark::JobRecord;
using bulwark::JobState;
using bulwark::Runtime;
using nlohmann::json;

namespace {

using bulwark::testing::builtins;
using bulwark::testing::test_options;
using bulwark::testing::trace_names;

JobRecord run_to_end(Runtime& rt, bulwark::JobSpec spec) {
  const auto s = rt.submit(std::move(spec));
  REQUIRE_MESSAGE(static_cast<bool>(s), (s.error ? s.error->message : ""));
  auto r = bulwark::testing::await_terminal(rt, s.id);
  REQUIRE(r);
  return *r;
}

bool alive(int pid) { return pid > 0 && kill(pid, 0) == 0; }

std::set<int> live_pids(const Runtime& rt) {
  std::set<int> pids;
  for (const auto& p : rt.health().processes) {
    if (alive(p.pid)) pids.insert(p.pid);
  }
  return pids;
}

// Options for a runtime with one worker and one child process.
bulwark::RuntimeOptions one_child_options() {
  auto o = test_options(1);
  o.isolation.processes = 1;
  return o;
}

// Runs a job in the only child and returns the child's pid.
int warm_child(Runtime& rt) {
  REQUIRE(run_to_end(rt, {.type = "crash", .payload = {{"how", "none"}}}).state == JobState::succeeded);
  const auto pids = live_pids(rt);
  REQUIRE(pids.size() == 1);
  return *pids.begin();
}

struct Case {
  const char* how;
  const char* signal;     // "" for none
  const char* function;   // the crash site a trace must name; "" when there is no trace
  const char* message;    // part of the message
};

}  // namespace

TEST_SUITE("Process isolation") {
  TEST_CASE("every kind of crash fails its job with kind crash and the crash site; the next job succeeds" *
            doctest::timeout(180)) {
    auto o = test_options(2);
    o.isolation.processes = 2;
    o.handlers["crash"].memory_limit_mb = 128;
    Runtime rt(builtins(), o);
    const Case cases[] = {
        {"segv", "SIGSEGV", "crash_segv", "died from SIGSEGV"},
        {"abort", "SIGABRT", "crash_abort", "died from SIGABRT"},
        {"fpe", "SIGFPE", "crash_fpe", "died from SIGFPE"},
        {"stack_overflow", "SIGSEGV", "crash_stack_overflow", "stack overflow"},
        {"oom", "", "", "memory limit of 128 MiB exceeded"},
        {"exit", "", "", "exited with status 3"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.how);
      const JobRecord r = run_to_end(rt, {.type = "crash", .payload = {{"how", c.how}}, .max_attempts = 1});
      CHECK(r.state == JobState::failed);
      REQUIRE(r.error);
      CHECK(r.error->kind == FailureKind::crash);
      CHECK_MESSAGE(r.error->message.find(c.message) != std::string::npos, r.error->message);
      if (std::string(c.signal).empty()) {
        if (std::string(c.how) == "exit") CHECK(r.error->signal.empty());
      } else {
        CHECK(r.error->signal == c.signal);
      }
      if (*c.function != '\0') CHECK_MESSAGE(trace_names(r.error->trace, c.function), c.function);

      const JobRecord next = run_to_end(rt, {.type = "crash", .payload = {{"how", "none"}}, .max_attempts = 1});
      CHECK(next.state == JobState::succeeded);
      CHECK(next.result == json{{"crashed", false}});
    }
    const auto stats = rt.stats();
    CHECK(stats.process_ends.at("SIGSEGV") == 1);
    CHECK(stats.process_ends.at("stack_overflow") == 1);
    CHECK(stats.process_ends.at("exit") == 1);
  }

  TEST_CASE("a crashed job is retried in a fresh child and the crash counts towards restart intensity" *
            doctest::timeout(60)) {
    auto o = test_options(1);
    o.supervisor.max_restarts = 1;
    Runtime rt(builtins(), o);
    const JobRecord r = run_to_end(rt, {.type = "crash", .payload = {{"how", "segv"}}, .max_attempts = 3});
    CHECK(r.state == JobState::failed);
    CHECK(r.attempts == 3);
    const auto deadline = bulwark::Clock::now() + 10s;
    while (rt.health().verdict != bulwark::Verdict::unhealthy && bulwark::Clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    const auto h = rt.health();
    CHECK(h.verdict == bulwark::Verdict::unhealthy);
    REQUIRE(!h.reasons.empty());
    CHECK(h.reasons.front().find("replacements") != std::string::npos);
    REQUIRE(h.processes.size() == 2);
    // Every crash is replaced; the recovery limit may put some off a second.
    const auto restarts = [&] {
      unsigned n = 0;
      for (const auto& p : rt.health().processes) n += p.restarts;
      return n;
    };
    CHECK(bulwark::testing::eventually([&] { return restarts() == 3; }, 10s));
    CHECK(restarts() == 3);
  }

  TEST_CASE("a hang past its hard timeout kills and replaces the child; no thread is abandoned" *
            doctest::timeout(60)) {
    auto o = test_options(1);
    o.isolation.processes = 1;
    o.handlers["hang"].isolation = bulwark::Isolation::process;
    o.handlers["hang"].hard_timeout = 300ms;
    Runtime rt(builtins(), o);
    const JobRecord warm = run_to_end(rt, {.type = "hang", .payload = {{"ms", 1}}});
    CHECK(warm.state == JobState::succeeded);
    const std::set<int> before = live_pids(rt);
    REQUIRE(before.size() == 1);

    const JobRecord r = run_to_end(rt, {.type = "hang", .payload = {{"ms", 60'000}}, .max_attempts = 1});
    CHECK(r.state == JobState::failed);
    REQUIRE(r.error);
    CHECK(r.error->kind == FailureKind::timeout);
    CHECK(r.error->message.find("killed") != std::string::npos);
    REQUIRE(r.stuck_trace);  // where the child was when it was killed
    CHECK(trace_names(*r.stuck_trace, "hang_spin"));
    CHECK(!alive(*before.begin()));

    const JobRecord after = run_to_end(rt, {.type = "hang", .payload = {{"ms", 1}}});
    CHECK(after.state == JobState::succeeded);
    const std::set<int> now = live_pids(rt);
    REQUIRE(now.size() == 1);
    CHECK(*now.begin() != *before.begin());
    const auto h = rt.health();
    for (const auto& w : h.workers) CHECK(w.state != bulwark::WorkerState::abandoned);
    CHECK(rt.stats().abandoned == 0);
    CHECK(rt.stats().hard_timeouts == 1);
  }

  TEST_CASE("replacements of crashed children are governed: at most the recovery limit start per second" *
            doctest::timeout(60)) {
    auto o = test_options(4);
    o.isolation.processes = 4;
    o.recovery.adaptive = false;
    o.max_concurrent_retries = 1;  // the recovery limit: one replacement a second
    Runtime rt(builtins(), o);
    std::vector<std::string> ids;
    for (int i = 0; i < 4; ++i) {
      auto s = rt.submit({.type = "crash", .payload = {{"how", "segv"}}, .max_attempts = 1});
      REQUIRE(s);
      ids.push_back(s.id);
    }
    for (const auto& id : ids) REQUIRE(bulwark::testing::await_terminal(rt, id));
    // Four died at once: the first replacement started, the others waited.
    CHECK(rt.health().recovery.restarts_deferred >= 1);
    // The supervisor starts the rest, a second apart; every child serves again.
    CHECK(bulwark::testing::eventually(
        [&] {
          const auto processes = rt.health().processes;
          return std::all_of(processes.begin(), processes.end(), [](const bulwark::ProcessHealth& p) {
            return p.state == bulwark::ProcessState::idle || p.state == bulwark::ProcessState::busy;
          });
        },
        20s));
    CHECK(run_to_end(rt, {.type = "crash", .payload = {{"how", "none"}}}).state == JobState::succeeded);
  }

  TEST_CASE("progress reported in a child reaches the job's record in the parent" * doctest::timeout(60)) {
    auto o = one_child_options();
    o.handlers["progress"].isolation = bulwark::Isolation::process;
    Runtime rt(bulwark::testing::builtins(), o);
    const JobRecord r = run_to_end(rt, {.type = "progress", .payload = {{"steps", 3}, {"gap_ms", 110}}});
    CHECK(r.state == JobState::succeeded);
    REQUIRE(r.progress);
    CHECK(r.progress->fraction == 1.0);
    CHECK(r.progress->note == "step 3 of 3");
  }

  TEST_CASE("cancel reaches a job running in a child through its stop token" * doctest::timeout(60)) {
    auto o = test_options(1);
    o.handlers["sleep"].isolation = bulwark::Isolation::process;
    Runtime rt(builtins(), o);
    const auto s = rt.submit({.type = "sleep", .payload = {{"ms", 30'000}}});
    REQUIRE(static_cast<bool>(s));
    const auto deadline = bulwark::Clock::now() + 20s;
    while (rt.get(s.id)->state != JobState::running) {
      REQUIRE(bulwark::Clock::now() < deadline);
      std::this_thread::sleep_for(2ms);
    }
    std::this_thread::sleep_for(100ms);  // the child has the job by now
    CHECK(rt.cancel(s.id) == bulwark::CancelResult::stop_requested);
    REQUIRE(rt.wait_idle(20s));
    const auto r = rt.get(s.id);
    CHECK(r->state == JobState::cancelled);  // sleep stops early when asked, and says so
    REQUIRE(r->error.has_value());
    CHECK(r->error->kind == bulwark::FailureKind::cancelled);
    CHECK(r->duration_ms < 20'000);
  }

  TEST_CASE("1,000 jobs with 10 % crashes all end, with the configured number of children alive" *
            doctest::timeout(300)) {
    auto o = test_options(2);
    o.isolation.processes = 3;
    o.retry.max_attempts = 1;
    o.supervisor.max_restarts = 1000;
    Runtime rt(builtins(), o);
    std::vector<bulwark::JobId> ids;
    for (int i = 0; i < 1000; ++i) {
      const char* how = i % 10 == 3 ? (i % 20 == 3 ? "segv" : "abort") : "none";
      const auto s = rt.submit({.type = "crash", .payload = {{"how", how}}});
      REQUIRE(static_cast<bool>(s));
      ids.push_back(s.id);
    }
    REQUIRE(rt.wait_idle(240s));
    int succeeded = 0, crashed = 0;
    for (const auto& id : ids) {
      const auto r = rt.get(id);
      REQUIRE(r);
      REQUIRE(bulwark::is_terminal(r->state));
      if (r->state == JobState::succeeded) ++succeeded;
      if (r->state == JobState::failed && r->error && r->error->kind == FailureKind::crash) ++crashed;
    }
    CHECK(succeeded == 900);
    CHECK(crashed == 100);
    // Replacements start at once; each live child answers a job.
    CHECK(bulwark::testing::eventually([&] { return live_pids(rt).size() == 3; }, 20s));
  }

  TEST_CASE("a child inherits no descriptor of the parent but its own socket and the standard streams" *
            doctest::timeout(60)) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);  // no close-on-exec: as a careless library would leave it
    Runtime rt(builtins(), one_child_options());
    const std::string dir = "/proc/" + std::to_string(warm_child(rt)) + "/fd/";
    CHECK(::access((dir + "3").c_str(), F_OK) == 0);  // its socket to us
    const auto target = [](const std::string& link) {
      char buf[256];
      const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
      return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
    };
    const std::string pipe_name = target("/proc/self/fd/" + std::to_string(fds[0]));
    REQUIRE(pipe_name.rfind("pipe:", 0) == 0);
    for (int fd = 0; fd < 64; ++fd) {
      CAPTURE(fd);
      CHECK(target(dir + std::to_string(fd)) != pipe_name);
    }
    ::close(fds[0]);
    ::close(fds[1]);
  }

  TEST_CASE("a child killed while idle is replaced before the next job, which runs normally" *
            doctest::timeout(60)) {
    Runtime rt(builtins(), one_child_options());
    const int before = warm_child(rt);
    REQUIRE(::kill(before, SIGKILL) == 0);
    std::this_thread::sleep_for(50ms);
    const JobRecord r = run_to_end(rt, {.type = "crash", .payload = {{"how", "none"}}, .max_attempts = 1});
    CHECK(r.state == JobState::succeeded);
    const auto h = rt.health();
    REQUIRE(h.processes.size() == 1);
    CHECK(h.processes[0].last_exit == "idle_SIGKILL");
    CHECK(h.processes[0].pid != before);
  }

  TEST_CASE("an isolated job's context has the job's trace and its attempt's span" * doctest::timeout(60)) {
    auto o = one_child_options();
    o.handlers["context"].isolation = bulwark::Isolation::process;
    Runtime rt(builtins(), o);
    const auto r = run_to_end(rt, {.type = "context",
                                   .trace_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
    REQUIRE(r.state == JobState::succeeded);
    CHECK(r.result["pid"] != static_cast<long>(::getpid()));  // it ran in the child
    CHECK(r.result["trace_id"] == "0af7651916cd43dd8448eb211c80319c");
    CHECK(r.result["span_id"] == r.span_id);
    CHECK(r.result["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-" + r.span_id + "-01");
  }

  TEST_CASE("health shows each child: pid, state, job, restarts and the last exit" * doctest::timeout(60)) {
    Runtime rt(builtins(), one_child_options());
    auto h = rt.health();
    REQUIRE(h.processes.size() == 1);
    CHECK(h.processes[0].state == bulwark::ProcessState::not_started);
    run_to_end(rt, {.type = "crash", .payload = {{"how", "abort"}}, .max_attempts = 1});
    h = rt.health();
    REQUIRE(h.processes.size() == 1);
    CHECK(h.processes[0].restarts == 1);
    CHECK(h.processes[0].last_exit == "SIGABRT");
    CHECK(alive(h.processes[0].pid));
    CHECK(h.processes[0].state == bulwark::ProcessState::idle);
    const json j = bulwark::to_json(h);
    CHECK(j.at("processes").at(0).at("last_exit") == "SIGABRT");
  }

  TEST_CASE("shutdown ends a job still running in a child with kind shutdown and stops every child" *
            doctest::timeout(60)) {
    auto o = test_options(1);
    o.handlers["hang"].isolation = bulwark::Isolation::process;
    o.shutdown_grace = 100ms;
    std::set<int> pids;
    bulwark::JobId id;
    {
      Runtime rt(builtins(), o);
      const auto s = rt.submit({.type = "hang", .payload = {{"ms", 60'000}}, .max_attempts = 1});
      id = s.id;
      const auto deadline = bulwark::Clock::now() + 20s;
      while (live_pids(rt).empty() || rt.get(id)->state != JobState::running) {
        REQUIRE(bulwark::Clock::now() < deadline);
        std::this_thread::sleep_for(5ms);
      }
      pids = live_pids(rt);
      const auto report = rt.shutdown(2s);
      CHECK(!report.drained);
      const auto r = rt.get(id);
      CHECK(r->state == JobState::failed);
      REQUIRE(r->error);
      CHECK(r->error->kind == bulwark::FailureKind::shutdown);
      CHECK(rt.stats().abandoned == 0);
    }
    for (int pid : pids) CHECK(!alive(pid));
  }

  TEST_CASE("crashes of an isolated type open its circuit breaker like any failure" * doctest::timeout(60)) {
    auto o = test_options(1);
    o.circuit_breaker.failures = 2;
    o.circuit_breaker.cooldown = 60s;
    Runtime rt(builtins(), o);
    for (int i = 0; i < 2; ++i) {
      const JobRecord r = run_to_end(rt, {.type = "crash", .payload = {{"how", "segv"}}, .max_attempts = 1});
      CHECK(r.error->kind == FailureKind::crash);
    }
    const auto h = rt.health();
    const auto it = std::find_if(h.breakers.begin(), h.breakers.end(), [](const auto& b) { return b.type == "crash"; });
    REQUIRE(it != h.breakers.end());
    CHECK(it->state == bulwark::BreakerState::open);
    // Its next job waits instead of crashing another child.
    const auto s = rt.submit({.type = "crash", .payload = {{"how", "segv"}}});
    std::this_thread::sleep_for(100ms);
    CHECK(rt.get(s.id)->state == JobState::scheduled);
  }

  TEST_CASE("isolated jobs survive the replacement of the thread worker that started their child" *
            doctest::timeout(120)) {
    // Children used to die with SIGKILL when the worker thread that spawned
    // them was abandoned (PR_SET_PDEATHSIG follows the thread): hang jobs
    // past their hard timeout replace thread workers while isolated sleep
    // jobs run.
    auto o = test_options(3);
    o.isolation.processes = 2;
    o.handlers["sleep"].isolation = bulwark::Isolation::process;
    o.handlers["sleep"].max_attempts = 1;  // a killed child must show, not be hidden by a retry
    o.handlers["hang"].hard_timeout = std::chrono::milliseconds(50);
    o.handlers["hang"].max_attempts = 1;
    o.supervisor.max_abandoned_threads = 64;
    o.supervisor.max_restarts = 1000;
    Runtime rt(builtins(), o);
    std::vector<bulwark::JobId> sleeps;
    for (int round = 0; round < 10; ++round) {
      for (int i = 0; i < 2; ++i) sleeps.push_back(rt.submit({.type = "sleep", .payload = {{"ms", 150}}}).id);
      REQUIRE(rt.submit({.type = "hang", .payload = {{"ms", 200}}}));
      std::this_thread::sleep_for(60ms);
    }
    REQUIRE(rt.wait_idle(60s));
    CHECK(rt.stats().replacements >= 5);
    for (const auto& id : sleeps) {
      const auto r = rt.get(id);
      REQUIRE(r);
      CAPTURE(id);
      CHECK(r->state == JobState::succeeded);
      if (r->error) CAPTURE(r->error->message);
    }
  }
}
