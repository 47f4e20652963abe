#include "redis/event_feed.hpp"

#include <algorithm>
#include <utility>

#include "redis/redis_broker.hpp"
#include "redis/scripts.hpp"
#include "support/text.hpp"

namespace bulwark::detail::redis {

namespace {

constexpr std::size_t kBatch = 500;
constexpr auto kLook = std::chrono::milliseconds(250);  // how often the publisher looks for readers
constexpr auto kReadMark = std::chrono::milliseconds(3000);  // how long a "read" mark lasts

// Event n is stream entry "<n>-1" (kPublishEvents).
std::uint64_t event_number(const std::string& entry) {
  return std::strtoull(entry.c_str(), nullptr, 10);
}

std::optional<Event> parse_entry(const Value& entry) {
  const Value& fields = entry.elements.at(1);
  if (fields.elements.size() < 2) return std::nullopt;
  try {
    nlohmann::json j = nlohmann::json::parse(fields.elements[1].str);
    if (!j.is_object()) return std::nullopt;
    j["id"] = event_number(entry.elements.at(0).str);
    return event_from_json(j);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // written by a bulwark process: not expected
  }
}

}  // namespace

EventFeed::EventFeed(const BrokerOptions& options, std::string process, std::size_t buffer, EventLog& log,
                     Reporter& reporter)
    : redis_(options.redis),
      keys_(options.ns),
      process_(std::move(process)),
      buffer_(std::max<std::size_t>(1, buffer)),
      log_(log),
      reporter_(reporter) {
  log_.set_sink([this](Event e) { publish(std::move(e)); });
}

EventFeed::~EventFeed() {
  stop();
  log_.set_sink(nullptr);  // nothing records any more: the runtime's threads have stopped
}

void EventFeed::start() {
  publisher_ = std::jthread([this](std::stop_token stop) { publish_loop(std::move(stop)); });
  follower_ = std::jthread([this](std::stop_token stop) { follow_loop(std::move(stop)); });
}

void EventFeed::stop() {
  publisher_.request_stop();
  follower_.request_stop();
  if (publisher_.joinable()) publisher_.join();
  if (follower_.joinable()) follower_.join();
}

void EventFeed::publish(Event event) {
  event.process = process_;
  bool first = false;
  bool started_dropping = false;
  {
    MutexLock lock(mutex_);
    first = pending_.empty();
    pending_.push_back(std::move(event));
    if (pending_.size() > buffer_) {
      pending_.pop_front();
      started_dropping = dropped_++ == 0;
    }
  }
  if (started_dropping) {
    reporter_.log(LogLevel::warn, "events of this process are being dropped: " + std::to_string(buffer_) +
                                      " wait for Redis (events.buffer), which does not take them");
  }
  if (first) wake_.signal();
}

// Writes up to kBatch waiting events with one script call; they stay if
// Redis does not take them (RedisError).
void EventFeed::flush(Connection& c) {
  std::vector<std::string> args = {std::to_string(buffer_)};
  std::size_t n = 0;
  {
    MutexLock lock(mutex_);
    n = std::min(pending_.size(), kBatch);
    for (std::size_t i = 0; i < n; ++i) {
      const Event& e = pending_[i];
      nlohmann::ordered_json j = to_json(e);
      j.erase("id");
      j["at_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(e.at.time_since_epoch()).count();
      args.push_back(dump_line(j));
    }
  }
  if (n == 0) return;
  c.eval(kPublishEvents, {keys_.events, keys_.events_seq}, args);
  std::uint64_t dropped = 0;
  {
    MutexLock lock(mutex_);
    // Events dropped meanwhile came off the front: take off what was sent.
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(std::min(n, pending_.size())));
    dropped = std::exchange(dropped_, 0);
  }
  if (dropped > 0) {
    reporter_.log(LogLevel::info, "events of this process reach Redis again; " + std::to_string(dropped) +
                                      " were dropped meanwhile");
  }
}

void EventFeed::publish_loop(std::stop_token stop) {
  Link link(redis_, "event publisher");
  auto last_look = Clock::time_point{};
  while (!stop.stop_requested()) {
    wake_.wait(stop, kLook);
    try {
      Connection& c = link.get();
      if (Clock::now() - last_look >= kLook) {
        log_.set_read_elsewhere(c.command({"EXISTS", keys_.events_read}).as_integer() == 1);
        last_look = Clock::now();
      }
      for (;;) {
        flush(c);
        MutexLock lock(mutex_);
        if (pending_.empty()) break;
      }
      link.ok();
    } catch (const RedisError& e) {
      link.failed(e);
    }
  }
  // A last chance for what was recorded before the stop.
  try {
    Connection c(redis_);
    flush(c);
  } catch (const RedisError&) {
    // Redis is gone: those events are lost with this process.
  }
}

// The newest events already in the stream, so a reader here can resume
// from a number another process gave it.
void EventFeed::backfill(Connection& c) {
  const Value got = c.command({"XREVRANGE", keys_.events, "+", "-", "COUNT", std::to_string(buffer_)});
  std::vector<Event> events;
  for (auto it = got.elements.rbegin(); it != got.elements.rend(); ++it) {
    last_ = it->elements.at(0).str;
    if (auto e = parse_entry(*it)) events.push_back(std::move(*e));
  }
  log_.mirror(std::move(events));
}

void EventFeed::read_batch(Connection& c) {
  const auto block = blocking_read_ms(redis_.command_timeout);
  const Value got = c.command({"XREAD", "COUNT", std::to_string(kBatch), "BLOCK", std::to_string(block), "STREAMS",
                               keys_.events, last_});
  if (got.is_nil() || got.elements.empty()) return;
  std::vector<Event> events;
  for (const Value& entry : got.elements.at(0).elements.at(1).elements) {
    last_ = entry.elements.at(0).str;
    if (auto e = parse_entry(entry)) events.push_back(std::move(*e));
  }
  log_.mirror(std::move(events));
}

void EventFeed::follow_loop(std::stop_token stop) {
  Link link(redis_, "event follower");
  bool backfilled = false;
  auto last_mark = Clock::time_point{};
  while (!stop.stop_requested()) {
    try {
      Connection& c = link.get();
      if (!backfilled) {
        backfill(c);
        backfilled = true;
      }
      if (log_.read_here() && Clock::now() - last_mark >= kReadMark / 3) {
        try {
          c.command({"SET", keys_.events_read, "1", "PX", std::to_string(kReadMark.count())});
        } catch (const RedisError& e) {
          if (e.kind() != RedisError::Kind::full) throw;  // out of memory: reading matters more than the mark
        }
        last_mark = Clock::now();
      }
      read_batch(c);
      link.ok();
    } catch (const RedisError& e) {
      link.failed(e);
    }
  }
}

}  // namespace bulwark::detail::redis
