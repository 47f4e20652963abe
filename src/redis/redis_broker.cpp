#include "redis/redis_broker.hpp"

#include "core/flow_link.hpp"

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

// A flow's child's entry in its parent's list (to_json(ChildOutcome)):
// the result, or why it failed without where; "removed" when its parent
// leaves it out (policy remove).
std::string entry_of(const Task& task, JobState state) {
  ChildOutcome c{task.id(), task.type(), state, {}, std::nullopt};
  task.with_record([&](const TaskRecord& r) {
    if (state == JobState::succeeded) {
      c.result = r.result;
    } else {
      c.error = r.error ? *r.error : make_failure(FailureKind::cancelled, "cancelled");
      c.error->frames.clear();
      c.error->nested.clear();
    }
  });
  nlohmann::json j = to_json(c);
  if (state != JobState::succeeded && task.spec().flow->policy == ChildFailure::remove) j["removed"] = true;
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
  // Then, in a flow: the parent, its policy, and a parent's children's entries.
  const std::size_t flow_at = queue_at == 14 ? 15 : queue_at + 1;
  if (v.elements.size() > flow_at + 1) {
    f.parent = text(flow_at);
    f.policy = text(flow_at + 1);
  }
  if (v.elements.size() > flow_at + 2 && v.elements[flow_at + 2].type == Value::Type::array) {
    f.children.emplace();
    for (const Value& e : v.elements[flow_at + 2].elements) f.children->push_back(e.str);
  } else if (v.elements.size() > flow_at + 2 && !v.elements[flow_at + 2].str.empty()) {
    f.children.emplace();  // a take-over's row says only that it is a flow's parent
  }
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

namespace {

// The local queue's named queues: the weights decide which waits less; the
// capacities are Redis's to keep.
std::vector<JobQueue::Named> local_queues(const BrokerOptions& o) {
  std::vector<JobQueue::Named> out;
  for (const BrokerOptions::Queue& q : o.queues) out.push_back({q.name, q.weight, 0});
  return out;
}

std::string queue_of(const TaskSpec& s) { return s.queue == kDefaultQueue ? std::string() : s.queue; }

// Pairs of the same key, in order of first appearance.
template <class T, class Key>
std::vector<std::pair<std::string, std::vector<T>>> grouped(const std::vector<T>& items, Key key) {
  std::vector<std::pair<std::string, std::vector<T>>> out;
  for (const T& item : items) {
    const std::string k = key(item);
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& g) { return g.first == k; });
    if (it == out.end()) it = out.insert(out.end(), {k, {}});
    it->second.push_back(item);
  }
  return out;
}

}  // namespace

RedisBroker::RedisBroker(BrokerOptions options, std::string owner, TaskFactory factory)
    : options_(std::move(options)),
      parts_(options_.redis, options_.ns),
      keys_(parts_.base()),
      owner_(std::move(owner)),
      started_ms_(epoch_ms(Clock::now())),
      factory_(std::move(factory)),
      local_(options_.capacity, options_.max_retries, options_.retry_priority_offset, local_queues(options_),
             options_.strict) {}

void RedisBroker::start() {
  acker_ = std::jthread([this](std::stop_token stop) { send_acks(std::move(stop)); });
  feeder_ = std::jthread([this](std::stop_token stop) { feed(std::move(stop)); });
}

RedisBroker::~RedisBroker() { close(); }

// The enqueue script's twenty-one arguments for one job.
void RedisBroker::enqueue_args(std::vector<std::string>& args, const Keys& keys, const TaskSpec& s,
                               Clock::time_point due, const std::string& now_ms) {
  args.insert(args.end(), {s.id, s.type, dump_line(s.payload), std::to_string(s.priority),
                           std::to_string(s.max_attempts), std::to_string(s.timeout.count()),
                           std::to_string(epoch_ms(due)), now_ms, s.trace ? s.trace->traceparent() : std::string(),
                           s.trace ? s.trace->state : std::string()});
  if (s.unique) {
    args.insert(args.end(), {keys.unique(s.type, s.unique->key), std::to_string(s.unique->window.count()), s.unique->key});
  } else {
    args.insert(args.end(), 3, std::string());
  }
  args.push_back(s.then ? dump_line(*s.then) : std::string());
  // A flow's place: parent, its part and queue, the policy; children's ids;
  // the root and its part ("" for a job in no flow).
  const std::size_t at = args.size();
  args.resize(at + 7);
  if (const FlowLink* link = s.flow.get()) {
    if (link->is_child()) {
      const Keys& up = parts_.keys(link->parent_queue);
      args[at] = link->parent_id;
      args[at + 1] = up.prefix;
      args[at + 2] = up.queue;
      args[at + 3] = std::string(to_string(link->policy));
      args[at + 5] = link->root_id;
      args[at + 6] = parts_.keys(link->root_queue).prefix;
    }
    for (const JobId& kid : link->children) args[at + 4].append(kid).push_back('\n');
  }
}

std::vector<std::string> RedisBroker::enqueue_head(const Keys& keys, std::size_t jobs) {
  std::size_t capacity = 0;  // the queue's own, if this process lists it with one
  for (const BrokerOptions::Queue& q : options_.queues) {
    if (q.name == (keys.is_default() ? kDefaultQueue : std::string_view(keys.queue))) capacity = q.capacity;
  }
  std::string seq;  // counted by the script itself where it may touch the key
  parts_.note(keys.queue);
  if (!seq_in_script(keys)) {
    const long long last = parts_.pool("").command({"INCRBY", keys.seq, std::to_string(jobs)}).as_integer();
    seq = std::to_string(last - static_cast<long long>(jobs));
  }
  return {std::to_string(options_.capacity), keys.job_prefix, std::to_string(waiting_elsewhere(keys.queue)),
          std::to_string(capacity), seq, keys.queue};
}

bool RedisBroker::seq_in_script(const Keys& keys) const { return keys.is_default() || !options_.redis.cluster; }

Value RedisBroker::run_enqueue(Connection& c, const Keys& keys, const std::vector<std::string>& args) const {
  if (seq_in_script(keys)) return c.eval(kEnqueue, {keys.index, keys.ready, keys.scheduled, keys.held, keys.seq}, args);
  return c.eval(kEnqueue, {keys.index, keys.ready, keys.scheduled, keys.held}, args);
}

long long RedisBroker::waiting_elsewhere(const std::string& queue) const {
  MutexLock lock(shared_mutex_);
  long long n = 0;
  for (const auto& [name, waiting] : waiting_) {
    if (name != queue) n += waiting;
  }
  return n;
}

// Sends one enqueue call for `count` jobs of one queue; its answer per job,
// or nullopt with why Redis refused them all (unavailable, or backend_full
// when it is out of memory).
std::optional<std::vector<RedisBroker::EnqueueAnswer>> RedisBroker::send_enqueue(const Keys& keys,
                                                                                 const std::vector<std::string>& jobs,
                                                                                 std::size_t count, Admitted& refused) {
  std::vector<EnqueueAnswer> answers;
  bool written = false;  // on the master: a failed WAIT leaves it there
  try {
    std::vector<std::string> args = enqueue_head(keys, count);
    args.insert(args.end(), jobs.begin(), jobs.end());
    const Value v = parts_.pool(keys.queue).with([&](Connection& c) {
      Value answer = run_enqueue(c, keys, args);
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
  const Keys& keys = parts_.keys(queue_of(task->spec()));
  std::vector<std::string> args;
  enqueue_args(args, keys, task->spec(), due, std::to_string(epoch_ms(now)));
  Admitted refused = Admitted::unavailable;
  const auto answers = send_enqueue(keys, args, 1, refused);
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
  for (auto& [queue, group] : grouped(shared, [](Admission* a) { return queue_of(a->task->spec()); })) {
    const Keys& keys = parts_.keys(queue);
    for (std::size_t from = 0; from < group.size(); from += kChunk) {
      const std::size_t to = std::min(group.size(), from + kChunk);
      std::vector<std::string> args;
      args.reserve(21 * (to - from));
      for (std::size_t i = from; i < to; ++i) enqueue_args(args, keys, group[i]->task->spec(), group[i]->due, now_ms);
      Admitted refused = Admitted::unavailable;
      const auto answers = send_enqueue(keys, args, to - from, refused);
      for (std::size_t i = from; i < to; ++i) {
        group[i]->result = !answers                       ? refused
                           : answers->size() == to - from ? admitted((*answers)[i - from], group[i]->record, group[i])
                                                          : Admitted::unavailable;
      }
    }
  }
}

// A flow, one script call per queue it touches: each call admits its jobs
// whole or not at all. The root's queue goes first; if a later queue
// refuses, what the earlier calls wrote is cancelled (the root's cancel
// takes its tree). Flows are bounded by limits.flow_children (100,000 by
// default), so one call may carry them all.
void RedisBroker::admit_flow(std::vector<Admission>& flow, Clock::time_point now) {
  const std::string now_ms = std::to_string(epoch_ms(now));
  std::vector<Admission*> all;
  for (Admission& a : flow) all.push_back(&a);
  bool written = false;
  for (auto& [queue, group] : grouped(all, [](Admission* a) { return queue_of(a->task->spec()); })) {
    const Keys& keys = parts_.keys(queue);
    std::vector<std::string> args;
    args.reserve(21 * group.size());
    for (Admission* a : group) enqueue_args(args, keys, a->task->spec(), a->due, now_ms);
    Admitted refused = Admitted::unavailable;
    const auto answers = send_enqueue(keys, args, group.size(), refused);
    bool whole = answers && answers->size() == group.size();
    for (std::size_t i = 0; whole && i < group.size(); ++i) {
      whole = (*answers)[i].holder.empty() && (*answers)[i].seq > 0;
    }
    if (!whole) {
      for (std::size_t i = 0; i < group.size(); ++i) {
        Admission& a = *group[i];
        if (!answers || answers->size() != group.size()) {
          a.result = answers ? Admitted::unavailable : refused;
          continue;
        }
        const EnqueueAnswer& e = (*answers)[i];
        if (!e.holder.empty()) {
          a.result = Admitted::unique;
          a.existing = e.holder;
          a.existing_state = e.holder_state;
        } else {
          // -4: not written because another job of the flow was refused.
          a.result = e.seq == -1 ? Admitted::duplicate : e.seq == -2 ? Admitted::full
                   : e.seq == -3 ? Admitted::queue_full : Admitted::accepted;
        }
      }
      if (written) cancel_written(flow.front().task->id(), queue_of(flow.front().task->spec()));
      return;
    }
    written = true;
    for (Admission* a : group) a->result = a->record() ? Admitted::accepted : Admitted::duplicate;
  }
}

long long cancel_job(Parts& parts, const BrokerOptions& options, const std::string& queue, const JobId& id) {
  const Keys& k = parts.keys(queue);
  const long long now = epoch_ms(Clock::now());
  const long long r = parts.pool(queue)
                          .eval(kCancel, {k.job(id), k.done, k.index, k.ended, k.counts, k.ready, k.scheduled, k.held},
                                {id, std::to_string(now), std::to_string(options.keep_finished), k.job_prefix,
                                 retention_cutoff(options.finished_ttl, now), k.cancel, options.redis.cluster ? "1" : "0"})
                          .as_integer();
  if (r != 4) return r;
  // A flow's parent that waited for its children: its tree goes with it,
  // each child in whichever queue holds it.
  const std::vector<std::string> names = parts.names();
  for (const Value& kid : parts.pool(queue).command({"LRANGE", k.prefix + "kids:" + id, "0", "-1"}).elements) {
    for (const std::string& name : names) {
      if (parts.pool(name).command({"EXISTS", parts.keys(name).job(kid.str)}).as_integer() == 0) continue;
      cancel_job(parts, options, name, kid.str);
      break;
    }
  }
  return r;
}

// Cancels a flow's root written by an admission refused further on (its
// tree with it, as a user's cancel would).
void RedisBroker::cancel_written(const JobId& root, const std::string& queue) {
  try {
    cancel_job(parts_, options_, queue, root);
  } catch (const RedisError& e) {
    warn("a flow refused part-way: its root " + root + " could not be cancelled in Redis: " + e.what());
  }
}

void RedisBroker::admit_soon(TaskPtr task, Clock::time_point due, Clock::time_point now, std::function<bool()> record,
                             std::function<void(Admitted)> answer) {
  if (!task->spec().stored) {
    Broker::admit_soon(std::move(task), due, now, std::move(record), std::move(answer));
    return;
  }
  SoonAdmission a;
  a.queue = queue_of(task->spec());
  enqueue_args(a.args, parts_.keys(a.queue), task->spec(), due, std::to_string(epoch_ms(now)));
  a.record = std::move(record);
  a.answer = std::move(answer);
  {
    MutexLock lock(mutex_);
    soon_.push_back(std::move(a));
  }
  ack_wake_.signal();
}

namespace {

// Erases the first entries of `list` whose flag in `sent` is set (only the
// acker takes from the front, so they are still where they were).
template <class T>
void erase_sent(std::deque<T>& list, const std::vector<bool>& sent) {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < sent.size(); ++i) {
    if (sent[i]) continue;
    if (kept != i) list[kept] = std::move(list[i]);  // never onto itself: that empties it
    ++kept;
  }
  list.erase(list.begin() + static_cast<std::ptrdiff_t>(kept), list.begin() + static_cast<std::ptrdiff_t>(sent.size()));
}

}  // namespace

void RedisBroker::flush_soon(Links& links, std::size_t n) {
  if (n == 0) return;
  // One call per queue; each admission is taken off the list once its
  // queue's call went through.
  std::vector<std::size_t> order(n);
  std::vector<std::string> queues(n);
  {
    MutexLock lock(mutex_);
    for (std::size_t i = 0; i < n; ++i) {
      order[i] = i;
      queues[i] = soon_[i].queue;
    }
  }
  std::vector<bool> sent(n, false);
  std::vector<std::pair<std::size_t, Admitted>> answers;  // index, answer
  std::string refused;  // Redis's error, when it refused a call itself
  const auto finish = [&] {
    std::vector<std::pair<SoonAdmission, Admitted>> done;
    {
      MutexLock lock(mutex_);
      for (const auto& [i, answer] : answers) done.emplace_back(std::move(soon_[i]), answer);
      erase_sent(soon_, sent);
    }
    if (!refused.empty()) warn("follow-up jobs not admitted: " + refused);
    for (auto& [a, answer] : done) a.answer(answer == Admitted::accepted && !a.record() ? Admitted::duplicate : answer);
  };
  try {
    for (const auto& [queue, group] : grouped(order, [&](std::size_t i) { return queues[i]; })) {
      const Keys& keys = parts_.keys(queue);
      std::vector<std::string> args = enqueue_head(keys, group.size());
      {
        MutexLock lock(mutex_);
        for (std::size_t i : group) args.insert(args.end(), soon_[i].args.begin(), soon_[i].args.end());
      }
      Value v;
      try {
        v = run_enqueue(links.get(queue), keys, args);
      } catch (const RedisError& e) {
        if (e.unavailable()) throw;  // they stay, and go when Redis is back
        // An error reply (Redis full, say) would come again: answer them
        // refused rather than hold up the ends behind them.
        refused = e.what();
      }
      for (std::size_t k = 0; k < group.size(); ++k) {
        sent[group[k]] = true;
        // The script answers every job; anything else: not admitted.
        Admitted answer = Admitted::unavailable;
        if (k < v.elements.size()) {
          const EnqueueAnswer e = answer_of(v.elements[k]);
          answer = admitted(e, [] { return true; }, nullptr);
        }
        answers.emplace_back(group[k], answer);
      }
    }
  } catch (const RedisError&) {
    finish();
    throw;
  }
  finish();
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
  a.queue = queue_of(task->spec());
  a.id = task->id();
  a.how = how;
  a.state = state_name(task->state());
  a.outcome = outcome_of(*task);
  a.due_ms = epoch_ms(due);
  if (how == Ack::done && task->spec().flow) {
    // A flow's child: its entry in its parent's list; its root: "*" (its end lets the flow into retention).
    const FlowLink& link = *task->spec().flow;
    a.entry = link.is_child() ? entry_of(*task, task->state()) : link.is_parent() ? "*" : "";
  }
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
  if (held <= low_water() * options_.queues.size()) feed_wake_.signal();  // room for a batch: fetch again now, not after the poll
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

std::size_t RedisBroker::held_in(const std::string& queue) const {
  std::size_t n = 0;
  for (const auto& [id, h] : held_) n += h.queue == queue ? 1 : 0;
  return n;
}

// Takes jobs from Redis until this process holds workers + prefetch of
// each queue it consumes (the paused ones aside).
std::size_t RedisBroker::refill(Links& links) {
  if (options_.workers == 0 || !fetching_.load(std::memory_order_acquire)) return 0;
  // Leases set aside at a concurrency limit do not count against the
  // budget, up to 8 times it: beyond that a queue full of one limited type
  // waits in Redis rather than in this process.
  const std::size_t budget = options_.workers + options_.prefetch;
  const auto aside = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, aside_.load(std::memory_order_acquire)));
  const std::size_t target = budget + std::min(aside, 8 * budget);
  std::size_t got = 0;
  for (const BrokerOptions::Queue& q : options_.queues) {
    const std::string queue = q.name == kDefaultQueue ? std::string() : q.name;
    {
      MutexLock lock(shared_mutex_);
      if (paused_queues_.count(q.name) != 0) continue;
    }
    got += refill(links.get(queue), queue, target);
  }
  return got;
}

std::size_t RedisBroker::refill(Connection& c, const std::string& queue, std::size_t target) {
  std::size_t have = 0;
  {
    MutexLock lock(mutex_);
    have = held_in(queue);
  }
  if (have >= target) return 0;
  const Keys& keys = parts_.keys(queue);
  const auto now = Clock::now();
  std::vector<std::string> args = {std::to_string(target - have), std::to_string(epoch_ms(now)),
                                   std::to_string(options_.lease.count()), owner_, keys.job_prefix,
                                   options_.redis.cluster ? "1" : "0"};
  {
    MutexLock lock(shared_mutex_);
    args.insert(args.end(), paused_types_.begin(), paused_types_.end());
  }
  const Value got = c.eval(kFetch, {keys.leased, keys.held, keys.ready}, args);
  for (const Value& row : got.elements) {
    const FetchedJob job = parse_fetched(row, 14);
    TaskPtr task = factory_(job);
    // Not a type this process runs, or no room here: give it back at once.
    if (!task || (!job.retry && !local_.try_reserve(*task))) {
      c.eval(kRelease, {keys.job(job.id), keys.leased, keys.ready}, {job.id, owner_, std::to_string(job.fence)});
      continue;
    }
    {
      MutexLock lock(mutex_);
      held_[job.id] = Held{job.attempt, job.fence, task, queue};
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

void RedisBroker::extend_all(Links& links) {
  struct Mine {
    std::string queue, id;
    std::uint64_t fence;
  };
  std::vector<Mine> leases;
  {
    MutexLock lock(mutex_);
    for (const auto& [id, h] : held_) leases.push_back({h.queue, id, h.fence});
  }
  const std::string deadline = std::to_string(epoch_ms(Clock::now() + options_.lease));
  for (const Mine& l : leases) {
    const Keys& keys = parts_.keys(l.queue);
    const Value v = links.get(l.queue).eval(kExtend, {keys.job(l.id), keys.leased},
                                            {l.id, owner_, std::to_string(l.fence), deadline});
    if (v.type != Value::Type::integer) lost_here(l.id, l.fence, v.str);
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

// Writes up to kAckBatch of the oldest pending ends, one script call per
// queue, and takes them off the list. Returns how many; throws RedisError
// (those not written stay). Only one thread flushes at a time (the acker,
// or drain() after it).
std::size_t RedisBroker::flush_batch(Links& links) {
  constexpr std::size_t kAckBatch = 256;
  const long long now = epoch_ms(Clock::now());
  std::size_t n = 0;
  std::size_t soon = 0;
  std::vector<std::size_t> order;
  std::vector<std::string> queues;
  {
    MutexLock lock(mutex_);
    n = std::min(pending_.size(), kAckBatch);
    // Taken with the ends, under one lock: every admission queued before
    // one of these ends is written before it.
    soon = std::min<std::size_t>(soon_.size(), 1000);
    if (soon < soon_.size()) n = 0;  // more admissions than one call takes: they go first
    if (n == 0 && soon == 0) return 0;
    for (std::size_t i = 0; i < n; ++i) {
      order.push_back(i);
      queues.push_back(pending_[i].queue);
    }
  }
  flush_soon(links, soon);
  if (n == 0) return soon;
  // Progress first: every end taken above came after its job's last
  // progress note, which the end's fence would refuse once written.
  write_progress(links);
  std::vector<bool> sent(n, false);
  std::vector<std::pair<std::string, int>> dropped;
  std::vector<std::string> holders;
  const auto finish = [&] {
    MutexLock lock(mutex_);
    erase_sent(pending_, sent);
  };
  try {
    for (const auto& [queue, group] : grouped(order, [&](std::size_t i) { return queues[i]; })) {
      const Keys& keys = parts_.keys(queue);
      std::vector<std::string> args = {owner_,
                                       std::to_string(now),
                                       std::to_string(options_.keep_finished),
                                       std::to_string(options_.keep_dead),
                                       retention_cutoff(options_.finished_ttl, now),
                                       retention_cutoff(options_.dead_ttl, now),
                                       keys.job_prefix,
                                       options_.redis.cluster ? "1" : "0"};
      {
        MutexLock lock(mutex_);
        for (std::size_t i : group) {
          const PendingAck& a = pending_[i];
          args.insert(args.end(), {a.id, std::to_string(a.fence), a.how == Ack::retry ? "retry" : "done", a.state,
                                   a.outcome, std::to_string(a.due_ms), a.entry});
        }
      }
      Connection& c = links.get(queue);
      // A holder's name in the reply instead of 1: the lease was taken over
      // meanwhile and the job runs elsewhere; the outcome here does not count.
      const Value v = c.eval(kAck, {keys.leased, keys.done, keys.dead, keys.index, keys.ended, keys.counts, keys.scheduled},
                             args);
      {
        MutexLock lock(mutex_);
        for (std::size_t k = 0; k < group.size(); ++k) {
          sent[group[k]] = true;
          if (k >= v.elements.size() || v.elements[k].type == Value::Type::integer) continue;
          dropped.emplace_back(pending_[group[k]].id, pending_[group[k]].attempt);
          holders.push_back(v.elements[k].str);
        }
      }
      try {
        replicated(c, "end");
      } catch (const RedisError& e) {
        // Written on the master, not yet on enough replicas: nothing to send
        // again. Said once per change, and /readyz says it meanwhile.
        status().down("replicas", e);
      }
    }
  } catch (const RedisError&) {
    finish();
    for (std::size_t i = 0; i < dropped.size(); ++i) drop_result(dropped[i].first, dropped[i].second, holders[i]);
    throw;
  }
  finish();
  for (std::size_t i = 0; i < dropped.size(); ++i) drop_result(dropped[i].first, dropped[i].second, holders[i]);
  return n;
}

void RedisBroker::flush_pending(Links& links) {
  while (flush_batch(links) > 0) {
  }
}

// The acker thread: writes ends as they come, a batch per round trip while
// they come faster than Redis answers; backs off while Redis is away.
void RedisBroker::send_acks(std::stop_token stop) {
  Links links(parts_, "acker");
  while (!stop.stop_requested()) {
    ack_wake_.wait(stop, std::chrono::milliseconds(100));
    if (stop.stop_requested()) break;  // drain() writes the rest
    try {
      flush_pending(links);
      write_progress(links);
      links.ok();
    } catch (const RedisError& e) {
      links.failed(e);
    }
  }
}

void RedisBroker::note_progress(const std::string& id, const JobProgress& p) {
  const std::string text = dump_line(nlohmann::json{{"fraction", p.fraction}, {"note", p.note}, {"at_ms", std::chrono::duration_cast<std::chrono::milliseconds>(p.at.time_since_epoch()).count()}});
  {
    MutexLock lock(mutex_);
    auto it = held_.find(id);
    if (it == held_.end()) return;  // not leased here
    progress_[id] = ProgressNote{it->second.queue, it->second.fence, text};
  }
  ack_wake_.signal();
}

// The latest progress of each job, fenced like an ack: only while this
// process still holds the attempt that reported it.
void RedisBroker::write_progress(Links& links) {
  std::map<std::string, ProgressNote> notes;
  {
    MutexLock lock(mutex_);
    notes.swap(progress_);
  }
  for (const auto& [id, note] : notes) {
    links.get(note.queue).eval(kProgress, {parts_.keys(note.queue).job(id)}, {owner_, std::to_string(note.fence), note.json});
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

void RedisBroker::check_cancels(Links& links) {
  std::vector<std::pair<std::string, std::string>> jobs;  // queue, id
  {
    MutexLock lock(mutex_);
    for (const auto& [id, h] : held_) jobs.emplace_back(h.queue, id);
  }
  for (const auto& [queue, group] : grouped(jobs, [](const auto& j) { return j.first; })) {
    std::vector<std::vector<std::string>> reads;
    for (const auto& j : group) reads.push_back({"HGET", parts_.keys(queue).job(j.second), "cancel"});
    const std::vector<Value> flags = links.get(queue).pipeline(reads);
    for (std::size_t i = 0; i < group.size() && i < flags.size(); ++i) {
      if (flags[i].str == "1") stop_local(group[i].second);
    }
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
  Pool& pool = parts_.pool("");
  const bool changed = paused ? pool.command({"HSETNX", keys_.paused, type, std::to_string(epoch_ms(Clock::now()))})
                                        .as_integer() == 1
                              : pool.command({"HDEL", keys_.paused, type}).as_integer() == 1;
  std::vector<std::string> now_paused;
  for (const Value& t : pool.command({"HKEYS", keys_.paused}).elements) now_paused.push_back(t.str);
  {
    MutexLock lock(shared_mutex_);
    paused_types_ = now_paused;
  }
  if (!paused) {
    // Its jobs set aside go back to ready in every queue now (the other
    // processes' sweeps would within a heartbeat).
    const std::string now = std::to_string(epoch_ms(Clock::now()));
    for (const std::string& queue : parts_.names()) {
      parts_.pool(queue).with([&](Connection& c) { promote(c, queue, now, now_paused); });
    }
    feed_wake_.signal();
  }
  return changed;
}

bool RedisBroker::set_queue_paused(const std::string& name, bool paused) {
  queue_pause_epoch_.fetch_add(1, std::memory_order_acq_rel);
  Pool& pool = parts_.pool("");
  const bool changed =
      paused ? pool.command({"HSETNX", keys_.queues_paused, name, std::to_string(epoch_ms(Clock::now()))}).as_integer() == 1
             : pool.command({"HDEL", keys_.queues_paused, name}).as_integer() == 1;
  {
    MutexLock lock(shared_mutex_);
    if (paused) {
      paused_queues_.insert(name);
    } else {
      paused_queues_.erase(name);
    }
  }
  local_.set_paused(name, paused);  // the jobs fetched already wait here meanwhile
  if (!paused) feed_wake_.signal();  // its jobs can be fetched again
  return changed;
}

void RedisBroker::read_shared(Links& links) {
  const std::uint64_t epoch = pause_epoch();
  const std::uint64_t queue_epoch = queue_pause_epoch_.load(std::memory_order_acquire);
  const std::vector<Value> v = links.get("").pipeline(
      {{"HKEYS", keys_.paused}, {"HKEYS", keys_.queues_paused}, {"SMEMBERS", keys_.queues}});
  std::set<std::string> types;
  for (const Value& e : v.at(0).elements) types.insert(e.str);
  std::set<std::string> queues_paused;
  for (const Value& e : v.at(1).elements) queues_paused.insert(e.str);
  std::vector<std::string> known = {std::string()};
  for (const Value& e : v.at(2).elements) {
    if (e.str != kDefaultQueue && !e.str.empty()) known.push_back(e.str);
  }
  std::sort(known.begin() + 1, known.end());
  // A pause or resume here after the read wins over what was read.
  const bool queues_current = queue_pause_epoch_.load(std::memory_order_acquire) == queue_epoch;
  {
    MutexLock lock(shared_mutex_);
    if (pause_epoch() == epoch) paused_types_.assign(types.begin(), types.end());
    if (queues_current) paused_queues_ = queues_paused;
    known_queues_ = known;
  }
  if (queues_current) {
    for (const BrokerOptions::Queue& q : options_.queues) local_.set_paused(q.name, queues_paused.count(q.name) != 0);
  }
  if (on_paused_) on_paused_(types, epoch);
  // How many wait in each queue, for the capacity check of the others.
  std::map<std::string, long long> waiting;
  if (known.size() > 1) {
    for (const std::string& queue : known) {
      waiting[queue] = waiting_in(links.get(queue), parts_.keys(queue));
    }
  }
  MutexLock lock(shared_mutex_);
  waiting_ = std::move(waiting);
}

void RedisBroker::feed_once(Links& links, bool all) {
  const long long now_ms = epoch_ms(Clock::now());
  const auto now = std::to_string(now_ms);
  check_cancels(links);
  std::vector<std::string> queues;
  std::vector<std::string> paused;
  {
    MutexLock lock(shared_mutex_);
    if (all) queues = known_queues_;
    paused = paused_types_;
  }
  for (const BrokerOptions::Queue& q : options_.queues) {
    const std::string queue = q.name == kDefaultQueue ? std::string() : q.name;
    if (std::find(queues.begin(), queues.end(), queue) == queues.end()) queues.push_back(queue);
  }
  for (const std::string& queue : queues) {
    const Keys& keys = parts_.keys(queue);
    promote(links.get(queue), queue, now, paused);
    // A process that only admits takes no leases over: it could not run
    // their retries' policy for types it may not know.
    if (options_.workers > 0) {
      const Value rows = links.get(queue).eval(
          kRecover, {keys.leased}, {now, "100", owner_, std::to_string(now_ms + options_.lease.count()), keys.job_prefix});
      if (!rows.elements.empty()) {
        std::vector<std::vector<std::string>> seen;  // when each holder was last seen
        for (const Value& row : rows.elements) seen.push_back({"ZSCORE", keys_.processes, row.elements.at(14).str});
        const std::vector<Value> at = links.get("").pipeline(seen);
        for (std::size_t i = 0; i < rows.elements.size(); ++i) {
          take_over(rows.elements[i], i < at.size() && !at[i].is_nil() ? at[i].as_integer() : 0);
        }
      }
    }
    links.get(queue).eval(kTrim, {keys.dead, keys.done, keys.index, keys.counts},
                          {keys.job_prefix, std::to_string(options_.keep_dead), std::to_string(options_.keep_finished),
                           retention_cutoff(options_.dead_ttl, now_ms), retention_cutoff(options_.finished_ttl, now_ms)});
    if (options_.redis.cluster) relay(links, queue, now);
  }
}

// Ends of flow children whose parents live in another slot (a cluster):
// each carried to its parent's slot, then taken off the relay set. Any
// process may carry one (the one that wrote it may have died since); the
// parent counts it once however often it comes.
void RedisBroker::relay(Links& links, const std::string& queue, const std::string& now) {
  const Keys& keys = parts_.keys(queue);
  const Value ids = links.get(queue).command({"ZRANGE", keys.prefix + "relay", "0", "199"});
  for (const Value& id : ids.elements) {
    const Value f = links.get(queue).command(
        {"HMGET", keys.job(id.str), "state", "entry", "parent", "parent_part", "parent_queue", "policy"});
    if (f.elements.size() == 6 && !f.elements[2].is_nil() && !f.elements[1].is_nil()) {
      const std::string& parent = f.elements[2].str;
      const Keys& up = parts_.keys(f.elements[4].str);
      links.get(f.elements[4].str)
          .eval(kChildEnded, {up.job(parent)},
                {f.elements[3].str, parent, id.str, f.elements[0].str, f.elements[5].str, f.elements[1].str, now, "1"});
    }
    links.get(queue).command({"ZREM", keys.prefix + "relay", id.str});
  }
}

void RedisBroker::promote(Connection& c, const std::string& queue, const std::string& now_ms,
                          const std::vector<std::string>& paused) {
  const Keys& keys = parts_.keys(queue);
  std::vector<std::string> args = {now_ms, "1000", keys.job_prefix};
  args.insert(args.end(), paused.begin(), paused.end());
  c.eval(kPromote, {keys.scheduled, keys.ready, keys.held}, args);
}

// A lease taken over from a process that died or stalled: the lost attempt
// ends here through the failure path (the listener), as every failed
// attempt does. A job whose type this process does not run cannot follow
// its type's policy here: it is ready again at once while attempts remain.
void RedisBroker::take_over(const Value& row, long long holder_seen_ms) {
  const FetchedJob job = parse_fetched(row, 17);
  LostLease lost;
  lost.attempt = job.attempt;
  lost.holder = row.elements.at(14).str;
  lost.holder_seen_ms = holder_seen_ms;
  lost.cancel = row.elements.at(16).str == "1";
  warn("lease of job " + job.id + " (" + job.type + ", attempt " + std::to_string(job.attempt) + ") held by process " +
       lost.holder + " (" + seen_text(lost.holder_seen_ms) + ") expired: taken over by this process");
  TaskPtr task = on_lease_lost_ ? factory_(job) : nullptr;
  if (!task) {
    const bool again = job.attempt < job.max_attempts && !lost.cancel;
    Failure f = make_failure(FailureKind::lease_lost, "the lease of process " + lost.holder +
                                                          " expired while it ran the job: it died or stalled");
    PendingAck a{job.queue, job.id, job.attempt, job.fence, again ? Ack::retry : Ack::done,
                 lost.cancel ? "cancelled" : "failed",
                 dump_line(nlohmann::ordered_json{{"error", to_json(f, true)}}), epoch_ms(Clock::now()), {}};
    if (!again && !job.parent.empty()) {  // a flow's child: its parent hears of it
      nlohmann::json entry = to_json(ChildOutcome{job.id, job.type, lost.cancel ? JobState::cancelled : JobState::failed,
                                                  {}, f});
      if (job.policy == "remove") entry["removed"] = true;
      a.entry = dump_line(entry);
    } else if (!again && job.children) {
      a.entry = "*";  // a flow's root
    }
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
    held_[job.id] = Held{job.attempt, job.fence, task, job.queue};
  }
  on_lease_lost_(Lease{std::move(task), {}}, lost);
}

void RedisBroker::feed(std::stop_token stop) {
  Links links(parts_, "feeder");
  auto last_extend = Clock::time_point{};
  auto last_heartbeat = Clock::time_point{};  // at once: others see this process from the start
  auto last_sweep = Clock::time_point{};
  const auto heartbeat_every = std::min<std::chrono::milliseconds>(options_.lease / 3, std::chrono::seconds(1));
  while (!stop.stop_requested()) {
    try {
      const auto now = Clock::now();
      if (now - last_heartbeat >= heartbeat_every) {
        heartbeat(links.get(""));
        read_shared(links);
        feed_once(links, true);  // the queues no process here consumes too
        last_heartbeat = now;
        last_sweep = now;
      } else if (now - last_sweep >= options_.poll * 4) {
        feed_once(links, false);
        last_sweep = now;
      }
      if (now - last_extend >= options_.lease / 3) {
        extend_all(links);
        last_extend = now;
      }
      const bool got = refill(links) > 0;
      links.ok();
      if (!got) feed_wake_.wait(stop, options_.poll);
    } catch (const RedisError& e) {
      // Unreachable, or a reply we did not expect: start again on a fresh
      // connection after the backoff.
      links.failed(e);
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
  std::vector<std::pair<std::string, Held>> give_back;
  for (TaskPtr& t : local_.drain()) {
    if (!t->spec().stored) {
      local_only.push_back(std::move(t));
      continue;
    }
    MutexLock lock(mutex_);
    if (auto it = held_.find(t->id()); it != held_.end()) {
      give_back.emplace_back(t->id(), std::move(it->second));
      held_.erase(it);
    }
    lost_.erase(t->id());  // taken over while it waited here: not ours to give back
  }
  // Jobs fetched but never started here go back to Redis for other
  // processes; pending acks get a last chance.
  try {
    Links links(parts_, "drain");
    flush_pending(links);
    links.get("").pipeline({{"ZREM", keys_.processes, owner_}, {"DEL", keys_.process(owner_)}});  // a clean leave
    for (const auto& [id, h] : give_back) {
      const Keys& keys = parts_.keys(h.queue);
      links.get(h.queue).eval(kRelease, {keys.job(id), keys.leased, keys.ready}, {id, owner_, std::to_string(h.fence)});
    }
  } catch (const RedisError&) {
    // Redis is gone: the leases expire and other processes take the jobs back.
  }
  return local_only;
}

}  // namespace bulwark::detail::redis
