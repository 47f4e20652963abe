// Internal: EndFeed follows a namespace's ended streams (one per named
// queue, see scripts.hpp) on its own thread and hands each end's record, read back from Redis, to a
// listener, so a process learns of jobs that other processes finished: the
// redis backend's `on_finished_anywhere`.
//
// Ends written after start() are reported, each once, in each queue's
// stream order; a queue first named after start() is followed from about a
// second before the feed learnt of it (it asks every second). A
// listener that wants only some jobs says so with `wanted`, asked before
// the record is read. While Redis is unreachable the feed retries with
// backoff and goes on where it stopped; it misses only ends the stream
// dropped meanwhile (it keeps about the newest 10,000 entries, each the
// ends of one script call).
//
// Thread-safe: start() and stop() from the owner; the listener runs on the
// feed's thread. stop() blocks up to one read (the command timeout).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "bulwark/job.hpp"
#include "redis/connection.hpp"
#include "redis/keys.hpp"
#include "redis/parts.hpp"

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

  // Notes where the streams end now (a round trip per queue; if Redis
  // cannot be reached, the clock stands in) and starts following them.
  void start();
  void stop();

 private:
  void run(std::stop_token stop);
  // Learns of queues named since the last look (a round trip).
  void look_for_queues(Connection& c);
  // Reads one batch after last_ from the streams of the queues in `queues`
  // (all on `c`), waiting up to `block_ms` for one, and reports it.
  void read_batch(Connection& c, const std::vector<std::string>& queues, long long block_ms);

  const ConnectOptions redis_;
  Parts parts_;
  const Listener listener_;
  const Wanted wanted_;
  // Per queue ("" the default): the last stream entry seen; the feed
  // thread's after start().
  std::map<std::string, std::string> last_;
  std::jthread thread_;
};

}  // namespace bulwark::detail::redis
