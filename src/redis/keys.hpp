// Internal: the redis backend's keys. Every key starts with "{namespace}:",
// a hash tag, so one namespace lives in one Redis Cluster slot and the
// multi-key scripts stay valid there.
//
//   {ns}:job:<id>     hash: the job (spec fields, state, attempts, owner, outcome)
//   {ns}:ready        zset: jobs of the queue "default" ready to run; score
//                     orders priority, then fresh before retry, then submit
//                     order (see scripts.hpp)
//   {ns}:scheduled    zset: jobs of "default" waiting for a time (delay,
//                     backoff), by due ms
//   {ns}:q:<queue>:ready, {ns}:q:<queue>:scheduled  the same for each other
//                     named queue
//   {ns}:queues       set: every queue other than "default" a job named
//   {ns}:queues:paused  hash: paused named queues -> when paused (ms)
//   {ns}:leased       zset: jobs handed to a process, by lease deadline ms
//   {ns}:index        zset: every known job by submit sequence (listings)
//   {ns}:seq          counter: the submit sequence
//   {ns}:done         zset: succeeded and cancelled jobs by finish ms (retention)
//   {ns}:dead         zset: failed jobs (dead letters) by finish ms (retention)
//   {ns}:counts       hash: succeeded and cancelled jobs in done, by state
//   {ns}:ended        stream: every end, an entry per script call with the
//                     ids as fields and their states as values (near 10,000 entries)
//   {ns}:cancel       pub/sub channel: ids of running jobs asked to stop
//   {ns}:paused       hash: paused job types -> when paused (ms)
//   {ns}:held         zset: queued jobs of paused types, set aside by the
//                     fetch script with their ready score; resume moves
//                     them back to ready
//   {ns}:unique:<n>:<type>:<key>  string: the id of the unique job holding
//                     the key (n: the type's length), expiring with its window
//   {ns}:schedules:last   hash: periodic job name -> the last time it ran (ms)
//   {ns}:schedules:added  hash: periodic job name -> its JSON (added through the API)
//   {ns}:events       stream: the queue's events (bulwark/events.hpp), entry
//                     id "<n>-1" for event n, field "e" its JSON; capped near
//                     events.buffer; written only while someone reads
//   {ns}:events:seq   counter: the events' numbers
//   {ns}:events:read  string, expiring: some process's events are being read
//   {ns}:processes    zset: processes by last heartbeat ms
//   {ns}:process:<id> hash: one process (host, pid, workers, started_ms, version)
//
// A plain value; thread-safe to read.
#pragma once

#include <string>

namespace bulwark::detail::redis {

struct Keys {
  explicit Keys(const std::string& ns)
      : prefix("{" + ns + "}:"),
        job_prefix(prefix + "job:"),
        ready(prefix + "ready"),
        scheduled(prefix + "scheduled"),
        leased(prefix + "leased"),
        index(prefix + "index"),
        seq(prefix + "seq"),
        done(prefix + "done"),
        dead(prefix + "dead"),
        counts(prefix + "counts"),
        ended(prefix + "ended"),
        cancel(prefix + "cancel"),
        processes(prefix + "processes"),
        paused(prefix + "paused"),
        held(prefix + "held"),
        schedules_last(prefix + "schedules:last"),
        schedules_added(prefix + "schedules:added"),
        events(prefix + "events"),
        events_seq(prefix + "events:seq"),
        events_read(prefix + "events:read"),
        queues(prefix + "queues"),
        queues_paused(prefix + "queues:paused") {}

  std::string job(const std::string& id) const { return job_prefix + id; }
  std::string process(const std::string& id) const { return prefix + "process:" + id; }
  std::string unique(const std::string& type, const std::string& key) const {
    std::string k = prefix + "unique:" + std::to_string(type.size());
    k.append(":").append(type).append(":").append(key);
    return k;
  }

  std::string prefix;
  std::string job_prefix;
  std::string ready, scheduled, leased, index, seq, done, dead, counts, ended, cancel, processes, paused, held, schedules_last, schedules_added;
  std::string events, events_seq, events_read;
  std::string queues, queues_paused;
};

}  // namespace bulwark::detail::redis
