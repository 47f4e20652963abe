// Internal: the runtime's access to a JobContext's private parts, shared by
// the worker threads (runtime.cpp) and child worker processes
// (isolation/child.cpp).
#pragma once

#include <vector>

#include "bulwark/guarded.hpp"
#include "bulwark/job_context.hpp"

namespace bulwark::detail {

// The runtime's access to a JobContext's private parts.
struct ContextAccess {
  static JobContext make(Task& task, std::stop_token stop, int attempt, std::uint32_t epoch, std::uint64_t fence,
                         std::string span_id = {}) noexcept {
    return JobContext(task, std::move(stop), attempt, epoch, fence, std::move(span_id));
  }

  // Runs the cleanups last-registered first. `failed` says whether the
  // attempt has failed so far; a cleanup that throws makes it so.
  static std::vector<Failure> run_cleanups(JobContext& ctx, bool failed) {
    std::vector<Failure> failures;
    for (auto it = ctx.cleanups_.rbegin(); it != ctx.cleanups_.rend(); ++it) {
      if (it->only_on_failure && !failed) continue;
      auto outcome = guarded(it->fn);
      if (!outcome.ok()) {
        failures.push_back(std::move(outcome.failure()));
        failures.back().origin = it->only_on_failure ? FailureOrigin::on_failure : FailureOrigin::defer;
        failed = true;
      }
    }
    ctx.cleanups_.clear();
    return failures;
  }
};

}  // namespace bulwark::detail
