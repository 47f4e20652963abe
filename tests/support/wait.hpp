// The one way tests wait: poll a condition until it holds or a limit passes.
// Every suite uses these instead of its own loop.
#pragma once

#include <chrono>
#include <optional>
#include <thread>

#include "bulwark/runtime.hpp"

namespace bulwark::testing {

// Polls `pred` every 2 ms; true once it holds, false if `limit` passed first.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// The job's record once it is terminal; nullopt if it is unknown or still
// not terminal after `limit`.
inline std::optional<JobRecord> await_terminal(const Runtime& rt, const JobId& id,
                                               std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  std::optional<JobRecord> record;
  const bool ended = eventually(
      [&] {
        record = rt.get(id);
        return !record || is_terminal(record->state);
      },
      limit);
  if (!ended || !record) return std::nullopt;
  return record;
}

}  // namespace bulwark::testing
