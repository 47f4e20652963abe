#include "runtime/attempt.hpp"

#include <atomic>

#include "core/context_access.hpp"
#include "core/flow_link.hpp"
#include "guard/crash_report.hpp"
#include "runtime/clock.hpp"
#include "runtime/testing_hooks.hpp"
#include "core/task_access.hpp"

namespace bulwark::detail {

namespace hooks {
namespace {
std::atomic<bool> g_unguarded{false};
__attribute__((tls_model("initial-exec"))) thread_local bool tls_end_worker = false;
}  // namespace
void end_current_worker() noexcept { tls_end_worker = true; }
bool take_end_request() noexcept { return std::exchange(tls_end_worker, false); }
void set_unguarded(bool unguarded) noexcept { g_unguarded.store(unguarded, std::memory_order_relaxed); }
bool unguarded() noexcept { return g_unguarded.load(std::memory_order_relaxed); }
}  // namespace hooks

RunnerResult InThreadRunner::run(Task& task, JobContext& ctx) {
  RunnerResult r;
  if (hooks::unguarded()) {
    task.run(ctx);
  } else {
    r.outcome = guarded([&] { task.run(ctx); });
  }
  r.cleanup_errors = ContextAccess::run_cleanups(ctx, !r.outcome.ok());
  return r;
}

RunnerResult ChildRunner::run(Task& task, JobContext& ctx) {
  ProcessRequest request;
  request.id = task.id();
  request.type = task.type();
  request.attempt = ctx.attempt();
  request.fence = ctx.fencing_token();
  // A flow's parent sends its children's outcomes too (payload.children).
  const nlohmann::json with_children =
      task.spec().flow ? payload_with_children(task.spec().payload, task.spec().flow.get()) : nlohmann::json();
  request.payload = task.spec().flow ? &with_children : &task.spec().payload;
  request.hard_timeout = task.spec().hard_timeout;
  request.memory_limit_mb = memory_limit_mb_;
  request.stop = ctx.stop_token();
  request.traceparent = ctx.traceparent();
  request.on_progress = [&ctx](double fraction, const std::string& note) { ctx.progress(fraction, note); };
  ProcessReply reply = processes_->run(request);
  if (reply.stuck_trace) {
    TaskAccess::with_record(task,
                            [&](TaskRecord& r) { r.stuck_trace = std::make_unique<RawTrace>(*reply.stuck_trace); });
  }
  RunnerResult r;
  r.cleanup_errors = std::move(reply.cleanup_errors);
  if (!reply.ok) {
    r.outcome = Outcome<void>(std::move(reply.failure), nullptr);
    return r;
  }
  TaskAccess::commit(task, ctx, [&](TaskRecord& rec) { rec.result = std::move(reply.result); });
  return r;
}

AttemptRunner& in_thread_runner() noexcept {
  static InThreadRunner runner;
  return runner;
}

bool Attempt::start(Clock::time_point now) {
  start_ = now;
  const bool go = TaskAccess::with_record(task_, [&](TaskRecord& r) {
    if (r.cancel_requested) return false;  // cancelled while it was deferred
    number_ = ++r.attempts;
    fence_ = ++r.fence;
    epoch_ = r.epoch;
    r.stop = slot_.stop_source();  // lent for this attempt; taken back when it ends
    token_ = r.stop.get_token();
    if (!r.started_at) r.started_at = to_wall(now);
    if (task_.spec().trace) r.span_id = span_id_ = new_span_id();  // each attempt is a span of its own
    return true;
  });
  if (go) TaskAccess::heartbeat(task_, now);
  return go;
}

AttemptEnd Attempt::run() {
  JobContext ctx = ContextAccess::make(task_, std::move(token_), number_, epoch_, fence_, span_id_);
  set_crash_context(task_.id().c_str(), task_.type().c_str(), slot_.id());
  RunnerResult result = runner_.run(task_, ctx);
  set_crash_context(nullptr, nullptr, slot_.id());
  AttemptEnd end;
  end.attempt = number_;
  end.outcome = std::move(result.outcome);
  end.cleanup_errors = std::move(result.cleanup_errors);
  if (!end.outcome.ok()) {
    Failure& f = end.outcome.failure();
    end.child_timed_out = runner_.remote() && f.kind == FailureKind::timeout;
    if (f.type == "bulwark::Stopped") {
      // Why it was stopped is the task's to say (a child process only knows
      // that it was asked to).
      f.kind = task_.stop_reason();
      f.message = Stopped(f.kind).what();
    }
  }
  end.end = Clock::now();
  end.duration_ms = ms_between(start_, end.end);
  return end;
}

}  // namespace bulwark::detail
