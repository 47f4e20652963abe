// RecoveryGovernor: how many retries may run at once, moved with load.
//
// Every recovery.adjust_ms the supervisor reads the load signals and calls
// step(): any signal above its high mark lowers the limit (multiplied by
// recovery.decrease_factor, not below recovery.min_concurrent); every
// signal below its low mark for recovery.increase_after evaluations in a
// row raises it by one (not above max); anything between holds it, so the
// limit does not swing with each evaluation (hysteresis). Additive
// increase, multiplicative decrease, as TCP's congestion window.
//
//   RecoveryGovernor g(options.recovery, 1, 8);
//   if (auto change = g.step(signals)) log(change->why);
//
// Not thread-safe: one owner (the supervisor thread). LoadProbe reads
// /proc; it does not block beyond two small file reads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "bulwark/config.hpp"

namespace bulwark::detail {

// What the governor decides on; a signal that is unknown (no sample) counts
// as calm.
struct LoadSignals {
  std::optional<double> machine_cpu;   // busy share of all cores, 0..1
  std::optional<double> process_cpu;   // this process's share of all cores, 0..1
  std::optional<double> wait_p99_ms;   // fresh jobs' queue wait since the last evaluation
  double saturation = 0;               // busy workers / workers
  std::optional<double> failure_rate;  // failed attempts / ended attempts since the last evaluation
};

class RecoveryGovernor {
 public:
  struct Change {
    unsigned from = 0, to = 0;
    bool up = false;
    std::string why;  // "lowered 4 -> 2: machine CPU 0.93 over recovery.cpu_high 0.85; ..."
  };

  RecoveryGovernor(const RecoveryOptions& options, unsigned min, unsigned max);

  // One evaluation; the change it made, if any.
  std::optional<Change> step(const LoadSignals& s);
  unsigned limit() const noexcept { return limit_; }
  unsigned min() const noexcept { return min_; }
  unsigned max() const noexcept { return max_; }

 private:
  RecoveryOptions options_;
  unsigned min_, max_;
  unsigned limit_;
  unsigned calm_ = 0;  // calm evaluations in a row
};

// The signals /proc gives: CPU shares since the previous sample().
class LoadProbe {
 public:
  struct Cpu {
    std::optional<double> machine, process;
  };
  Cpu sample();

 private:
  std::uint64_t total_ = 0, idle_ = 0, process_ = 0;  // ticks at the previous sample
  bool primed_ = false;
};

// "0.93" for a share, "1200 ms" for a wait: how signals read in a log line.
std::string describe(const LoadSignals& s);

}  // namespace bulwark::detail
