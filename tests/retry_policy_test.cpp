#include <doctest/doctest.h>

#include "bulwark/retry_policy.hpp"

using namespace std::chrono_literals;

TEST_SUITE("RetryPolicy") {
  TEST_CASE("the delay doubles per attempt without jitter at the midpoint") {
    bulwark::RetryPolicy p{.max_attempts = 5, .initial = 100ms, .max = 10'000ms, .multiplier = 2.0, .jitter = 0.2};
    CHECK(p.delay_after(1, 0.5) == 100ms);
    CHECK(p.delay_after(2, 0.5) == 200ms);
    CHECK(p.delay_after(3, 0.5) == 400ms);
  }

  TEST_CASE("jitter stays within its fraction") {
    bulwark::RetryPolicy p{.initial = 1000ms, .max = 60'000ms, .multiplier = 2.0, .jitter = 0.25};
    for (double u = 0.0; u < 1.0; u += 0.05) {
      const auto d = p.delay_after(2, u);
      CHECK(d >= 1500ms);
      CHECK(d <= 2500ms);
    }
    CHECK(p.delay_after(2, 0.0) == 1500ms);
  }

  TEST_CASE("the delay never passes the cap, even with jitter or huge attempt numbers") {
    bulwark::RetryPolicy p{.initial = 100ms, .max = 1000ms, .multiplier = 3.0, .jitter = 1.0};
    CHECK(p.delay_after(10, 0.999) <= 1000ms);
    CHECK(p.delay_after(100000, 0.999) == 1000ms);
    CHECK(p.delay_after(100000, 0.0) == 0ms);
  }

  TEST_CASE("out-of-range inputs are clamped, never negative") {
    bulwark::RetryPolicy p{.initial = 100ms, .max = 1000ms, .multiplier = 0.5, .jitter = 3.0};
    CHECK(p.delay_after(0, -1.0) >= 0ms);
    CHECK(p.delay_after(3, 2.0) <= 1000ms);
  }
}
