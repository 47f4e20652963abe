#include "runtime/event_log.hpp"

#include <algorithm>

#include "bulwark/detail/task.hpp"

namespace bulwark {

namespace {

std::optional<FailureKind> failure_kind_named(const std::string& name) {
  for (std::size_t k = 0; k < kFailureKinds; ++k) {
    if (to_string(static_cast<FailureKind>(k)) == name) return static_cast<FailureKind>(k);
  }
  return std::nullopt;
}

}  // namespace

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
  if (!e.process.empty()) j["process"] = e.process;
  return j;
}

std::optional<Event> event_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("id") || !j["id"].is_number_unsigned()) return std::nullopt;
  const auto text = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  Event e;
  e.id = j["id"].get<std::uint64_t>();
  e.supervisor = text("kind") == "supervisor";
  e.job_id = text("job_id");
  e.type = text("type");
  if (auto s = text("state"); !s.empty()) e.state = parse_job_state(s);
  if (auto it = j.find("attempt"); it != j.end() && it->is_number_integer()) e.attempt = it->get<int>();
  if (auto f = text("failure"); !f.empty()) e.failure = failure_kind_named(f);
  if (auto it = j.find("progress"); it != j.end() && it->is_object()) {
    JobProgress p;
    p.fraction = it->value("fraction", 0.0);
    p.note = it->value("note", std::string());
    e.progress = std::move(p);
  }
  e.action = text("action");
  e.message = text("message");
  if (auto it = j.find("at_ms"); it != j.end() && it->is_number_integer()) {
    e.at = WallClock::time_point(std::chrono::milliseconds(it->get<long long>()));
  }
  e.process = text("process");
  return e;
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
  if (sink_) {
    sink_(std::move(event));
    return;
  }
  MutexLock lock(mutex_);
  event.id = ++newest_;
  ring_.push_back(std::move(event));
  while (ring_.size() > capacity_) ring_.pop_front();
}

void EventLog::mirror(std::vector<Event> events) {
  MutexLock lock(mutex_);
  for (Event& e : events) {
    if (e.id <= newest_) continue;
    newest_ = e.id;
    ring_.push_back(std::move(e));
  }
  while (ring_.size() > capacity_) ring_.pop_front();
}

EventPage EventLog::after(std::uint64_t after, std::size_t max) {
  last_read_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  if (capacity_ > 0) recording_.store(true, std::memory_order_relaxed);
  EventPage page;
  MutexLock lock(mutex_);
  page.newest = newest_;
  if (ring_.empty()) return page;
  page.oldest = ring_.front().id;
  // Ascending numbers (consecutive here; a shared stream's may skip).
  auto it = std::upper_bound(ring_.begin(), ring_.end(), after,
                             [](std::uint64_t n, const Event& e) { return n < e.id; });
  for (; it != ring_.end() && page.events.size() < max; ++it) page.events.push_back(*it);
  return page;
}

void EventLog::expire(Clock::time_point now) {
  if (!recording()) return;
  const Clock::time_point last{Clock::duration(last_read_.load(std::memory_order_relaxed))};
  if (now - last > linger_) recording_.store(false, std::memory_order_relaxed);
}

}  // namespace detail
}  // namespace bulwark
