// JobContext: what a running job knows about itself and how it cleans up.
//
// One context exists per attempt. It gives the job's id, type and attempt
// number, a stop token (cancellation, shutdown), heartbeat(), and Go-style
// cleanup: `defer(fn)` runs when the attempt ends, whatever its outcome;
// `on_failure(fn)` runs only if the attempt has failed, for rollback. Both
// run last-registered first, each in its own guarded frame: a cleanup that
// throws is recorded on the job (it fails an attempt that had succeeded, and
// is listed in `cleanup_errors` otherwise); it never escapes.
//
//   runtime_registry.add("transfer", [](bulwark::JobContext& ctx, const json& p) {
//     auto tx = db.begin();
//     ctx.on_failure([&] { tx.rollback(); });
//     ctx.defer([&] { db.release(); });
//     tx.commit();
//     return json{{"ok", true}};
//   });
//
// Used only by the thread running the attempt: not thread-safe, never blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "bulwark/failure.hpp"
#include "bulwark/job.hpp"

namespace bulwark {
namespace detail {
class Task;
struct ContextAccess;
}  // namespace detail

// Thrown by JobContext::throw_if_stop_requested(): the job gave up because
// it was asked to stop. The attempt fails with kind `timeout` when its soft
// timeout asked, `cancelled` when a user cancelled it, `shutdown` when the
// runtime is stopping; a cancelled job is not retried.
class Stopped : public std::exception {
 public:
  explicit Stopped(FailureKind reason) noexcept : reason_(reason) {}
  FailureKind reason() const noexcept { return reason_; }
  const char* what() const noexcept override;

 private:
  FailureKind reason_;
};

class JobContext {
 public:
  JobContext(const JobContext&) = delete;
  JobContext& operator=(const JobContext&) = delete;

  const JobId& id() const noexcept;
  const std::string& type() const noexcept;
  int attempt() const noexcept { return attempt_; }  // 1 for the first attempt

  // A number that grows with every lease of this job (every attempt, and
  // with a shared queue every take-over of a lease by another process), so
  // a handler can fence its own side effects against an older attempt that
  // still runs, e.g. a process paused past its lease and resumed:
  //
  //   db.exec("UPDATE accounts SET balance = :b, fence = :t WHERE id = :id AND fence < :t",
  //           {{"t", ctx.fencing_token()}, ...});   // 0 rows: a newer attempt got there first
  std::uint64_t fencing_token() const noexcept { return fence_; }
  // Whether this attempt still holds the job's lease: false once the
  // supervisor abandoned it or another process took its lease over (this
  // process learns that at its next renewal, within a third of
  // redis.lease_ms). Takes the job's record lock.
  bool lease_valid() const;
  std::stop_token stop_token() const noexcept { return stop_; }
  bool stop_requested() const noexcept { return stop_.stop_requested(); }
  // Throws Stopped if a stop was requested: the way for a job to end when
  // asked, so that it fails as timed out or cancelled instead of reporting
  // a success for work it did not do.
  //
  //   for (auto& row : rows) { ctx.throw_if_stop_requested(); process(row); }
  void throw_if_stop_requested() const;

  // Tells the supervisor the job is making progress. Cheap: one atomic store.
  void heartbeat() noexcept;

  // Says how far the job is: `fraction` from 0 to 1 (clamped; NaN is
  // ignored) and a short note (the first JobProgress::kMaxNoteBytes bytes
  // are kept). It shows on the job's record as "progress", in the event
  // stream (a job event, state running, at most every 100 ms per job and
  // always at 1) and on the dashboard; with the redis backend the record in
  // Redis gets it as often as the events do. Also a heartbeat. From a child
  // worker process (process isolation) it travels to the parent. Cheap: the
  // record's lock; never waits for I/O.
  //
  //   for (std::size_t i = 0; i < rows.size(); ++i) { load(rows[i]); ctx.progress((i + 1.0) / rows.size()); }
  void progress(double fraction, std::string_view note = {});

  // The W3C trace context of a job submitted with one (trace_context.hpp);
  // empty strings without. trace_id: the request's trace; span_id: this
  // attempt's span; traceparent(): "00-<trace_id>-<span_id>-<flags>", the
  // header to send to services this attempt calls.
  const std::string& trace_id() const noexcept;
  const std::string& span_id() const noexcept { return span_id_; }
  std::string traceparent() const;

  // A flow's parent (JobSpec::children): how each of its children ended,
  // in the order they were given (a failed child whose policy is `remove`
  // left out). Empty for a job that has none. The same list a JSON handler
  // finds in payload.children.
  //
  //   double total = 0;
  //   for (const auto& c : ctx.children()) if (c.state == bulwark::JobState::succeeded) total += c.result["bytes"].get<double>();
  std::vector<ChildOutcome> children() const;

  void defer(std::function<void()> fn);
  void on_failure(std::function<void()> fn);

 private:
  friend struct detail::ContextAccess;
  friend class detail::Task;
  JobContext(detail::Task& task, std::stop_token stop, int attempt, std::uint32_t epoch, std::uint64_t fence,
             std::string span_id) noexcept
      : task_(task),
        stop_(std::move(stop)),
        attempt_(attempt),
        epoch_(epoch),
        fence_(fence),
        span_id_(std::move(span_id)) {}

  struct Cleanup {
    std::function<void()> fn;
    bool only_on_failure{};
  };

  detail::Task& task_;
  std::stop_token stop_;
  int attempt_;
  std::uint32_t epoch_;  // which attempt of the task this is, for Task::commit
  std::uint64_t fence_;  // the lease's fencing token
  std::string span_id_;  // empty without a trace
  std::vector<Cleanup> cleanups_;
};

}  // namespace bulwark
