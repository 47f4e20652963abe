// RedisScheduleStore: periodic jobs' shared state in Redis, so every
// process on a queue runs the same schedules and a restarted one knows what
// it missed.
//
//   {ns}:schedules:last   hash: schedule name -> the last time it ran (ms)
//   {ns}:schedules:added  hash: schedule name -> its JSON (added through the API)
//
// Thread-safe (a connection pool). Every call blocks for a round trip and
// throws RedisError when Redis cannot be reached.
#pragma once

#include "redis/keys.hpp"
#include "redis/pool.hpp"
#include "runtime/scheduler.hpp"

namespace bulwark::detail::redis {

class RedisScheduleStore final : public ScheduleStore {
 public:
  RedisScheduleStore(const ConnectOptions& redis, const std::string& ns) : keys_(ns), pool_(redis) {}

  std::optional<long long> last_run(const std::string& name) override;
  void set_last_run(const std::string& name, long long ms) override;
  std::map<std::string, std::string> added() override;
  void add(const std::string& name, const std::string& json) override;
  bool remove(const std::string& name) override;

 private:
  const Keys keys_;
  Pool pool_;
};

}  // namespace bulwark::detail::redis
