// RedisBackend: the Backend of a queue shared through Redis by many
// processes (queue.backend "redis"): RedisBroker (admission, the feeder
// that leases jobs to this process, the acker that writes ends),
// RedisJobStore (records, listings, counts), RedisScheduleStore (periodic
// jobs' last runs, API-added schedules) and, for on_finished_anywhere, an
// EndFeed. redis.* is read once, here.
//
// The constructor connects once: a login Redis refuses (a wrong password,
// an unknown user) throws ConfigError naming the URL (never the password)
// and Redis's answer.
//
// Thread-safe once attached. cancel, requeue, set_paused, processes and
// wait_idle block for Redis round trips (at most redis.command_timeout_ms
// each); cancel and requeue throw RedisError when Redis cannot be reached;
// set_paused answers PauseResult::unavailable then.
#pragma once

#include <memory>

#include "bulwark/config.hpp"
#include "bulwark/detail/thread_annotations.hpp"
#include "redis/end_feed.hpp"
#include "redis/event_feed.hpp"
#include "redis/redis_broker.hpp"
#include "redis/redis_job_store.hpp"
#include "redis/redis_schedules.hpp"
#include "redis/sentinel_watch.hpp"
#include "runtime/backend.hpp"

namespace bulwark::detail::redis {

// How to connect (redis.url, the login, TLS, timeouts), with a fresh
// Status; reads redis.password_file. Throws ConfigError naming the key
// that cannot be used.
ConnectOptions connect_options(const RedisOptions& redis);
// redis.* and the queue settings a Redis backend uses; throws as
// connect_options.
BrokerOptions broker_options(const RuntimeOptions& options);

class RedisBackend final : public Backend {
 public:
  // `owner`: this process's id in the queue (host:pid:tag).
  RedisBackend(const RuntimeOptions& options, std::string owner);
  ~RedisBackend() override;

  Broker& broker() noexcept override { return broker_; }
  JobStore& store() noexcept override { return store_; }
  ScheduleStore& schedules() noexcept override { return schedules_; }

  void start() override;
  void stop_fetching() noexcept override { broker_.stop_fetching(); }

  CancelResult cancel(const JobId& id) override;
  RequeueResult requeue(const JobId& id) override { return store_.requeue(id); }
  PauseResult set_paused(TypeEntry& type, bool paused) override;
  PauseResult set_queue_paused(const std::string& name, bool paused) override;
  std::vector<QueueProcess> processes() const override { return store_.processes(broker_.owner()); }
  bool wait_idle(std::chrono::milliseconds timeout) override;
  // The shared queue's depth, the same for every process.
  std::size_t waiting(const std::map<JobState, std::size_t>& by_state) const override;
  std::vector<QueueDepth> queue_depths() const override { return store_.queue_depths(); }
  bool reachable() const override { return broker_.reachable(); }
  std::string problem() const override { return options_.redis.status->problem(); }
  std::map<std::string, std::uint64_t> errors() const override { return options_.redis.status->counts(); }
  std::uint64_t results_dropped() const noexcept override { return broker_.results_dropped(); }
  void note_progress(const Task& task, const JobProgress& progress) override;
  void follow_ends(EndListener listener, Wanted wanted) override;

 private:
  void attached() override;
  std::shared_ptr<FlowLink> flow_of(const FetchedJob& f) const;
  static BrokerOptions logged_in(BrokerOptions options);
  std::shared_ptr<Task> build(const FetchedJob& fetched) const;

  const BrokerOptions options_;
  const int json_depth_;
  RedisBroker broker_;
  RedisJobStore store_;
  RedisScheduleStore schedules_;
  std::unique_ptr<EndFeed> end_feed_;  // set by follow_ends(), before start()
  const std::size_t events_buffer_;
  std::unique_ptr<EventFeed> event_feed_;  // set by attached(); null when events.buffer is 0
  std::unique_ptr<SentinelWatch> sentinel_watch_;  // with redis.sentinel
  // A pause or resume here against the heartbeat's view of Redis.
  Mutex pause_mutex_;
};

}  // namespace bulwark::detail::redis
