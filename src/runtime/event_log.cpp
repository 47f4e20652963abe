#include "runtime/event_log.hpp"

#include "bulwark/detail/task.hpp"

namespace bulwark {

nlohmann::ordered_json to_json(const Event& e) {
  nlohmann::ordered_json j = {{"id", e.id}, {"kind", e.supervisor ? "supervisor" : "job"}};
  if (!e.job_id.empty()) j["job_id"] = e.job_id;
  if (!e.type.empty()) j["type"] = e.type;
  if (e.state) j["state"] = to_string(*e.state);
  if (e.attempt > 0) j["attempt"] = e.attempt;
  if (e.failure) j["failure"] = to_string(*e.failure);
  if (e.progress) j["progress"] = {{"fraction", e.progress->fraction}, {"note", e.progress->note}};
  if (!e.action.empty()) j["action"] = e.action;
  if (!e.message.empty()) j["message"] = e.message;
  j["at"] = format_iso8601(e.at);
  return j;
}

namespace detail {

void EventLog::job(const Task& task, JobState state, int attempt, std::optional<FailureKind> failure) {
  if (!recording()) return;
  Event e;
  e.job_id = task.id();
  e.type = task.type();
  e.state = state;
  e.attempt = attempt;
  e.failure = failure;
  add(std::move(e));
}

void EventLog::progress(const Task& task, const JobProgress& progress) {
  if (!recording()) return;
  Event e;
  e.job_id = task.id();
  e.type = task.type();
  e.state = JobState::running;
  e.attempt = task.with_record([](const TaskRecord& r) { return r.attempts; });
  e.progress = progress;
  add(std::move(e));
}

void EventLog::supervisor(std::string action, std::string message, const Task* task) {
  if (!recording()) return;
  Event e;
  e.supervisor = true;
  e.action = std::move(action);
  e.message = std::move(message);
  if (task != nullptr) {
    e.job_id = task->id();
    e.type = task->type();
  }
  add(std::move(e));
}

void EventLog::add(Event event) {
  event.at = WallClock::now();
  MutexLock lock(mutex_);
  event.id = next_id_++;
  ring_.push_back(std::move(event));
  while (ring_.size() > capacity_) ring_.pop_front();
}

EventPage EventLog::after(std::uint64_t after, std::size_t max) {
  last_read_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  if (capacity_ > 0) recording_.store(true, std::memory_order_relaxed);
  EventPage page;
  MutexLock lock(mutex_);
  page.newest = next_id_ - 1;
  if (ring_.empty()) return page;
  page.oldest = ring_.front().id;
  // Numbers are consecutive: the position of `after + 1` is known.
  std::size_t from = after + 1 <= page.oldest ? 0 : static_cast<std::size_t>(after + 1 - page.oldest);
  for (std::size_t i = from; i < ring_.size() && page.events.size() < max; ++i) page.events.push_back(ring_[i]);
  return page;
}

void EventLog::expire(Clock::time_point now) {
  if (!recording()) return;
  const Clock::time_point last{Clock::duration(last_read_.load(std::memory_order_relaxed))};
  if (now - last > linger_) recording_.store(false, std::memory_order_relaxed);
}

}  // namespace detail
}  // namespace bulwark
