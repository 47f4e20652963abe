#include "runtime/reporter.hpp"

#include "support/text.hpp"
#include "bulwark/job.hpp"

#include <blockingconcurrentqueue.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <ctime>
#include <variant>

#include <nlohmann/json.hpp>

namespace bulwark::detail {
namespace {

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::critical: return spdlog::level::critical;
  }
  return spdlog::level::info;
}

// ECS: https://www.elastic.co/guide/en/ecs/current/ (dotted keys, one level).
constexpr const char* kEcsVersion = "8.11.0";

nlohmann::ordered_json ecs_line(std::chrono::system_clock::time_point time, spdlog::level::level_enum level,
                                const std::string& message) {
  return {{"@timestamp", format_iso8601(time)},
          {"log.level", spdlog::level::to_string_view(level).data()},
          {"message", message},
          {"ecs.version", kEcsVersion},
          {"log.logger", "bulwark"}};
}

// A trace as ECS's error.stack_trace: one frame per line.
std::string stack_text(const RawTrace& trace) {
  std::string out;
  int i = 0;
  for (const Frame& f : symbolize(trace)) {
    if (!out.empty()) out += '\n';
    out.append("#").append(std::to_string(i++)).append(" ").append(f.function.empty() ? "??" : f.function);
    if (!f.file.empty()) out.append(" at ").append(f.file).append(":").append(std::to_string(f.line));
  }
  if (trace.truncated) out += "\n... (deeper frames not kept)";
  return out;
}

void append_frames(std::string& out, const RawTrace& trace) {
  int i = 0;
  for (const Frame& f : symbolize(trace)) {
    out += "\n    #" + std::to_string(i++) + " " + (f.function.empty() ? "??" : f.function);
    if (!f.file.empty()) out += " at " + f.file + ":" + std::to_string(f.line);
  }
  if (trace.truncated) out += "\n    ... (deeper frames not kept)";
}

}  // namespace

struct Reporter::Event {
  LogLevel level = LogLevel::info;
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
  std::variant<std::string, AttemptFailure, StackNote> body;
};

struct Reporter::Queue {
  moodycamel::BlockingConcurrentQueue<Event> events;
};

Reporter::Reporter(const LogOptions& options) : json_(options.format == "json"), queue_(std::make_unique<Queue>()) {
  if (options.logger) {
    logger_ = options.logger;  // the embedding program's: its sinks, pattern and level
  } else {
    spdlog::sink_ptr sink;
    try {
      if (options.file.empty()) {
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
      } else if (options.file == "-") {
        sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
      } else {
        sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file, false);
      }
    } catch (const spdlog::spdlog_ex& e) {
      throw ConfigError("logging.file: cannot open '" + options.file + "': " + e.what());
    }
    logger_ = std::make_shared<spdlog::logger>("bulwark", std::move(sink));
    logger_->set_pattern(json_ ? "%v" : "[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    logger_->set_level(spdlog::level::from_str(options.level));
    logger_->flush_on(spdlog::level::trace);
  }
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

Reporter::~Reporter() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

bool Reporter::enabled(LogLevel level) const noexcept { return logger_->should_log(to_spdlog(level)); }

void Reporter::post(Event&& event) noexcept {
  if (!enabled(event.level)) return;
  if (pending_.fetch_add(1, std::memory_order_relaxed) >= kMaxPending) {
    pending_.fetch_sub(1, std::memory_order_relaxed);
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  try {
    queue_->events.enqueue(std::move(event));
  } catch (...) {
    pending_.fetch_sub(1, std::memory_order_relaxed);
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Reporter::attempt_failed(AttemptFailure event) noexcept {
  try {
    post(Event{LogLevel::error, std::chrono::system_clock::now(), std::move(event)});
  } catch (...) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Reporter::log(LogLevel level, std::string message) noexcept {
  try {
    post(Event{level, std::chrono::system_clock::now(), std::move(message)});
  } catch (...) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Reporter::note(LogLevel level, StackNote note) noexcept {
  try {
    post(Event{level, std::chrono::system_clock::now(), std::move(note)});
  } catch (...) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Reporter::write(Event& event) {
  if (auto* message = std::get_if<std::string>(&event.body)) {
    write_message(event, *message);
  } else if (auto* note = std::get_if<StackNote>(&event.body)) {
    write_note(event, *note);
  } else {
    write_failure(event, std::get<AttemptFailure>(event.body));
  }
}

void Reporter::write_message(const Event& event, const std::string& message) {
  const auto level = to_spdlog(event.level);
  if (!json_) {
    logger_->log(event.time, spdlog::source_loc{}, level, message);
    return;
  }
  logger_->log(event.time, spdlog::source_loc{}, level, dump_line(ecs_line(event.time, level, message)));
}

void Reporter::write_note(const Event& event, const StackNote& note) {
  const auto level = to_spdlog(event.level);
  if (!json_) {
    std::string text = note.message;
    if (!note.trace_id.empty()) text.append(" [trace ").append(note.trace_id).append(" span ").append(note.span_id).append("]");
    if (note.trace) append_frames(text, *note.trace);
    logger_->log(event.time, spdlog::source_loc{}, level, text);
    return;
  }
  nlohmann::ordered_json line = ecs_line(event.time, level, note.message);
  if (!note.id.empty()) line["job.id"] = note.id;
  if (!note.type.empty()) line["job.type"] = note.type;
  if (!note.trace_id.empty()) {
    line["trace.id"] = note.trace_id;
    line["span.id"] = note.span_id;
  }
  if (note.trace) {
    line["error.stack_trace"] = stack_text(*note.trace);
    line["bulwark.stack_frames"] = to_json(*note.trace, true);
  }
  logger_->log(event.time, spdlog::source_loc{}, level, dump_line(line));
}

void Reporter::write_failure(const Event& event, const AttemptFailure& e) {
  const auto level = to_spdlog(event.level);
  const Failure& f = e.failure;
  if (json_) {
    nlohmann::ordered_json line = ecs_line(event.time, level, "job attempt failed");
    line["job.id"] = e.id;
    line["job.type"] = e.type;
    line["job.attempt"] = e.attempt;
    line["job.max_attempts"] = e.max_attempts;
    if (!e.trace_id.empty()) {
      line["trace.id"] = e.trace_id;
      line["span.id"] = e.span_id;
    }
    line["error.type"] = f.type.empty() ? std::string(to_string(f.kind)) : f.type;
    line["error.message"] = f.message;
    std::string stack = stack_text(f.trace);
    for (const NestedFailure& n : f.nested) stack += "\ncaused by " + n.type + ": " + n.message + "\n" + stack_text(n.trace);
    line["error.stack_trace"] = std::move(stack);
    line["bulwark.failure.kind"] = to_string(f.kind);
    line["bulwark.failure.origin"] = to_string(f.origin);
    line["bulwark.stack_frames"] = to_json(f.trace, true);
    if (!f.nested.empty()) line["bulwark.nested"] = to_json(f, true)["nested"];
    if (e.retry_in) line["bulwark.retry_in_ms"] = e.retry_in->count();
    logger_->log(event.time, spdlog::source_loc{}, level, dump_line(line));
    return;
  }
  std::string text = "job " + e.id + " (" + e.type + ") attempt " + std::to_string(e.attempt) + "/" +
                     std::to_string(e.max_attempts) + " failed";
  if (f.origin != FailureOrigin::handler) text += " in " + std::string(to_string(f.origin));
  text += ": " + (f.kind == FailureKind::exception ? f.type : std::string(to_string(f.kind)));
  if (!f.message.empty()) text += ": " + f.message;
  text += e.retry_in ? "; retry in " + std::to_string(e.retry_in->count()) + " ms" : "; no attempts left";
  if (!e.trace_id.empty()) text.append(" [trace ").append(e.trace_id).append(" span ").append(e.span_id).append("]");
  append_frames(text, f.trace);
  for (const NestedFailure& n : f.nested) {
    text += "\n  caused by " + n.type + ": " + n.message;
    append_frames(text, n.trace);
  }
  logger_->log(event.time, spdlog::source_loc{}, level, text);
}

void Reporter::run(std::stop_token stop) {
  Event event;
  const auto write_one = [&] {
    pending_.fetch_sub(1, std::memory_order_relaxed);
    try {
      write(event);
    } catch (...) {
      // A log line that cannot be written must not take the reporter down.
    }
  };
  while (!stop.stop_requested()) {
    if (queue_->events.wait_dequeue_timed(event, std::chrono::milliseconds(50))) write_one();
    const std::uint64_t dropped = dropped_.load(std::memory_order_relaxed);
    if (dropped != reported_dropped_) {
      Event note{LogLevel::warn, std::chrono::system_clock::now(),
                 std::to_string(dropped - reported_dropped_) +
                     " log events dropped: failures arrived faster than they could be logged"};
      try {
        write(note);  // as every other line: JSON in the JSON format
      } catch (...) {
      }
      reported_dropped_ = dropped;
    }
  }
  while (queue_->events.try_dequeue(event)) write_one();
  logger_->flush();
}

}  // namespace bulwark::detail
