#include "redis/redis_broker.hpp"

#include <set>

#include <thread>

#include <nlohmann/json.hpp>

#include "redis/scripts.hpp"
#include "runtime/clock.hpp"
#include "support/text.hpp"
#include "core/task_access.hpp"

namespace bulwark::detail::redis {

namespace {

std::string state_name(JobState s) { return std::string(to_string(s)); }

// What a finished or failed attempt leaves on the job for every process to
// read: result, last error, cleanup errors, duration. Read straight from the
// record (a snapshot would copy the payload too). A failure's frames are
// symbolized here, on the worker: raw addresses mean nothing elsewhere.
std::string outcome_of(const Task& task) {
  struct Parts {
    double duration_ms = 0;
    nlohmann::json result;
    std::optional<Failure> error;
    std::vector<Failure> cleanup_errors;
    std::optional<RawTrace> stuck_trace;
    std::string span_id;
  };
  // Copied under the lock; symbolized after, without it.
  const Parts p = task.with_record([](const TaskRecord& r) {
    return Parts{r.duration_ms, r.result, r.error ? std::optional<Failure>(*r.error) : std::nullopt,
                 r.cleanup_errors, r.stuck_trace ? std::optional<RawTrace>(*r.stuck_trace) : std::nullopt, r.span_id};
  });
  nlohmann::ordered_json j = {{"duration_ms", p.duration_ms}};
  if (!p.span_id.empty()) j["span_id"] = p.span_id;
  if (!p.result.is_null()) j["result"] = p.result;
  if (p.error) j["error"] = to_json(*p.error, true);
  if (!p.cleanup_errors.empty()) {
    nlohmann::ordered_json errors = nlohmann::ordered_json::array();
    for (const Failure& f : p.cleanup_errors) errors.push_back(to_json(f, true));
    j["cleanup_errors"] = std::move(errors);
  }
  if (p.stuck_trace) j["stuck_trace"] = to_json(*p.stuck_trace, true);
  return dump_line(j);
}

// `queue_at`: where the row has the job's queue (the fetch and recover
// scripts put it in different places).
FetchedJob parse_fetched(const Value& v, std::size_t queue_at) {
  const auto text = [&](std::size_t i) -> const std::string& { return v.elements.at(i).str; };
  FetchedJob f;
  f.id = text(0);
  f.type = text(1);
  f.payload = text(2);
  f.priority = static_cast<int>(v.elements.at(3).as_integer());
  f.max_attempts = static_cast<int>(v.elements.at(4).as_integer());
  f.timeout_ms = v.elements.at(5).as_integer();
  f.attempt = static_cast<int>(v.elements.at(6).as_integer());
  f.seq = v.elements.at(7).as_integer();
  f.retry = text(8) == "1";
  f.created_ms = v.elements.at(9).as_integer();
  if (v.elements.size() > 11) {
    f.traceparent = text(10);
    f.tracestate = text(11);
  }
  if (v.elements.size() > 12) f.then = text(12);
  if (v.elements.size() > 13) f.fence = static_cast<std::uint64_t>(v.elements.at(13).as_integer());
  if (v.elements.size() > queue_at) f.queue = text(queue_at);
  return f;
}

std::string seen_text(long long ms) {
  if (ms <= 0) return "never seen";
  const auto ago = epoch_ms(Clock::now()) - ms;
  return "last seen " + std::to_string(std::max(0LL, ago)) + " ms ago";
}

}  // namespace

long long epoch_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to_wall(t).time_since_epoch()).count();
}

std::string retention_cutoff(std::chrono::milliseconds ttl, long long now_ms) {
  return ttl.count() > 0 ? std::to_string(now_ms - ttl.count()) : "0";
}

RedisBroker::RedisBroker(BrokerOptions options, std::string owner, TaskFactory factory)
    : options_(std::move(options)),
      keys_(options_.ns),
      owner_(std::move(owner)),
      started_ms_(epoch_ms(Clock::now())),
      factory_(std::move(factory)),
      local_(options_.capacity, options_.max_retries, options_.retry_priority_offset),
      pool_(options_.redis) {}

void RedisBroker::start() {
  acker_ = std::jthread([this](std::stop_token stop) { send_acks(std::move(stop)); });
  feeder_ = std::jthread([this](std::stop_token stop) { feed(std::move(stop)); });
}

RedisBroker::~RedisBroker() { close(); }

// The enqueue script's sixteen arguments for one job.
void RedisBroker::enqueue_args(std::vector<std::string>& args, const TaskSpec& s, Clock::time_point due,
                               const std::string& now_ms) const {
  args.insert(args.end(), {s.id, s.type, dump_line(s.payload), std::to_string(s.priority),
                           std::to_string(s.max_attempts), std::to_string(s.timeout.count()),
                           std::to_string(epoch_ms(due)), now_ms, s.trace ? s.trace->traceparent() : std::string(),
                           s.trace ? s.trace->state : std::string()});
  if (s.unique) {
    args.insert(args.end(), {keys_.unique(s.type, s.unique->key), std::to_string(s.unique->window.count()), s.unique->key});
  } else {
    args.insert(args.end(), 3, std::string());
  }
  args.push_back(s.then ? dump_line(*s.then) : std::string());
  args.push_back(s.queue);
  std::size_t capacity = 0;  // its own, if this process lists it with one
  for (const BrokerOptions::Queue& q : options_.queues) {
    if (q.name == (s.queue.empty() ? kDefaultQueue : std::string_view(s.queue))) capacity = q.capacity;
  }
  args.push_back(std::to_string(capacity));
}

// Sends one enqueue call; its answer per job, or nullopt with why Redis
// refused them all (unavailable, or backend_full when it is out of memory).
std::optional<std::vector<RedisBroker::EnqueueAnswer>> RedisBroker::send_enqueue(std::vector<std::string>& args,
                                                                                 Admitted& refused) {
  std::vector<EnqueueAnswer> answers;
  bool written = false;  // on the master: a failed WAIT leaves it there
  try {
    const Value v = pool_.with([&](Connection& c) {
      Value answer = c.eval(kEnqueue, {keys_.index, keys_.seq, keys_.held, keys_.queues}, args);
      written = true;
      replicated(c, "submit");
      return answer;
    });
    answers.reserve(v.elements.size());
    for (const Value& e : v.elements) answers.push_back(answer_of(e));
  } catch (const RedisError& e) {
    if (e.kind() == RedisError::Kind::other) throw;
    refused = e.kind() == RedisError::Kind::full ? Admitted::backend_full
              : written                           ? Admitted::unreplicated
                                                  : Admitted::unavailable;
    return std::nullopt;
  }
  return answers;
}

RedisBroker::EnqueueAnswer RedisBroker::answer_of(const Value& e) {
  EnqueueAnswer a;
  if (e.elements.size() == 2) {  // {holder, state}: a unique job holds the key
    a.holder = e.elements[0].str;
    a.holder_state = parse_job_state(e.elements[1].str).value_or(JobState::queued);
  } else {
    a.seq = e.as_integer();
  }
  return a;
}

Admitted RedisBroker::admitted(const EnqueueAnswer& answer, const std::function<bool()>& record, Admission* out) {
  if (!answer.holder.empty()) {
    if (out != nullptr) {
      out->existing = answer.holder;
      out->existing_state = answer.holder_state;
    }
    return Admitted::unique;
  }
  if (answer.seq == -1) return Admitted::duplicate;
  if (answer.seq == -2) return Admitted::full;
  if (answer.seq == -3) return Admitted::queue_full;
  return record() ? Admitted::accepted : Admitted::duplicate;
}

Admitted RedisBroker::admit(const TaskPtr& task, Clock::time_point due, Clock::time_point now,
                            const std::function<bool()>& record) {
  if (!task->spec().stored) return Broker::admit(task, due, now, record);  // a posted callable: this process only
  std::vector<std::string> args = {std::to_string(options_.capacity), keys_.job_prefix, keys_.prefix};
  enqueue_args(args, task->spec(), due, std::to_string(epoch_ms(now)));
  Admitted refused = Admitted::unavailable;
  const auto answers = send_enqueue(args, refused);
  if (!answers) return refused;
  if (answers->size() != 1) return Admitted::unavailable;
  return admitted(answers->front(), record, nullptr);
}

void RedisBroker::admit_many(std::vector<Admission>& batch, Clock::time_point now) {
  constexpr std::size_t kChunk = 1000;  // jobs per script call: Redis runs one script at a time
  const std::string now_ms = std::to_string(epoch_ms(now));
  std::vector<Admission*> shared;
  for (Admission& a : batch) {
    if (a.task->spec().stored) {
      shared.push_back(&a);
    } else {
      a.result = Broker::admit(a.task, a.due, now, a.record);
    }
  }
  for (std::size_t from = 0; from < shared.size(); from += kChunk) {
    const std::size_t to = std::min(shared.size(), from + kChunk);
    std::vector<std::string> args = {std::to_string(options_.capacity), keys_.job_prefix, keys_.prefix};
    args.reserve(2 + 14 * (to - from));
    for (std::size_t i = from; i < to; ++i) enqueue_args(args, shared[i]->task->spec(), shared[i]->due, now_ms);
    Admitted refused = Admitted::unavailable;
    const auto answers = send_enqueue(args, refused);
    for (std::size_t i = from; i < to; ++i) {
      shared[i]->result = !answers                       ? refused
                          : answers->size() == to - from ? admitted((*answers)[i - from], shared[i]->record, shared[i])
                                                         : Admitted::unavailable;
    }
  }
}

void RedisBroker::admit_soon(TaskPtr task, Clock::time_point due, Clock::time_point now, std::function<bool()> record,
                             std::function<void(Admitted)> answer) {
  if (!task->spec().stored) {
    Broker::admit_soon(std::move(task), due, now, std::move(record), std::move(answer));
    return;
  }
  SoonAdmission a;
  enqueue_args(a.args, task->spec(), due, std::to_string(epoch_ms(now)));
  a.record = std::move(record);
  a.answer = std::move(answer);
  {
    MutexLock lock(mutex_);
    soon_.push_back(std::move(a));
  }
  ack_wake_.signal();
}

void RedisBroker::flush_soon(Connection& c, std::size_t n) {
  if (n == 0) return;
  std::vector<std::string> args = {std::to_string(options_.capacity), keys_.job_prefix, keys_.prefix};
  {
    MutexLock lock(mutex_);
    for (std::size_t i = 0; i < n; ++i) args.insert(args.end(), soon_[i].args.begin(), soon_[i].args.end());
  }
  Value v;
  std::string refused;  // Redis's error, when it refused the call itself
  try {
    v = c.eval(kEnqueue, {keys_.index, keys_.seq, keys_.held, keys_.queues}, args);
  } catch (const RedisError& e) {
    if (e.unavailable()) throw;  // they stay, and go when Redis is back
    // An error reply (Redis full, say) would come again: answer them
    // refused rather than hold up the ends behind them.
    refused = e.what();
  }
  std::vector<SoonAdmission> sent;
  {
    MutexLock lock(mutex_);
    sent.assign(std::make_move_iterator(soon_.begin()), std::make_move_iterator(soon_.begin() + static_cast<std::ptrdiff_t>(n)));
    soon_.erase(soon_.begin(), soon_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  if (!refused.empty()) warn(std::to_string(sent.size()) + " follow-up jobs not admitted: " + refused);
  for (std::size_t i = 0; i < sent.size(); ++i) {
    if (i >= v.elements.size()) {  // refused, or not expected: the script answers every job
      sent[i].answer(Admitted::unavailable);
      continue;
    }
    sent[i].answer(admitted(answer_of(v.elements[i]), sent[i].record, nullptr));
  }
}

void RedisBroker::ack(Lease lease, Ack how, Clock::time_point due) {
  const TaskPtr task = lease.task;
  if (!task->spec().stored || how == Ack::defer) {
    // A posted callable, or a job that may not start yet here (its breaker
    // is open): it waits in this process, its lease kept alive meanwhile.
    local_.ack(std::move(lease), how, due);
    return;
  }
  PendingAck a;
  a.id = task->id();
  a.how = how;
  a.state = state_name(task->state());
  a.outcome = outcome_of(*task);
  a.due_ms = epoch_ms(due);
  std::size_t held = 0;
  bool first = false;  // nothing was waiting: the acker may be asleep
  std::optional<std::string> taken_by;  // set: the lease was taken over; the result is dropped
  {
    MutexLock lock(mutex_);
    if (auto it = held_.find(a.id); it != held_.end()) {
      a.attempt = it->second.attempt;
      a.fence = it->second.fence;
      held_.erase(it);
      held = held_.size();
      first = pending_.empty();
      pending_.push_back(std::move(a));  // written by the acker, in batches; kept until Redis took it
    } else if (auto lost = lost_.find(a.id); lost != lost_.end()) {
      taken_by = std::move(lost->second.second);
      lost_.erase(lost);
    } else {
      return;  // not ours any more (given back at shutdown)
    }
  }
  lease = Lease{};  // gives back the local retry slot, if any
  if (taken_by) {
    drop_result(task->id(), task->with_record([](const TaskRecord& r) { return r.attempts; }), *taken_by);
    return;
  }
  // While ends wait, the acker is writing them (it stops only on an empty
  // list) or backing off from an outage: only the first needs a wake-up.
  if (first) ack_wake_.signal();
  if (held <= low_water()) feed_wake_.signal();  // room for a batch: fetch again now, not after the poll
}

void RedisBroker::set_aside(std::ptrdiff_t delta) noexcept {
  aside_.fetch_add(delta, std::memory_order_acq_rel);
  if (delta > 0) feed_wake_.signal();  // room for other work: fetch now
}

std::size_t RedisBroker::low_water() const noexcept { return (options_.workers + options_.prefetch) / 2; }

std::size_t RedisBroker::held() const {
  MutexLock lock(mutex_);
  return held_.size();
}

std::size_t RedisBroker::pending_acks() const {
  MutexLock lock(mutex_);
  return pending_.size() + soon_.size();
}

// Takes jobs from Redis until this process holds workers + prefetch.
std::size_t RedisBroker::refill(Connection& c) {
  if (options_.workers == 0 || !fetching_.load(std::memory_order_acquire)) return 0;
  // Leases set aside at a concurrency limit do not count against the
  // budget, up to 8 times it: beyond that a queue full of one limited type
  // waits in Redis rather than in this process.
  const std::size_t budget = options_.workers + options_.prefetch;
  const auto aside = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, aside_.load(std::memory_order_acquire)));
  const std::size_t target = budget + std::min(aside, 8 * budget);
  const std::size_t have = held();
  if (have >= target) return 0;
  const auto now = Clock::now();
  std::vector<std::string> args = {std::to_string(target - have), std::to_string(epoch_ms(now)),
                                   std::to_string(options_.lease.count()), owner_, keys_.job_prefix, keys_.prefix,
                                   options_.strict ? "1" : "0", std::to_string(1 + seed_() % 2147483646)};
  for (const BrokerOptions::Queue& q : options_.queues) args.insert(args.end(), {q.name, std::to_string(q.weight)});
  const Value got = c.eval(kFetch, {keys_.leased, keys_.paused, keys_.held}, args);
  for (const Value& row : got.elements) {
    const FetchedJob job = parse_fetched(row, 14);
    TaskPtr task = factory_(job);
    // Not a type this process runs, or no room here: give it back at once.
    if (!task || (!job.retry && !local_.try_reserve(*task))) {
      c.eval(kRelease, {keys_.job(job.id), keys_.leased}, {job.id, owner_, std::to_string(job.fence), keys_.prefix});
      continue;
    }
    {
      MutexLock lock(mutex_);
      held_[job.id] = Held{job.attempt, job.fence, task};
    }
    TaskAccess::set_ready_at(*task, now);
    if (job.retry) {
      TaskAccess::set_state(*task, JobState::scheduled);
      local_.push_retry(std::move(task), now);  // admitted locally under max_concurrent_retries
    } else {
      TaskAccess::set_state(*task, JobState::queued);
      local_.enqueue(std::move(task), now, now);  // into the place reserved above
    }
  }
  return got.elements.size();
}

void RedisBroker::extend_all(Connection& c) {
  std::vector<std::pair<std::string, std::uint64_t>> ids;
  {
    MutexLock lock(mutex_);
    for (const auto& [id, h] : held_) ids.emplace_back(id, h.fence);
  }
  const std::string deadline = std::to_string(epoch_ms(Clock::now() + options_.lease));
  for (const auto& [id, fence] : ids) {
    const Value v = c.eval(kExtend, {keys_.job(id), keys_.leased}, {id, owner_, std::to_string(fence), deadline});
    if (v.type != Value::Type::integer) lost_here(id, fence, v.str);
  }
}

void RedisBroker::lost_here(const std::string& id, std::uint64_t fence, const std::string& holder) {
  TaskPtr task;
  int attempt = 0;
  {
    MutexLock lock(mutex_);
    auto it = held_.find(id);
    if (it == held_.end() || it->second.fence != fence) return;  // ended meanwhile
    task = std::move(it->second.task);
    attempt = it->second.attempt;
    held_.erase(it);
    lost_[id] = {fence, holder};
  }
  TaskAccess::with_record(*task, [&](TaskRecord& r) {
    r.lease_lost = true;  // JobContext::lease_valid()
    TaskAccess::set_stop_reason(*task, FailureKind::lease_lost);
    r.stop.request_stop();
  });
  warn("lease of job " + id + " (" + task->type() + ", attempt " + std::to_string(attempt) +
       ") lost: taken over by process " + (holder.empty() ? std::string("none") : holder) +
       "; its stop token is set and its result will be dropped");
}

void RedisBroker::drop_result(const std::string& id, int attempt, const std::string& holder) {
  results_dropped_.fetch_add(1, std::memory_order_relaxed);
  warn("result of attempt " + std::to_string(attempt) + " of job " + id + " dropped: lease taken over by process " +
       (holder.empty() ? std::string("none") : holder));
}

void RedisBroker::replicated(Connection& c, const char* what) {
  const unsigned want = options_.min_replicas_ack;
  if (want == 0) return;
  const long long got =
      c.command({"WAIT", std::to_string(want), std::to_string(options_.replica_ack_timeout.count())}).as_integer();
  if (got >= static_cast<long long>(want)) {
    status().up("replicas");
    return;
  }
  RedisError e(std::string("the ") + what + " reached the master, but " + std::to_string(got) + " of " +
                   std::to_string(want) + " replicas acknowledged it within " +
                   std::to_string(options_.replica_ack_timeout.count()) + " ms (redis.min_replicas_ack)",
               RedisError::Kind::unavailable);
  if (options_.redis.status) options_.redis.status->count(e);
  throw e;
}

void RedisBroker::warn(std::string text) const {
  if (reporter_ != nullptr) reporter_->log(LogLevel::warn, std::move(text));
}

// Writes up to kAckBatch of the oldest pending ends with one script call
// and takes them off the list. Returns how many; throws RedisError (they
// stay). Only one thread flushes at a time (the acker, or drain() after it).
std::size_t RedisBroker::flush_batch(Connection& c) {
  constexpr std::size_t kAckBatch = 256;
  const long long now = epoch_ms(Clock::now());
  std::vector<std::string> args = {owner_,
                                   std::to_string(now),
                                   std::to_string(options_.keep_finished),
                                   std::to_string(options_.keep_dead),
                                   retention_cutoff(options_.finished_ttl, now),
                                   retention_cutoff(options_.dead_ttl, now),
                                   keys_.job_prefix,
                                   keys_.prefix};
  std::size_t n = 0;
  std::size_t soon = 0;
  {
    MutexLock lock(mutex_);
    n = std::min(pending_.size(), kAckBatch);
    // Taken with the ends, under one lock: every admission queued before
    // one of these ends is written before it.
    soon = std::min<std::size_t>(soon_.size(), 1000);
    if (soon < soon_.size()) n = 0;  // more admissions than one call takes: they go first
    if (n == 0 && soon == 0) return 0;
    args.reserve(args.size() + 6 * n);
    for (std::size_t i = 0; i < n; ++i) {
      const PendingAck& a = pending_[i];
      args.insert(args.end(), {a.id, std::to_string(a.fence), a.how == Ack::retry ? "retry" : "done", a.state,
                               a.outcome, std::to_string(a.due_ms)});
    }
  }
  flush_soon(c, soon);
  if (n == 0) return soon;
  // Progress first: every end taken above came after its job's last
  // progress note, which the end's fence would refuse once written.
  write_progress(c);
  // A holder's name in the reply instead of 1: the lease was taken over
  // meanwhile and the job runs elsewhere; the outcome here does not count.
  const Value v =
      c.eval(kAck, {keys_.leased, keys_.done, keys_.dead, keys_.index, keys_.ended, keys_.counts}, args);
  try {
    replicated(c, "end");
  } catch (const RedisError& e) {
    // Written on the master, not yet on enough replicas: nothing to send
    // again. Said once per change, and /readyz says it meanwhile.
    status().down("replicas", e);
  }
  std::vector<std::pair<std::string, int>> dropped;
  std::vector<std::string> holders;
  {
    MutexLock lock(mutex_);
    for (std::size_t i = 0; i < n && i < v.elements.size(); ++i) {
      if (v.elements[i].type == Value::Type::integer) continue;
      dropped.emplace_back(pending_[i].id, pending_[i].attempt);
      holders.push_back(v.elements[i].str);
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  for (std::size_t i = 0; i < dropped.size(); ++i) drop_result(dropped[i].first, dropped[i].second, holders[i]);
  return n;
}

void RedisBroker::flush_pending(Connection& c) {
  while (flush_batch(c) > 0) {
  }
}

// The acker thread: writes ends as they come, a batch per round trip while
// they come faster than Redis answers; backs off while Redis is away.
void RedisBroker::send_acks(std::stop_token stop) {
  Link link(options_.redis, "acker");
  while (!stop.stop_requested()) {
    ack_wake_.wait(stop, std::chrono::milliseconds(100));
    if (stop.stop_requested()) break;  // drain() writes the rest
    try {
      flush_pending(link.get());
      write_progress(link.get());
      link.ok();
    } catch (const RedisError& e) {
      link.failed(e);
    }
  }
}

void RedisBroker::note_progress(const std::string& id, const JobProgress& p) {
  const std::string text = dump_line(nlohmann::json{{"fraction", p.fraction}, {"note", p.note}, {"at_ms", std::chrono::duration_cast<std::chrono::milliseconds>(p.at.time_since_epoch()).count()}});
  {
    MutexLock lock(mutex_);
    auto it = held_.find(id);
    if (it == held_.end()) return;  // not leased here
    progress_[id] = ProgressNote{it->second.fence, text};
  }
  ack_wake_.signal();
}

// The latest progress of each job, fenced like an ack: only while this
// process still holds the attempt that reported it.
void RedisBroker::write_progress(Connection& c) {
  std::map<std::string, ProgressNote> notes;
  {
    MutexLock lock(mutex_);
    notes.swap(progress_);
  }
  for (const auto& [id, note] : notes) {
    c.eval(kProgress, {keys_.job(id)}, {owner_, std::to_string(note.fence), note.json});
  }
}

void RedisBroker::stop_local(const std::string& id) {
  TaskPtr task;
  {
    MutexLock lock(mutex_);
    auto it = held_.find(id);
    if (it == held_.end()) return;
    task = it->second.task;
  }
  TaskAccess::with_record(*task, [&](TaskRecord& r) {
    if (r.cancel_requested) return;
    r.cancel_requested = true;  // a job still waiting here ends cancelled when its turn comes
    TaskAccess::set_stop_reason(*task, FailureKind::cancelled);
    r.stop.request_stop();
  });
}

void RedisBroker::check_cancels(Connection& c) {
  std::vector<std::string> ids;
  {
    MutexLock lock(mutex_);
    for (const auto& [id, h] : held_) ids.push_back(id);
  }
  if (ids.empty()) return;
  std::vector<std::vector<std::string>> reads;
  for (const std::string& id : ids) reads.push_back({"HGET", keys_.job(id), "cancel"});
  const std::vector<Value> flags = c.pipeline(reads);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (flags[i].str == "1") stop_local(ids[i]);
  }
}

// Tells the other processes this one is alive (GET /v1/processes); a
// process unseen for a day leaves the list.
void RedisBroker::heartbeat(Connection& c) {
  const long long now = epoch_ms(Clock::now());
  const auto colon = owner_.find(':');
  const std::string host = owner_.substr(0, colon);
  const std::string pid = owner_.substr(colon + 1, owner_.find(':', colon + 1) - colon - 1);
  std::vector<std::string> fields = {"HSET", keys_.process(owner_), "id", owner_, "host", host, "pid", pid,
                                     "workers", std::to_string(options_.workers), "started_ms",
                                     std::to_string(started_ms_)};
  std::string queues;  // the named queues it fetches from; none when it only submits
  if (options_.workers > 0) {
    for (const BrokerOptions::Queue& q : options_.queues) queues += (queues.empty() ? "" : ",") + q.name;
  }
  fields.insert(fields.end(), {"queues", queues});
  if (describe_) fields.insert(fields.end(), {"health", describe_()});
  try {
    c.pipeline({fields,
                {"PEXPIRE", keys_.process(owner_), std::to_string(options_.lease.count() * 3)},
                {"ZADD", keys_.processes, std::to_string(now), owner_},
                {"ZREMRANGEBYSCORE", keys_.processes, "-inf", std::to_string(now - 86'400'000)}});
  } catch (const RedisError& e) {
    // Out of memory: the jobs matter more than the process list (leases
    // are renewed by a script that runs when Redis is full).
    if (e.kind() != RedisError::Kind::full) throw;
  }
}

bool RedisBroker::set_paused(const std::string& type, bool paused) {
  pause_epoch_.fetch_add(1, std::memory_order_acq_rel);
  if (paused) return pool_.command({"HSETNX", keys_.paused, type, std::to_string(epoch_ms(Clock::now()))}).as_integer() == 1;
  const Value v = pool_.eval(kResume, {keys_.paused, keys_.held}, {type, keys_.job_prefix, keys_.prefix});
  feed_wake_.signal();  // its jobs are ready again
  return !v.elements.empty() && v.elements[0].as_integer() == 1;
}

bool RedisBroker::set_queue_paused(const std::string& name, bool paused) {
  if (paused) {
    return pool_.command({"HSETNX", keys_.queues_paused, name, std::to_string(epoch_ms(Clock::now()))}).as_integer() == 1;
  }
  const bool was = pool_.command({"HDEL", keys_.queues_paused, name}).as_integer() == 1;
  feed_wake_.signal();  // its jobs can be fetched again
  return was;
}

void RedisBroker::read_paused(Connection& c) {
  if (!on_paused_) return;
  const std::uint64_t epoch = pause_epoch();
  const Value v = c.command({"HKEYS", keys_.paused});
  std::set<std::string> types;
  for (const Value& e : v.elements) types.insert(e.str);
  on_paused_(types, epoch);
}

void RedisBroker::feed_once(Connection& c) {
  const long long now_ms = epoch_ms(Clock::now());
  const auto now = std::to_string(now_ms);
  check_cancels(c);
  c.eval(kPromote, {keys_.queues}, {now, "1000", keys_.job_prefix, keys_.prefix});
  // A process that only admits takes no leases over: it could not run
  // their retries' policy for types it may not know.
  if (options_.workers > 0) {
    const Value rows = c.eval(kRecover, {keys_.leased, keys_.processes},
                              {now, "100", owner_, std::to_string(now_ms + options_.lease.count()), keys_.job_prefix});
    for (const Value& row : rows.elements) take_over(row);
  }
  c.eval(kTrim, {keys_.dead, keys_.done, keys_.index, keys_.counts},
         {keys_.job_prefix, std::to_string(options_.keep_dead), std::to_string(options_.keep_finished),
          retention_cutoff(options_.dead_ttl, now_ms), retention_cutoff(options_.finished_ttl, now_ms)});
}

// A lease taken over from a process that died or stalled: the lost attempt
// ends here through the failure path (the listener), as every failed
// attempt does. A job whose type this process does not run cannot follow
// its type's policy here: it is ready again at once while attempts remain.
void RedisBroker::take_over(const Value& row) {
  const FetchedJob job = parse_fetched(row, 17);
  LostLease lost;
  lost.attempt = job.attempt;
  lost.holder = row.elements.at(14).str;
  lost.holder_seen_ms = row.elements.at(15).as_integer();
  lost.cancel = row.elements.at(16).str == "1";
  warn("lease of job " + job.id + " (" + job.type + ", attempt " + std::to_string(job.attempt) + ") held by process " +
       lost.holder + " (" + seen_text(lost.holder_seen_ms) + ") expired: taken over by this process");
  TaskPtr task = on_lease_lost_ ? factory_(job) : nullptr;
  if (!task) {
    const bool again = job.attempt < job.max_attempts && !lost.cancel;
    Failure f = make_failure(FailureKind::lease_lost, "the lease of process " + lost.holder +
                                                          " expired while it ran the job: it died or stalled");
    PendingAck a{job.id, job.attempt, job.fence, again ? Ack::retry : Ack::done,
                 lost.cancel ? "cancelled" : "failed",
                 dump_line(nlohmann::ordered_json{{"error", to_json(f, true)}}), epoch_ms(Clock::now())};
    {
      MutexLock lock(mutex_);
      pending_.push_back(std::move(a));
    }
    ack_wake_.signal();
    return;
  }
  if (lost.cancel) TaskAccess::with_record(*task, [](TaskRecord& r) { r.cancel_requested = true; });
  TaskAccess::set_state(*task, JobState::running);
  {
    MutexLock lock(mutex_);
    held_[job.id] = Held{job.attempt, job.fence, task};
  }
  on_lease_lost_(Lease{std::move(task), {}}, lost);
}

void RedisBroker::feed(std::stop_token stop) {
  Link link(options_.redis, "feeder");
  auto last_extend = Clock::time_point{};
  auto last_heartbeat = Clock::time_point{};  // at once: others see this process from the start
  auto last_sweep = Clock::time_point{};
  const auto heartbeat_every = std::min<std::chrono::milliseconds>(options_.lease / 3, std::chrono::seconds(1));
  while (!stop.stop_requested()) {
    try {
      Connection& c = link.get();
      const auto now = Clock::now();
      if (now - last_sweep >= options_.poll * 4) {
        feed_once(c);
        last_sweep = now;
      }
      if (now - last_heartbeat >= heartbeat_every) {
        heartbeat(c);
        read_paused(c);
        last_heartbeat = now;
      }
      if (now - last_extend >= options_.lease / 3) {
        extend_all(c);
        last_extend = now;
      }
      const bool got = refill(c) > 0;
      link.ok();
      if (!got) feed_wake_.wait(stop, options_.poll);
    } catch (const RedisError& e) {
      // Unreachable, or a reply we did not expect: start again on a fresh
      // connection after the backoff.
      link.failed(e);
    }
  }
}

void RedisBroker::close() {
  {
    MutexLock lock(mutex_);
    if (closed_) return;
    closed_ = true;
  }
  feeder_.request_stop();
  if (feeder_.joinable()) feeder_.join();
  acker_.request_stop();
  if (acker_.joinable()) acker_.join();
  local_.close();
}

std::vector<TaskPtr> RedisBroker::drain() {
  std::vector<TaskPtr> local_only;
  std::vector<std::pair<std::string, std::uint64_t>> give_back;
  for (TaskPtr& t : local_.drain()) {
    if (!t->spec().stored) {
      local_only.push_back(std::move(t));
      continue;
    }
    MutexLock lock(mutex_);
    if (auto it = held_.find(t->id()); it != held_.end()) {
      give_back.emplace_back(t->id(), it->second.fence);
      held_.erase(it);
    }
    lost_.erase(t->id());  // taken over while it waited here: not ours to give back
  }
  // Jobs fetched but never started here go back to Redis for other
  // processes; pending acks get a last chance.
  try {
    Connection c(options_.redis);
    flush_pending(c);
    c.pipeline({{"ZREM", keys_.processes, owner_}, {"DEL", keys_.process(owner_)}});  // a clean leave
    for (const auto& [id, fence] : give_back) {
      c.eval(kRelease, {keys_.job(id), keys_.leased}, {id, owner_, std::to_string(fence), keys_.prefix});
    }
  } catch (const RedisError&) {
    // Redis is gone: the leases expire and other processes take the jobs back.
  }
  return local_only;
}

}  // namespace bulwark::detail::redis
