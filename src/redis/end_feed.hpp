// Internal: EndFeed follows a namespace's ended stream (see scripts.hpp) on
// its own thread and hands each end's record, read back from Redis, to a
// listener, so a process learns of jobs that other processes finished: the
// redis backend's `on_finished_anywhere`.
//
// Ends written after start() are reported, each once, in stream order. A
// listener that wants only some jobs says so with `wanted`, asked before
// the record is read. While Redis is unreachable the feed retries with
// backoff and goes on where it stopped; it misses only ends the stream
// dropped meanwhile (it keeps about the newest 10,000 entries, each the
// ends of one script call).
//
// Thread-safe: start() and stop() from the owner; the listener runs on the
// feed's thread. stop() blocks up to one read (the command timeout).
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "bulwark/job.hpp"
#include "redis/connection.hpp"
#include "redis/keys.hpp"

namespace bulwark::detail::redis {

struct BrokerOptions;

class EndFeed {
 public:
  using Listener = std::function<void(const JobRecord&)>;
  using Wanted = std::function<bool(const JobId&)>;

  EndFeed(const BrokerOptions& options, Listener listener, Wanted wanted = {});
  ~EndFeed();
  EndFeed(const EndFeed&) = delete;
  EndFeed& operator=(const EndFeed&) = delete;

  // Notes where the stream ends now (one round trip; if Redis cannot be
  // reached, the clock stands in) and starts following it.
  void start();
  void stop();

 private:
  void run(std::stop_token stop);
  // Reads one batch after last_ (waiting a while for one) and reports it.
  void read_batch(Connection& c);

  const ConnectOptions redis_;
  const Keys keys_;
  const Listener listener_;
  const Wanted wanted_;
  std::string last_ = "0-0";  // the last stream entry seen; the feed thread's after start()
  std::jthread thread_;
};

}  // namespace bulwark::detail::redis
