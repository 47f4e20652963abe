// RedisJobStore: the JobStore of the shared queue. Records live in Redis
// (written by the scripts), so any process answers for any job: records,
// listings with a cursor that works across processes (the job's submit
// sequence in Redis, shared by every named queue), counts, cancel and
// requeue. Each named queue has its part of Redis (parts.hpp): a job is
// looked for in the default queue first, then in the others; listings and
// counts cover every queue a job named. Retention is the finish script's
// (keys.hpp).
//
// Thread-safe. Every call is one or a few Redis round trips; it throws
// RedisError when Redis cannot be reached.
#pragma once

#include "bulwark/runtime.hpp"
#include "redis/keys.hpp"
#include "redis/parts.hpp"
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
  std::optional<std::pair<std::vector<JobRecord>, std::size_t>> children_of(const JobId& id, std::size_t offset,
                                                                           std::size_t limit) const override;

  CancelResult cancel(const JobId& id);
  // Every process that sent a heartbeat; `self` is this one's id.
  std::vector<QueueProcess> processes(const std::string& self) const;
  RequeueResult requeue(const JobId& id);
  // Ready and waiting jobs of every queue a job named; throws RedisError.
  std::vector<QueueDepth> queue_depths() const;

 private:
  // The first queue ("" the default first) whose part answers `command`
  // (EXISTS, HGETALL) on job `id` with something, and that answer.
  std::optional<std::pair<std::string, Value>> probe(const JobId& id, const char* command) const;
  // The queue whose part holds job `id` ("" the default); nullopt if none.
  std::optional<std::string> find_queue(const JobId& id) const;
  // Jobs waiting (ready, scheduled, held) in every queue but `queue`.
  long long waiting_elsewhere(const std::string& queue) const;
  // Up to `want` records of one queue matching `query`, newest first, with
  // a submit sequence below `before` (0: any).
  std::vector<JobRecord> newest(const Keys& keys, const StoreQuery& query, long long before, std::size_t want) const;

  const BrokerOptions options_;
  mutable Parts parts_;
  const Keys& keys_;  // the default queue's, with the namespace's
  RedisBroker* broker_;
};

}  // namespace bulwark::detail::redis
