// RedisJobStore: the JobStore of the shared queue. Records live in Redis
// (written by the scripts), so any process answers for any job: records,
// listings with a cursor that works across processes (the job's submit
// sequence in Redis), counts, cancel and requeue. Retention is the finish
// script's (keys.hpp).
//
// Thread-safe. Every call is one or a few Redis round trips; it throws
// RedisError when Redis cannot be reached.
#pragma once

#include "bulwark/runtime.hpp"
#include "redis/keys.hpp"
#include "redis/pool.hpp"
#include "redis/redis_broker.hpp"
#include "runtime/job_store.hpp"

namespace bulwark::detail::redis {

// A job's record from its hash (HGETALL's flat reply).
JobRecord record_from_hash(const Value& hgetall);

class RedisJobStore final : public JobStore {
 public:
  // `broker`: this process's, to stop a cancelled job that runs here at once.
  RedisJobStore(const BrokerOptions& options, RedisBroker* broker);

  bool insert(const std::shared_ptr<Task>&) override { return true; }  // admission wrote the record
  std::shared_ptr<Task> find(const JobId&) const override { return nullptr; }  // no live tasks: see cancel, requeue
  std::optional<JobRecord> record(const JobId& id) const override;
  void finished(const std::shared_ptr<Task>&) override {}  // the finish script keeps retention
  std::optional<StorePage> list(const StoreQuery& query) const override;
  std::map<JobState, std::size_t> count_by_state() const override;

  CancelResult cancel(const JobId& id);
  // Every process that sent a heartbeat; `self` is this one's id.
  std::vector<QueueProcess> processes(const std::string& self) const;
  RequeueResult requeue(const JobId& id);
  // Ready and waiting jobs of every queue a job named; throws RedisError.
  std::vector<QueueDepth> queue_depths() const;

 private:
  const BrokerOptions options_;
  const Keys keys_;
  RedisBroker* broker_;
  mutable Pool pool_;
};

}  // namespace bulwark::detail::redis
