// Internal: the redis backend's transitions, each one Lua script, so each is
// atomic in Redis. Keys are those of keys.hpp; times are milliseconds since
// the epoch, passed in by the caller (scripts read no clock).
//
// A job's hash holds: id, type, payload (JSON text), priority, max_attempts,
// timeout_ms, seq, created_ms, attempts, state, owner (the process holding
// its lease, or that held it last), retry ("1" while it waits as a retry),
// cancel ("1" when a stop was asked for while it ran), started_ms,
// finished_ms, lost_ms (when a lease of it was last taken back), fence
// (how many leases it has had: every fetch and every take-over adds one), and
// outcome (JSON text the runner wrote: result, error, cleanup_errors,
// duration_ms).
//
// Counts: a queue's `counts` hash holds how many succeeded and cancelled jobs the done
// list holds; every script that adds to it or forgets from it keeps it.
//
// Ended stream: every terminal write appends to its queue's `ended` stream (capped near
// 10,000 entries) an entry whose fields are the ids ended by that call and
// whose values are their states, so any process can follow ends.
//
// Ready order: ZPOPMIN of score (9 - priority) * 2^45 + retry * 2^44 + seq,
// so a higher priority first, within one a fresh job before a retry, then
// submit order. Exact below 2^53: up to 2^44 jobs.
//
// Fencing: an ack, extend, progress or release names the owner and the
// fence it was leased under; if the lease was taken over meanwhile (even by
// the same process), the call changes nothing and says who holds it now.
//
// Thread-safe: these are constants.
#pragma once

#include "redis/connection.hpp"

namespace bulwark::detail::redis {

// Every script works on one named queue's keys (one hash tag, so one
// Cluster slot); what the namespace holds (the paused types, the process
// list, the list of queues) is passed in or read by the caller.

// KEYS: index, ready, scheduled, held, and seq (not on a cluster, where
//       only the default queue's call may name it: same slot).
// ARGV: capacity, job_prefix, waiting elsewhere (jobs waiting in the other
//       queues, as last counted), the queue's capacity (0: none), the
//       sequence number before the batch's (reserved by the caller when
//       there is no seq key; else ""), the queue ("" for the default), then
//       twenty-one per job: id, type, payload, priority, max_attempts,
//       timeout_ms, due_ms, now_ms, traceparent, tracestate, unique lock key
//       ("" for none), its window ms, the job's unique_key, its follow-up
//       spec as JSON ("" for none); in a flow, its parent's id, the
//       parent's part prefix ("{ns:q}:") and queue, how the parent takes
//       its failure (fail, ignore, remove), its children's ids one per
//       line ("" for none: a job with children waits as waiting_children,
//       its ids in <part>kids:<id>, taking no place; its last child's end
//       queues it, at its due_ms at the earliest), the flow's root's id and
//       part prefix.
// Admits a batch, each job as its own transition, into the ready or
// scheduled set: per job, its sequence number; -1 if the id is taken in
// this queue (an earlier job of the batch counts); -2 if `capacity` jobs
// are already waiting (this queue's ready + scheduled + held, and those
// elsewhere); -3 if the queue's own capacity is reached; {holder id, its
// state} if a job still known holds its unique lock (an earlier job of the
// batch counts). An admitted unique job takes the lock for its window. A
// batch with flow jobs is admitted whole or not at all: if one is refused,
// the others answer -4 and nothing is written.
extern const Script kEnqueue;

// KEYS: leased, held, ready.
// ARGV: max, now_ms, lease_ms, owner, job_prefix, "1" on a cluster, then
//       the job types paused now.
// Leases up to `max` ready jobs to `owner`; a job whose type is paused is
// set aside in `held` instead (still queued, its ready score kept).
// Returns an array with, per job: id, type, payload, priority,
// max_attempts, timeout_ms, attempts (this one's number), seq, retry ("1"
// or "0"), created_ms, traceparent, tracestate, the follow-up spec ("" for
// none), the fence (the job's lease count: it grows with every lease of
// the job, in every process), its queue ("" for the default), its flow
// parent ("" for none) and that parent's policy for it; a flow's parent
// adds a list of its children's entries (to_json(ChildOutcome), in order).
// A flow's child whose parent (in this part) has ended is not leased: it
// ends cancelled.
extern const Script kFetch;

// KEYS: leased, done, dead, index, ended, counts, scheduled.
// ARGV: owner, now_ms, keep_done, keep_dead, done_cutoff_ms, dead_cutoff_ms,
//       job_prefix, "1" on a cluster, then seven per attempt: id, fence, how
//       ("done" or "retry"), state (for done: succeeded, failed or
//       cancelled), outcome, due_ms (for retry), and for a flow's child its
//       entry in its parent's list ("*" for a flow's root, "" for other
//       jobs). A flow's members that end before its root are kept out of
//       the retention lists (in <root part>flow-kept:<root>) until the
//       root ends.
// Writes the ends of a batch of attempts, each as its own transition: done
// ends the job in `state`, enters it in its retention list and on the
// ended stream; retry schedules another attempt at `due_ms`. Then applies
// retention (entries finished before the cutoff, then the oldest beyond
// `keep`) to the lists that grew. Returns 1 per attempt written and, per
// attempt fenced (its lease was taken over meanwhile), the process that
// holds the job now ("" for none), in order. A flow's child that ended is
// counted by its parent in the same call (one Redis, or the parent in the
// same slot): the last one queues the parent, a failed one under policy
// fail fails it (kind child_failed), and so up the tree; on a cluster, a
// parent in another slot hears through the part's relay set (kChildEnded).
extern const Script kAck;

// KEYS: the parent's job key.
// ARGV: the parent's part prefix, its id, the child's id, state, policy,
//       entry, now_ms, "1" on a cluster.
// A relayed child's end, counted once however often it comes; 1 if it
// counted now.
extern const Script kChildEnded;

// KEYS: job, leased.
// ARGV: id, owner, fence, deadline_ms.
// Moves the lease deadline. 1, or, if the lease is not this one any more,
// the process that holds the job now ("" for none).
extern const Script kExtend;

// KEYS: scheduled, ready, held.
// ARGV: now_ms, max, job_prefix, then the job types paused now.
// Moves up to `max` jobs whose time has come to the ready set, and up to
// 1,000 held jobs whose type is not paused back to it with their scores.
// Returns how many it promoted.
extern const Script kPromote;

// KEYS: leased.
// ARGV: now_ms, max, owner, lease_deadline_ms, job_prefix.
// Takes over up to `max` leases past their deadline (their process died or
// stalled): each job, still running, is leased to `owner` under a new
// fence, so that owner ends the lost attempt through its own failure path
// (retry policy, events, counters) and the old holder's writes are
// refused. Returns one row per job: the fetch script's fields, then the
// process that held it, "0" (for the caller to fill with when that process
// was last seen, ms) and whether a cancel was asked for ("1"), then its
// queue ("" for the default), its flow parent and that parent's policy,
// and, for a flow's parent, its count of children.
extern const Script kRecover;

// KEYS: dead, done, index, counts.
// ARGV: job_prefix, keep_dead, keep_done, dead_cutoff_ms, done_cutoff_ms.
// Retention by age of the dead and done lists.
extern const Script kTrim;

// KEYS: events stream, events counter.
// ARGV: max_len, then one event JSON (without "id") per event.
// Numbers the events from the counter and appends each as entry "<n>-1"
// with field "e", capping the stream near max_len. Returns the last number.
extern const Script kPublishEvents;

// KEYS: job, done, index, ended, counts, ready, scheduled, held.
// ARGV: id, now_ms, keep, job_prefix, cutoff_ms, the cancel channel, "1"
//       on a cluster.
// Returns 1 (cancelled: it was waiting), 4 (cancelled: a flow's parent
// waiting for its children, whose tree the caller cancels next), 2 (stop
// requested: it runs; the id is published on the cancel channel), 3
// (already finished), 0 (unknown). A flow's child cancelled here is
// counted by its parent.
extern const Script kCancel;

// KEYS: job, dead, ready, scheduled, held.
// ARGV: id, capacity, waiting elsewhere.
// Puts a dead letter back with fresh attempts. 1; 0 if unknown; -1 if it
// is not failed; -2 if the queue is full.
extern const Script kRequeue;

// KEYS: job, leased, ready.
// ARGV: id, owner, fence.
// Gives back a job fetched but never started here (its process is
// stopping): the attempt is not counted, and it is ready for others at once.
// 1, or 0 if fenced.
extern const Script kRelease;

// KEYS: job.
// ARGV: owner, fence, progress JSON.
// Sets a running job's progress if `owner` still holds that attempt. 1, or
// 0 if fenced.
extern const Script kProgress;

// KEYS: leased, dead, counts, held, ready, scheduled, waiting.
// One queue's jobs by state: {queued (ready and held), scheduled, running,
// failed, succeeded, cancelled, waiting_children}.
extern const Script kCounts;

}  // namespace bulwark::detail::redis
