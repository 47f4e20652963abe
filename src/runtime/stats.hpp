// Internal: the lock-free measures the runtime's parts keep: a fixed-bucket
// histogram, the counters of one job type, and the ring of recent queue
// waits that the supervisor reads for its saturation check.
//
// Counts every job touches are striped: each thread adds to its own stripe
// (a cache line of its own), reads add the stripes up, so workers finishing
// jobs side by side do not pass one line back and forth. A read is a sum
// of relaxed loads: exact once the writers are quiet, otherwise a count
// some adds may not have reached yet.
//
// Any thread may add to any of them without a lock.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <optional>

#include "bulwark/failure.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark::detail {

inline constexpr std::size_t kStripes = 8;

// This thread's stripe: threads are dealt stripes in turn as they first ask.
inline std::size_t this_thread_stripe() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return mine;
}

// A counter many threads add to; fetch_add/fetch_sub/load as on an atomic.
template <class T>
class Striped {
 public:
  void fetch_add(T n, std::memory_order = std::memory_order_relaxed) noexcept {
    stripes_[this_thread_stripe()].value.fetch_add(n, std::memory_order_relaxed);
  }
  void fetch_sub(T n, std::memory_order = std::memory_order_relaxed) noexcept {
    stripes_[this_thread_stripe()].value.fetch_sub(n, std::memory_order_relaxed);
  }
  T load(std::memory_order = std::memory_order_relaxed) const noexcept {
    T sum = 0;
    for (const Stripe& s : stripes_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  struct alignas(64) Stripe {
    std::atomic<T> value{0};
  };
  std::array<Stripe, kStripes> stripes_;
};

class Histogram {
 public:
  static constexpr std::array<double, 16> kBounds = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,    0.25,   0.5,   1,      2.5,   5,    10,    60};
  void observe(double seconds) noexcept {
    std::size_t i = 0;
    while (i < kBounds.size() && seconds > kBounds[i]) ++i;
    Stripe& s = stripes_[this_thread_stripe()];
    s.counts[i].fetch_add(1, std::memory_order_relaxed);
    s.sum_ns.fetch_add(static_cast<std::uint64_t>(std::max(0.0, seconds) * 1e9), std::memory_order_relaxed);
  }
  HistogramSnapshot snapshot() const;

 private:
  struct alignas(64) Stripe {
    std::array<std::atomic<std::uint64_t>, kBounds.size() + 1> counts{};
    std::atomic<std::uint64_t> sum_ns{0};
  };
  std::array<Stripe, kStripes> stripes_;
};

// Cumulative counters of one job type.
struct TypeCounters {
  static constexpr std::size_t kKinds = kFailureKinds;
  Striped<std::uint64_t> submitted, started, succeeded;
  std::atomic<std::uint64_t> retried{0};
  std::array<std::atomic<std::uint64_t>, kKinds> failed{};     // dead-lettered, by kind
  std::array<std::atomic<std::uint64_t>, kKinds> recovered{};  // every failed attempt, by kind
};

// Recent queue waits: a ring of samples.
class WaitSamples {
 public:
  void add(std::int64_t wait_us, std::int64_t now_ms) noexcept {
    const std::uint64_t i = next_.fetch_add(1, std::memory_order_relaxed) % kSize;
    samples_[i].wait_us.store(wait_us, std::memory_order_relaxed);
    samples_[i].at_ms.store(now_ms, std::memory_order_relaxed);
  }
  // p99 of the samples taken since `since_ms`, in milliseconds.
  std::optional<double> p99_since(std::int64_t since_ms) const;

 private:
  static constexpr std::size_t kSize = 1024;
  struct Sample {
    std::atomic<std::int64_t> wait_us{0};
    std::atomic<std::int64_t> at_ms{-1};
  };
  std::array<Sample, kSize> samples_;
  std::atomic<std::uint64_t> next_{0};
};

}  // namespace bulwark::detail
