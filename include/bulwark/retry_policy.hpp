// RetryPolicy: how often and how soon a failed job is tried again.
//
// Exponential backoff with jitter and a cap: the wait after failed attempt k
// (1-based) is min(max, initial * multiplier^(k-1)), spread by ±jitter.
//
//   bulwark::RetryPolicy p{.max_attempts = 5, .initial = 200ms};
//   auto wait = p.delay_after(2, 0.5);  // 400ms: unit 0.5 is the midpoint
//
// A plain value; not synchronized.
#pragma once

#include <chrono>

namespace bulwark {

struct RetryPolicy {
  int max_attempts = 3;  // 1: never retried
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds max{30'000};
  double multiplier = 2.0;
  double jitter = 0.2;  // fraction of the delay, 0..1

  // The wait after failed attempt `attempt` (1-based). `unit` in [0, 1)
  // picks the point in the jitter range: 0 the shortest, 0.5 no jitter.
  // Never negative, never above `max`.
  std::chrono::milliseconds delay_after(int attempt, double unit) const noexcept;
};

}  // namespace bulwark
