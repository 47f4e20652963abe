#include <doctest/doctest.h>

#include "runtime/circuit_breaker.hpp"

using bulwark::Clock;
using bulwark::detail::CircuitBreaker;
using namespace std::chrono_literals;

TEST_SUITE("CircuitBreaker") {
  TEST_CASE("disabled with failures = 0: always admits") {
    CircuitBreaker b({.failures = 0});
    const auto now = Clock::now();
    for (int i = 0; i < 100; ++i) CHECK_FALSE(b.on_failure(false, now));
    CHECK(b.admit(now).run);
    CHECK(b.state() == CircuitBreaker::State::closed);
  }

  TEST_CASE("opens after `failures` within the window, and only then") {
    CircuitBreaker b({.failures = 3, .window = 1000ms, .cooldown = 500ms});
    const auto t0 = Clock::now();
    CHECK_FALSE(b.on_failure(false, t0));
    CHECK_FALSE(b.on_failure(false, t0 + 2000ms));  // the first fell out of the window
    CHECK_FALSE(b.on_failure(false, t0 + 2100ms));
    CHECK(b.on_failure(false, t0 + 2200ms));
    CHECK(b.state() == CircuitBreaker::State::open);
    CHECK(b.opened() == 1);
    auto d = b.admit(t0 + 2300ms);
    CHECK_FALSE(d.run);
    CHECK(d.retry_at == t0 + 2700ms);
  }

  TEST_CASE("after the cooldown one trial runs; its success closes the breaker") {
    CircuitBreaker b({.failures = 1, .window = 1000ms, .cooldown = 100ms});
    const auto t0 = Clock::now();
    REQUIRE(b.on_failure(false, t0));
    auto trial = b.admit(t0 + 150ms);
    CHECK(trial.run);
    CHECK(trial.trial);
    CHECK(b.state() == CircuitBreaker::State::half_open);
    CHECK_FALSE(b.admit(t0 + 160ms).run);  // one trial at a time
    CHECK(b.on_success(true));
    CHECK(b.state() == CircuitBreaker::State::closed);
    CHECK(b.admit(t0 + 170ms).run);
  }

  TEST_CASE("a failed trial opens it for another cooldown") {
    CircuitBreaker b({.failures = 1, .window = 1000ms, .cooldown = 100ms});
    const auto t0 = Clock::now();
    REQUIRE(b.on_failure(false, t0));
    REQUIRE(b.admit(t0 + 150ms).trial);
    CHECK(b.on_failure(true, t0 + 160ms));
    CHECK(b.state() == CircuitBreaker::State::open);
    CHECK(b.opened() == 2);
    CHECK_FALSE(b.admit(t0 + 200ms).run);
    CHECK(b.admit(t0 + 270ms).trial);
  }

  TEST_CASE("a trial that never ran is released so another can take its place") {
    CircuitBreaker b({.failures = 1, .window = 1000ms, .cooldown = 100ms});
    const auto t0 = Clock::now();
    REQUIRE(b.on_failure(false, t0));
    REQUIRE(b.admit(t0 + 150ms).trial);
    b.release_trial();
    CHECK(b.admit(t0 + 151ms).trial);
  }
}
