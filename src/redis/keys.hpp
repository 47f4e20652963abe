// Internal: the redis backend's keys. A named queue's keys share one hash
// tag: "{ns}" for the queue "default", "{ns:queue}" for any other. So on a
// Redis Cluster each queue lives in one slot (its scripts stay valid there)
// and different queues may live on different shards. The namespace's own
// keys (processes, pauses, schedules, events, the submit sequence, the list
// of queues) share the tag "{ns}" with the default queue.
//
// One queue's keys (`tag`: "{ns}" or "{ns:queue}"):
//   tag:job:<id>      hash: the job (spec fields, queue, state, attempts,
//                     owner, outcome)
//   tag:ready         zset: jobs ready to run; score orders priority, then
//                     fresh before retry, then submit order (see scripts.hpp)
//   tag:scheduled     zset: jobs waiting for a time (delay, backoff), by due ms
//   tag:waiting       zset: flows' parents waiting for their children, by
//                     submit sequence (counted as waiting_children)
//   tag:held          zset: queued jobs of paused types, set aside by the
//                     fetch script with their ready score; they go back to
//                     ready once their type is not paused
//   tag:leased        zset: jobs handed to a process, by lease deadline ms
//   tag:index         zset: the queue's jobs by submit sequence (listings)
//   tag:done          zset: succeeded and cancelled jobs by finish ms (retention)
//   tag:dead          zset: failed jobs (dead letters) by finish ms (retention)
//   tag:counts        hash: succeeded and cancelled jobs in done, by state
//   tag:ended         stream: every end, an entry per script call with the
//                     ids as fields and their states as values (near 10,000 entries)
//   tag:unique:<n>:<type>:<key>  string: the id of the unique job holding
//                     the key (n: the type's length), expiring with its window
//
// The namespace's keys:
//   {ns}:seq          counter: the submit sequence, shared by every queue
//   {ns}:queues       set: every queue other than "default" a job named
//   {ns}:queues:paused  hash: paused named queues -> when paused (ms)
//   {ns}:paused       hash: paused job types -> when paused (ms)
//   {ns}:cancel       pub/sub channel: ids of running jobs asked to stop
//   {ns}:schedules:last   hash: periodic job name -> the last time it ran (ms)
//   {ns}:schedules:added  hash: periodic job name -> its JSON (added through the API)
//   {ns}:events       stream: the queue's events (bulwark/events.hpp), entry
//                     id "<n>-1" for event n, field "e" its JSON; capped near
//                     events.buffer; written only while someone reads
//   {ns}:events:seq   counter: the events' numbers
//   {ns}:events:read  string, expiring: some process's events are being read
//   {ns}:processes    zset: processes by last heartbeat ms
//   {ns}:process:<id> hash: one process (host, pid, workers, queues, started_ms, health)
//
// A plain value; thread-safe to read.
#pragma once

#include <string>

namespace bulwark::detail::redis {

struct Keys {
  // The keys of namespace `ns` and of its queue `queue` ("" or "default":
  // the default queue).
  explicit Keys(const std::string& ns, const std::string& named = {})
      : queue(named == "default" ? std::string() : named),
        tag(this->queue.empty() ? "{" + ns + "}" : "{" + ns + ":" + this->queue + "}"),
        prefix(tag + ":"),
        ns_prefix("{" + ns + "}:"),
        job_prefix(prefix + "job:"),
        ready(prefix + "ready"),
        scheduled(prefix + "scheduled"),
        leased(prefix + "leased"),
        index(prefix + "index"),
        done(prefix + "done"),
        dead(prefix + "dead"),
        counts(prefix + "counts"),
        ended(prefix + "ended"),
        held(prefix + "held"),
        waiting(prefix + "waiting"),
        seq(ns_prefix + "seq"),
        cancel(ns_prefix + "cancel"),
        processes(ns_prefix + "processes"),
        paused(ns_prefix + "paused"),
        schedules_last(ns_prefix + "schedules:last"),
        schedules_added(ns_prefix + "schedules:added"),
        events(ns_prefix + "events"),
        events_seq(ns_prefix + "events:seq"),
        events_read(ns_prefix + "events:read"),
        queues(ns_prefix + "queues"),
        queues_paused(ns_prefix + "queues:paused") {}

  std::string job(const std::string& id) const { return job_prefix + id; }
  std::string process(const std::string& id) const { return ns_prefix + "process:" + id; }
  std::string unique(const std::string& type, const std::string& key) const {
    std::string k = prefix + "unique:" + std::to_string(type.size());
    k.append(":").append(type).append(":").append(key);
    return k;
  }
  // The default queue's keys hold the namespace's too (same hash tag).
  bool is_default() const noexcept { return queue.empty(); }

  std::string queue;       // "" for the default queue
  std::string tag;         // "{ns}" or "{ns:queue}"
  std::string prefix;      // tag + ":"
  std::string ns_prefix;   // "{ns}:"
  std::string job_prefix;
  // The queue's.
  std::string ready, scheduled, leased, index, done, dead, counts, ended, held, waiting;
  // The namespace's.
  std::string seq, cancel, processes, paused, schedules_last, schedules_added;
  std::string events, events_seq, events_read;
  std::string queues, queues_paused;
};

}  // namespace bulwark::detail::redis
