// Internal: clock helpers shared by the runtime's parts.
//
// Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

#include "bulwark/job.hpp"

namespace bulwark::detail {

// Wall-clock time of a steady-clock reading, without reading the wall clock
// again (each clock read costs; the hot path takes three per job).
inline WallClock::time_point to_wall(Clock::time_point t) {
  static const auto offset = WallClock::now().time_since_epoch() - Clock::now().time_since_epoch();
  return WallClock::time_point(std::chrono::duration_cast<WallClock::duration>(t.time_since_epoch() + offset));
}

inline double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

inline std::int64_t steady_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace bulwark::detail
