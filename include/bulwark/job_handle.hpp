// JobHandle<R>: the caller's end of a callable given to Runtime::post().
//
//   auto h = runtime.post([] { return 6 * 7; });
//   int v = h.get();  // 42, or rethrows what the callable threw
//
// get() rethrows the job's original exception object, so its throw-site trace
// is still there: `bulwark::current_exception_trace()` in the catch block
// returns it. Failures that were not thrown (shutdown, cancellation, a
// rejected post) surface as JobError. get() may be called any number of
// times, from any copy of the handle, and returns a copy of the value; a
// value that cannot be copied (a std::unique_ptr) is moved out by the first
// get(), and later calls throw JobError.
//
// Copyable; all members thread-safe. wait() and get() block.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>

#include "bulwark/detail/task.hpp"
#include "bulwark/submit_error.hpp"

namespace bulwark {

// A failure that has no exception of its own to rethrow.
class JobError : public std::runtime_error {
 public:
  JobError(FailureKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  FailureKind kind() const noexcept { return kind_; }

 private:
  FailureKind kind_;
};

template <class R>
class JobHandle {
 public:
  using value_type = typename detail::ResultTask<R>::value_type;

  JobHandle(std::shared_ptr<detail::ResultTask<R>> task) : task_(std::move(task)) {}
  JobHandle(SubmitError error) : error_(std::move(error)) {}

  bool accepted() const noexcept { return task_ != nullptr; }
  // Why the post was refused (queue full, shutting down); empty if accepted.
  const std::optional<SubmitError>& error() const noexcept { return error_; }
  const JobId& id() const noexcept {
    static const JobId kNone;
    return task_ ? task_->id() : kNone;
  }

  JobState state() const noexcept {
    return task_ ? task_->state() : JobState::rejected;
  }

  void wait() const noexcept {
    if (task_) task_->wait();
  }

  // True once the job is terminal; false if `timeout` passed first.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::microseconds(50);
    while (!is_terminal(state())) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(5000));
    }
    return true;
  }

  // The failure of the last attempt, once the job is terminal and failed.
  std::optional<Failure> failure() const {
    if (!task_) return make_failure(FailureKind::invalid, error_->message);
    return task_->failure();
  }

  // Waits, then returns the value (a copy) or rethrows the failure.
  value_type get() const {
    if (!task_) throw JobError(FailureKind::invalid, error_->message);
    task_->wait();
    if (task_->state() == JobState::succeeded) {
      if constexpr (std::is_void_v<R>) {
        return {};
      } else if constexpr (std::is_copy_constructible_v<value_type>) {
        return *task_->value;
      } else {
        if (task_->taken.exchange(true, std::memory_order_acq_rel)) {
          throw JobError(FailureKind::invalid, "the value of job " + task_->id() + " was moved out by an earlier get()");
        }
        return std::move(*task_->value);
      }
    }
    if (std::exception_ptr exception = task_->exception()) std::rethrow_exception(exception);
    if (std::optional<Failure> failure = task_->failure()) throw JobError(failure->kind, failure->message);
    throw JobError(FailureKind::shutdown, "job " + task_->id() + " was cancelled");
  }

 private:
  std::shared_ptr<detail::ResultTask<R>> task_;
  std::optional<SubmitError> error_;
};

}  // namespace bulwark
