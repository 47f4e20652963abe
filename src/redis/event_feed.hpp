// Internal: EventFeed shares a namespace's events between its processes
// through one capped Redis stream ({ns}:events, see keys.hpp), so that
// GET /v1/events, the SSE stream and the dashboard of any process show the
// events of all of them, in one order, under one numbering.
//
// It puts an EventLog in shared mode. A publisher thread appends the
// events recorded here (each naming this process) in batches, one script
// call per batch that numbers them from a counter; while nobody reads
// anywhere nothing is recorded, so nothing is written. A follower thread
// mirrors the stream into the log (the newest events.buffer at start, then
// as they come), and marks the namespace as read while the log is read
// here; the publisher looks for that mark every 250 ms.
//
// Events that cannot reach Redis wait, up to events.buffer of them; beyond
// that the oldest are dropped, with a warning when dropping starts and a
// line when events reach Redis again. Thread-safe; start() and stop() from
// the owner; publish() from any thread, never blocks. stop() blocks up to
// one command timeout.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <thread>

#include "bulwark/detail/thread_annotations.hpp"
#include "redis/connection.hpp"
#include "redis/keys.hpp"
#include "runtime/event_log.hpp"
#include "runtime/reporter.hpp"
#include "support/wake.hpp"

namespace bulwark::detail::redis {

struct BrokerOptions;

class EventFeed {
 public:
  // `process`: this process's id, put on every event it publishes.
  EventFeed(const BrokerOptions& options, std::string process, std::size_t buffer, EventLog& log,
            Reporter& reporter);
  ~EventFeed();
  EventFeed(const EventFeed&) = delete;
  EventFeed& operator=(const EventFeed&) = delete;

  void start();
  void stop();
  // Queues an event of this process for the stream.
  void publish(Event event);

 private:
  void publish_loop(std::stop_token stop);
  void follow_loop(std::stop_token stop);
  void flush(Connection& c);
  void backfill(Connection& c);
  void read_batch(Connection& c);

  const ConnectOptions redis_;
  const Keys keys_;
  const std::string process_;
  const std::size_t buffer_;
  EventLog& log_;
  Reporter& reporter_;

  Mutex mutex_;
  std::deque<Event> pending_ BULWARK_GUARDED_BY(mutex_);  // oldest first
  std::uint64_t dropped_ BULWARK_GUARDED_BY(mutex_) = 0;  // since events last reached Redis
  Wake wake_;  // events to publish

  std::string last_ = "0-0";  // the follower's: the last stream entry mirrored
  std::jthread publisher_;
  std::jthread follower_;
};

}  // namespace bulwark::detail::redis
