// A Task that does nothing, for driving JobQueue directly.
#pragma once

#include <memory>
#include <string>

#include "bulwark/detail/task.hpp"
#include "bulwark/job_context.hpp"
#include "core/task_access.hpp"

namespace bulwark::testing {

class FakeTask final : public detail::Task {
 public:
  void run(JobContext&) override {}
};

inline std::shared_ptr<detail::Task> fake_task(std::string id, int priority = 0,
                                               JobState state = JobState::queued, std::string queue = {}) {
  auto t = std::make_shared<FakeTask>();
  detail::TaskAccess::spec(*t).id = std::move(id);
  detail::TaskAccess::spec(*t).priority = priority;
  detail::TaskAccess::spec(*t).queue = std::move(queue);
  detail::TaskAccess::set_state(*t, state);
  return t;
}

}  // namespace bulwark::testing
