#include "runtime/intake.hpp"

#include <algorithm>
#include <unordered_set>

#include <thread>

#include "bulwark/detail/task_pool.hpp"
#include "bulwark/guarded.hpp"
#include "runtime/clock.hpp"
#include "support/text.hpp"
#include "core/flow_link.hpp"
#include "core/task_access.hpp"

namespace bulwark::detail {

namespace {

std::string make_id_prefix() { return std::string(1, 'j').append(random_tag(5)).append(1, '-'); }

// A registered type's job. The handler is the registry's: the task keeps the
// registry alive for attempts that outlive the runtime.
class HandlerTask final : public Task {
 public:
  HandlerTask(std::shared_ptr<const Registry> registry, const Handler& handler)
      : registry_(std::move(registry)), handler_(handler) {}

  void run(JobContext& ctx) override {
    nlohmann::json value = spec().flow ? handler_(ctx, payload_with_children(spec().payload, spec().flow.get()))
                                       : handler_(ctx, spec().payload);
    commit(ctx, [&](TaskRecord& r) { r.result = std::move(value); });
  }

 private:
  std::shared_ptr<const Registry> registry_;
  const Handler& handler_;
};

SubmitError error(SubmitError::Code code, std::string message) { return SubmitError{code, std::move(message)}; }

}  // namespace

Intake::Intake(const RuntimeOptions& options, std::shared_ptr<const Registry> registry, TypeTable& types,
               Broker& broker, JobStore& store, Completion& completion)
    : options_(options),
      registry_(std::move(registry)),
      types_(types),
      broker_(broker),
      store_(store),
      completion_(completion),
      id_prefix_(make_id_prefix()),
      takes_default_(broker.takes_queue(kDefaultQueue)) {}

std::string Intake::queue_check(const std::string& queue, const std::string& field) const {
  if (queue.empty()) {
    if (takes_default_) return {};  // the usual submit: no look at the broker
  } else if (std::string problem = queue_problem(queue); !problem.empty()) {
    return field + problem.substr(5);
  } else if (broker_.takes_queue(queue)) {
    return {};
  }
  std::string runs;
  for (const auto& [name, q] : options_.queues) runs += (runs.empty() ? "" : ", ") + name;
  return field + ": no queue '" + (queue.empty() ? std::string(kDefaultQueue) : queue) +
         "' runs here, so the job would never run (queues: " + (runs.empty() ? std::string(kDefaultQueue) : runs) + ")";
}

Submitted Intake::reject(SubmitError e) {
  rejected_.fetch_add(1, std::memory_order_relaxed);
  rejected_by_code_[static_cast<std::size_t>(e.code)].fetch_add(1, std::memory_order_relaxed);
  return Submitted{{}, JobState::rejected, std::move(e)};
}

std::optional<SubmitError> Intake::check(const JobSpec& spec, const TypeEntry* type,
                                         std::shared_ptr<const TraceContext>& trace) const {
  using Code = SubmitError::Code;
  if (type == nullptr) return error(Code::unknown_type, "unknown job type '" + spec.type + "'");
  if (spec.priority < kMinPriority || spec.priority > kMaxPriority) {
    return error(Code::invalid, "priority: expected an integer from " + std::to_string(kMinPriority) + " to " +
                                    std::to_string(kMaxPriority));
  }
  if (spec.max_attempts && *spec.max_attempts < 1) return error(Code::invalid, "max_attempts: expected at least 1");
  if (spec.delay.count() < 0 || spec.timeout.count() < 0) {
    return error(Code::invalid, "delay_ms and timeout_ms: expected 0 or more");
  }
  if (!spec.id.empty() && !is_valid_job_id(spec.id, options_.limits.id_length)) {
    return error(Code::invalid, job_id_problem(spec.id, options_.limits.id_length));
  }
  if (auto problem = queue_check(spec.queue, "queue"); !problem.empty()) return error(Code::invalid, problem);
  if (!spec.trace_parent.empty() || !spec.trace_state.empty()) {
    std::string problem;
    auto context = spec.trace(&problem);
    if (!context) return error(Code::invalid, problem);
    trace = std::make_shared<const TraceContext>(std::move(*context));
  }
  if (auto problem = unique_problem(spec.unique_key, spec.unique_for, options_.limits.id_length); !problem.empty()) {
    return error(Code::invalid, problem);
  }
  if (!spec.then.is_null()) {
    // The chain's fields once (from_json reads every nested `then` and its
    // payload; a spec built in code gets the same check), then each level's type.
    try {
      const JobSpec next = JobSpec::from_json(spec.then, options_.limits.id_length);
      if (!next.payload.is_null() && !next.payload.is_object()) {
        return error(Code::invalid, "then.payload: expected an object, or none (the job before adds \"previous\" to it)");
      }
    } catch (const SpecError& e) {
      return error(Code::invalid, std::string("then.") + e.what());
    }
    std::string path = "then";
    for (const nlohmann::json* then = &spec.then; then != nullptr; path += ".then") {
      const std::string next_type = then->value("type", "");
      if (types_.find(next_type) == nullptr) return error(Code::invalid, path + ".type: unknown job type '" + next_type + "'");
      if (auto problem = queue_check(then->value("queue", ""), path + ".queue"); !problem.empty()) {
        return error(Code::invalid, problem);
      }
      const auto it = then->find("then");
      then = it == then->end() || it->is_null() ? nullptr : &*it;
    }
  }
  if (type->validate) {
    auto valid = guarded([&] { type->validate(spec.payload); });
    if (!valid.ok()) return error(Code::invalid, valid.failure().message);
  }
  return std::nullopt;
}

Submitted Intake::submit(JobSpec spec) {
  if (!spec.children.empty()) return submit_flow(std::move(spec));
  TypeEntry* type = types_.find(spec.type);
  std::shared_ptr<const TraceContext> trace;
  if (auto problem = check(spec, type, trace)) return reject(std::move(*problem));
  const auto delay = spec.delay;
  auto task = task_for(*type, std::move(spec), std::move(trace));
  Submitted duplicate;
  if (auto e = accept(task, delay, &duplicate)) return reject(std::move(*e));
  if (duplicate.duplicate) return duplicate;
  return Submitted{task->id(), delay.count() > 0 ? JobState::scheduled : JobState::queued, std::nullopt};
}

void Intake::submit_soon(JobSpec spec, std::function<void(const Submitted&)> answer) {
  if ((!spec.unique_key.empty() && !broker_.keeps_unique_locks()) || !spec.children.empty()) {
    answer(submit(std::move(spec)));  // the local unique locks; nothing networked to wait for
    return;
  }
  TypeEntry* type = types_.find(spec.type);
  std::shared_ptr<const TraceContext> trace;
  if (auto problem = check(spec, type, trace)) {
    answer(reject(std::move(*problem)));
    return;
  }
  const auto delay = spec.delay;
  TaskPtr task = task_for(*type, std::move(spec), std::move(trace));
  const Gate gate(*this);
  if (!gate.open()) {
    answer(reject(error(SubmitError::Code::shutting_down, "the runtime is shutting down")));
    return;
  }
  const auto now = Clock::now();
  stamp(*task, delay, now);
  const JobState state = task->state();
  broker_.admit_soon(
      task, now + delay, now, [this, task] { return record(task); },
      [this, id = task->id(), queue = task->spec().queue, state, answer = std::move(answer)](Admitted result) {
        if (auto refused = refusal(result, id, queue)) {
          answer(reject(std::move(*refused)));
        } else {
          answer(Submitted{id, state, std::nullopt});
        }
      });
}

std::optional<SubmitError> Intake::post(std::shared_ptr<Task> task, PostOptions options) {
  if (options.priority < kMinPriority || options.priority > kMaxPriority || options.max_attempts < 1) {
    return reject(error(SubmitError::Code::invalid, "post: priority must be 0..9 and max_attempts at least 1")).error;
  }
  TypeEntry& posts = types_.posts();
  TaskSpec& s = TaskAccess::spec(*task);
  s.type = std::move(options.type);
  s.priority = options.priority;
  s.max_attempts = options.max_attempts;
  s.hard_timeout = posts.hard_timeout;
  TaskAccess::set_type_entry(*task, &posts);
  if (auto e = accept(std::move(task), options.delay)) return reject(std::move(*e)).error;
  return std::nullopt;
}

void Intake::stamp(Task& task, std::chrono::milliseconds delay, Clock::time_point now) {
  TaskSpec& s = TaskAccess::spec(task);  // not shared yet: admission publishes it
  s.seq = next_seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (s.id.empty()) s.id = id_prefix_ + std::to_string(s.seq);
  if (s.then) {
    const auto named = s.then->find("id");
    if (named == s.then->end() || named->is_null()) (*s.then)["id"] = follow_up_id(s.id, options_.limits.id_length);
  }
  TaskAccess::set_state(task, delay.count() > 0 ? JobState::scheduled : JobState::queued);
  TaskAccess::record_unlocked(task).created_at = to_wall(now);
  TaskAccess::set_ready_at(task, now + delay);
}

bool Intake::record(const TaskPtr& task) {
  if (task->spec().stored && !store_.insert(task)) return false;
  completion_.events().job(*task, task->state(), 0);
  completion_.count_accepted();
  if (!task->spec().queue.empty()) completion_.count_submitted(task->spec().queue);
  submitted_.fetch_add(1, std::memory_order_relaxed);
  task->type_entry()->counters.submitted.fetch_add(1, std::memory_order_relaxed);
  return true;
}

std::optional<SubmitError> Intake::refusal(Admitted result, const JobId& id, const std::string& queue) const {
  if (result == Admitted::accepted) return std::nullopt;  // every accepted submit: nothing more to look up
  const std::string name = queue.empty() ? std::string(kDefaultQueue) : queue;
  const auto named = options_.queues.find(name);
  const std::size_t own = named == options_.queues.end() ? 0 : named->second.capacity;
  switch (result) {
    case Admitted::accepted: return std::nullopt;
    case Admitted::full:
      if (own > 0) {
        return error(SubmitError::Code::queue_full,
                     "the queue is full (queue.capacity, " + std::to_string(broker_.capacity()) + ", jobs waiting in all, or queues." +
                         name + ".capacity, " + std::to_string(own) + ", in '" + name + "'): retry later");
      }
      return error(SubmitError::Code::queue_full, "the queue is full (" + std::to_string(broker_.capacity()) +
                                                      " jobs waiting, queue.capacity): retry later");
    case Admitted::queue_full:
      return error(SubmitError::Code::queue_full, "the queue '" + name + "' is full (queues." + name + ".capacity, " +
                                                      std::to_string(own) + ", jobs waiting in it): retry later");
    case Admitted::duplicate:
    case Admitted::unique:  // answered as a duplicate before this is asked
      return error(SubmitError::Code::duplicate_id, "id '" + id + "' is already used by another job");
    case Admitted::unreplicated:
      return error(SubmitError::Code::backend_unavailable,
                   "job '" + id + "' reached Redis's master, but not redis.min_replicas_ack replicas in time: "
                   "a failover now could lose it; submit it again with the same id (a duplicate_id answer means it is kept)");
    case Admitted::backend_full:
      return error(SubmitError::Code::backend_full,
                   "the job queue's backend is out of memory (Redis's maxmemory): retry when jobs have ended");
    case Admitted::unavailable: break;
  }
  return error(SubmitError::Code::backend_unavailable, "the job queue's backend cannot be reached: retry later");
}

std::optional<SubmitError> Intake::accept(TaskPtr task, std::chrono::milliseconds delay, Submitted* duplicate) {
  const Gate gate(*this);
  if (!gate.open()) return error(SubmitError::Code::shutting_down, "the runtime is shutting down");
  const auto now = Clock::now();
  stamp(*task, delay, now);
  // [this, &task]: two pointers fit std::function's inline buffer, so
  // passing it allocates nothing on the submit path.
  const auto recorder = [this, &task] { return record(task); };
  if (!task->spec().unique) return refusal(broker_.admit(task, now + delay, now, recorder), task->id(), task->spec().queue);
  if (!broker_.keeps_unique_locks()) {
    if (auto holder = claim_unique(*task, now)) {
      if (duplicate != nullptr) *duplicate = duplicate_of(*holder, std::nullopt);
      return std::nullopt;
    }
    auto refused = refusal(broker_.admit(task, now + delay, now, recorder), task->id(), task->spec().queue);
    if (refused) release_unique(*task);
    return refused;
  }
  // The broker decides in the admission's own transaction.
  std::vector<Admission> one;
  one.push_back(Admission{task, now + delay, recorder});
  broker_.admit_many(one, now);
  if (one.front().result == Admitted::unique) {
    if (duplicate != nullptr) *duplicate = duplicate_of(one.front().existing, one.front().existing_state);
    return std::nullopt;
  }
  return refusal(one.front().result, task->id(), task->spec().queue);
}

std::optional<JobId> Intake::claim_unique(const Task& task, Clock::time_point now,
                                          const std::vector<Admission>* pending) {
  const UniqueLock* unique = task.spec().unique.get();
  if (unique == nullptr || broker_.keeps_unique_locks()) return std::nullopt;
  const auto known = [&](const JobId& id) {
    if (pending != nullptr &&
        std::any_of(pending->begin(), pending->end(), [&](const Admission& a) { return a.task->id() == id; })) {
      return true;
    }
    return store_.find(id) != nullptr;
  };
  return unique_locks_.claim(UniqueLocks::name(task.type(), unique->key), task.id(), now + unique->window, now, known);
}

void Intake::release_unique(const Task& task) {
  const UniqueLock* unique = task.spec().unique.get();
  if (unique == nullptr || broker_.keeps_unique_locks()) return;
  unique_locks_.release(UniqueLocks::name(task.type(), unique->key), task.id());
}

Submitted Intake::duplicate_of(const JobId& holder, std::optional<JobState> state) const {
  if (!state) {
    const TaskPtr task = store_.find(holder);
    state = task ? task->state() : JobState::queued;
  }
  Submitted out{holder, *state, std::nullopt};
  out.duplicate = true;
  return out;
}

std::vector<Submitted> Intake::submit_many(std::vector<JobSpec> specs) {
  std::vector<Submitted> out(specs.size());
  std::vector<Admission> batch;
  std::vector<std::size_t> slot;  // out's index of each batch entry
  batch.reserve(specs.size());
  slot.reserve(specs.size());
  const Gate gate(*this);
  const auto now = Clock::now();
  for (std::size_t i = 0; i < specs.size(); ++i) {
    JobSpec& spec = specs[i];
    if (!spec.children.empty()) {  // a flow is admitted on its own, whole
      out[i] = gate.open() ? submit_flow(std::move(spec))
                           : reject(error(SubmitError::Code::shutting_down, "the runtime is shutting down"));
      continue;
    }
    TypeEntry* type = types_.find(spec.type);
    std::shared_ptr<const TraceContext> trace;
    if (auto problem = check(spec, type, trace)) {
      out[i] = reject(std::move(*problem));
      continue;
    }
    if (!gate.open()) {
      out[i] = reject(error(SubmitError::Code::shutting_down, "the runtime is shutting down"));
      continue;
    }
    const auto delay = spec.delay;
    auto task = task_for(*type, std::move(spec), std::move(trace));
    stamp(*task, delay, now);
    if (auto holder = claim_unique(*task, now, &batch)) {
      out[i] = duplicate_of(*holder, std::nullopt);
      continue;
    }
    batch.push_back(Admission{std::move(task), now + delay, {}});
    // The entry's own task: batch was reserved whole, so it never moves.
    batch.back().record = [this, t = &batch.back().task] { return record(*t); };
    slot.push_back(i);
  }
  if (!batch.empty()) broker_.admit_many(batch, now);
  for (std::size_t k = 0; k < batch.size(); ++k) {
    const TaskPtr& task = batch[k].task;
    if (batch[k].result == Admitted::unique) {
      out[slot[k]] = duplicate_of(batch[k].existing, batch[k].existing_state);
    } else if (auto e = refusal(batch[k].result, task->id(), task->spec().queue)) {
      release_unique(*task);
      out[slot[k]] = reject(std::move(*e));
    } else {
      out[slot[k]] = Submitted{task->id(), batch[k].due > now ? JobState::scheduled : JobState::queued, std::nullopt};
    }
  }
  return out;
}

namespace {

// One job of a flow being admitted, in breadth-first order: a job's
// children are next to each other, after every job of the level above.
struct FlowNode {
  JobSpec spec;
  std::string path;       // "" for the root, "children[3].children[0]" below
  std::size_t parent = 0;  // index in the node list (the root: none)
  std::size_t index = 0;   // its place among its parent's children
  std::size_t depth = 0;
  std::size_t first_child = 0, child_count = 0;
  TypeEntry* type = nullptr;
  std::shared_ptr<const TraceContext> trace{};
  TaskPtr task{};
};

std::string at(const std::string& path, const std::string& what) { return path.empty() ? what : path + "." + what; }

SubmitError flow_error(SubmitError::Code code, std::string message) { return SubmitError{code, std::move(message)}; }

// The flow's jobs in breadth-first order, the root first; bounded by
// limits.flow_depth and limits.flow_children before anything else is read.
std::optional<SubmitError> flatten(JobSpec root, const InputLimits& limits, std::vector<FlowNode>& nodes) {
  std::size_t total = 0;  // counted first, so the list is made once (a node is large)
  std::vector<const JobSpec*> walk{&root};
  while (!walk.empty() && total <= limits.flow_children + 1) {
    const JobSpec* spec = walk.back();
    walk.pop_back();
    ++total;
    for (const JobSpec& child : spec->children) walk.push_back(&child);
  }
  nodes.reserve(std::min(total, limits.flow_children + 1));
  nodes.push_back(FlowNode{std::move(root), {}, 0, 0, 0, 0, 0});
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    std::vector<JobSpec> kids = std::move(nodes[i].spec.children);
    nodes[i].spec.children.clear();
    if (kids.empty()) continue;
    const std::string path = nodes[i].path;
    const std::size_t depth = nodes[i].depth;
    if (depth + 1 > limits.flow_depth) {
      return flow_error(SubmitError::Code::invalid, at(path, "children") + ": the flow is deeper than limits.flow_depth (" +
                                                        std::to_string(limits.flow_depth) + " levels of children)");
    }
    if (nodes.size() - 1 + kids.size() > limits.flow_children) {
      return flow_error(SubmitError::Code::invalid, at(path, "children") + ": the flow has more than limits.flow_children (" +
                                                        std::to_string(limits.flow_children) + ") jobs below its root");
    }
    nodes[i].first_child = nodes.size();
    nodes[i].child_count = kids.size();
    for (std::size_t k = 0; k < kids.size(); ++k) {
      nodes.push_back(FlowNode{std::move(kids[k]), at(path, "children[" + std::to_string(k) + "]"), i, k, depth + 1, 0, 0});
    }
  }
  return std::nullopt;
}

// Each job's place in the flow (TaskSpec::flow), its tasks made and named;
// a parent waits as waiting_children. `policies`: each spec's
// on_child_failure and parent_on_failure.
void link(std::vector<FlowNode>& nodes, const std::vector<std::pair<ChildFailure, std::optional<ChildFailure>>>& policies) {
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    FlowNode& n = nodes[i];
    auto flow = std::make_shared<FlowLink>();
    if (i > 0) {
      const FlowNode& up = nodes[n.parent];
      flow->parent_id = up.task->id();
      flow->parent_queue = up.task->spec().queue;
      flow->policy = policies[i].second.value_or(policies[n.parent].first);
      flow->index = n.index;
      flow->parent = up.task;
      flow->root_id = nodes[0].task->id();
      flow->root_queue = nodes[0].task->spec().queue;
    }
    if (n.child_count > 0) {
      flow->on_child_failure = policies[i].first;
      for (std::size_t k = 0; k < n.child_count; ++k) flow->children.push_back(nodes[n.first_child + k].task->id());
      MutexLock lock(flow->mutex);
      flow->tally.ended.resize(n.child_count);
      flow->tally.removed.resize(n.child_count);
      flow->tally.counts.total = n.child_count;
      TaskAccess::set_state(*n.task, JobState::waiting_children);
    }
    TaskAccess::spec(*n.task).flow = std::move(flow);
  }
}

}  // namespace

Submitted Intake::submit_flow(JobSpec root) {
  using Code = SubmitError::Code;
  std::vector<FlowNode> nodes;
  if (auto problem = flatten(std::move(root), options_.limits, nodes)) return reject(std::move(*problem));
  // Every job checked as a submit would check it, its errors named by its path.
  for (FlowNode& n : nodes) {
    n.type = types_.find(n.spec.type);
    if (auto problem = check(n.spec, n.type, n.trace)) {
      if (n.path.empty()) return reject(std::move(*problem));
      std::string what = problem->code == Code::unknown_type ? "type: " + problem->message : problem->message;
      return reject(error(problem->code, at(n.path, what)));
    }
    if (n.child_count > 0 && !n.spec.payload.is_null() && !n.spec.payload.is_object()) {
      return reject(error(Code::invalid, at(n.path, "payload") +
                                             ": expected an object, or none, for a job with children (it gets \"children\")"));
    }
  }
  const Gate gate(*this);
  if (!gate.open()) return reject(error(Code::shutting_down, "the runtime is shutting down"));
  const auto now = Clock::now();
  std::unordered_set<std::string> ids;
  std::vector<std::chrono::milliseconds> delays(nodes.size());
  std::vector<std::pair<ChildFailure, std::optional<ChildFailure>>> policies(nodes.size());
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    FlowNode& n = nodes[i];
    delays[i] = n.spec.delay;
    policies[i] = {n.spec.on_child_failure, n.spec.parent_on_failure};
    n.task = task_for(*n.type, std::move(n.spec), std::move(n.trace));
    TaskSpec& s = TaskAccess::spec(*n.task);
    if (i > 0 && s.id.empty()) s.id = child_id(nodes[n.parent].task->id(), n.index, options_.limits.id_length);
    stamp(*n.task, delays[i], now);
    if (!ids.insert(n.task->id()).second || store_.find(n.task->id()) != nullptr) {
      return reject(error(Code::duplicate_id, at(n.path, "id") + ": '" + n.task->id() + "' is already used by another job"));
    }
  }
  link(nodes, policies);
  std::vector<TaskPtr> tasks;
  std::vector<std::string> paths;
  tasks.reserve(nodes.size());
  paths.reserve(nodes.size());
  for (FlowNode& n : nodes) {
    tasks.push_back(std::move(n.task));
    paths.push_back(std::move(n.path));
  }
  return admit_tree(tasks, paths, delays, now);
}

// Claims the flow's unique keys (where the broker keeps none), then admits
// it whole; a refusal names the job's path, and whatever was recorded ends.
Submitted Intake::admit_tree(const std::vector<TaskPtr>& tasks, const std::vector<std::string>& paths,
                             const std::vector<std::chrono::milliseconds>& delays, Clock::time_point now) {
  using Code = SubmitError::Code;
  std::vector<Admission> batch;
  batch.reserve(tasks.size());
  bool root_recorded = false;
  const auto unclaim = [&] {
    for (const Admission& a : batch) release_unique(*a.task);
  };
  const auto held = [&](std::size_t i, const JobId& holder) {
    return reject(error(Code::duplicate_id, at(paths[i], "unique_key") + ": held by job " + holder +
                                                " until its window ends (unique_for_ms)"));
  };
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    if (auto holder = claim_unique(*tasks[i], now, &batch)) {
      unclaim();
      return i == 0 ? duplicate_of(*holder, std::nullopt) : held(i, *holder);
    }
    batch.push_back(Admission{tasks[i], now + delays[i], {}});
    if (i == 0) {
      batch.back().record = [this, t = &batch.back().task, &root_recorded] { return root_recorded = record(*t); };
    } else {
      batch.back().record = [this, t = &batch.back().task] { return record(*t); };
    }
  }
  broker_.admit_flow(batch, now);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Admission& a = batch[i];
    if (a.result == Admitted::accepted) continue;
    unclaim();
    // Jobs recorded before the refusal end at once (the root's cancel takes them all).
    if (root_recorded) completion_.cancel(tasks[0]);
    if (a.result == Admitted::unique) return i == 0 ? duplicate_of(a.existing, a.existing_state) : held(i, a.existing);
    if (a.result == Admitted::duplicate) {
      return reject(error(Code::duplicate_id, at(paths[i], "id") + ": '" + a.task->id() + "' is already used by another job"));
    }
    auto refused = refusal(a.result, a.task->id(), a.task->spec().queue);
    if (!paths[i].empty()) refused->message = paths[i] + ": " + refused->message;
    return reject(std::move(*refused));
  }
  return Submitted{tasks[0]->id(), JobState::waiting_children, std::nullopt};
}

std::shared_ptr<Task> Intake::make_task(TypeEntry& type, JobId id, int priority, int max_attempts,
                                        std::chrono::milliseconds timeout, nlohmann::json payload) const {
  auto task = std::allocate_shared<HandlerTask>(PoolAllocator<HandlerTask>{}, registry_, *type.handler);
  TaskSpec& s = TaskAccess::spec(*task);
  s.id = std::move(id);
  s.type = type.name;
  s.priority = priority;
  s.max_attempts = max_attempts;
  s.timeout = timeout.count() > 0 ? timeout : type.timeout;
  s.hard_timeout = type.hard_timeout;
  s.stored = true;
  s.payload = std::move(payload);
  TaskAccess::set_type_entry(*task, &type);
  return task;
}

std::shared_ptr<Task> Intake::task_for(TypeEntry& type, JobSpec&& spec,
                                       std::shared_ptr<const TraceContext> trace) const {
  auto task = make_task(type, std::move(spec.id), spec.priority, spec.max_attempts.value_or(type.policy.max_attempts),
                        spec.timeout, std::move(spec.payload));
  TaskAccess::spec(*task).trace = std::move(trace);
  if (spec.queue != kDefaultQueue) TaskAccess::spec(*task).queue = std::move(spec.queue);
  if (!spec.then.is_null()) TaskAccess::spec(*task).then = std::make_shared<nlohmann::json>(std::move(spec.then));
  if (!spec.unique_key.empty()) {
    TaskAccess::spec(*task).unique =
        std::make_shared<const UniqueLock>(UniqueLock{std::move(spec.unique_key), spec.unique_for});
  }
  return task;
}

std::shared_ptr<Task> Intake::rebuild(Stored job) const {
  TypeEntry* type = types_.find(job.type);
  if (type == nullptr) return nullptr;
  auto task = make_task(*type, std::move(job.id), job.priority, job.max_attempts, job.timeout, std::move(job.payload));
  TaskAccess::spec(*task).seq = job.seq;
  if (job.queue != kDefaultQueue) TaskAccess::spec(*task).queue = std::move(job.queue);
  TaskAccess::spec(*task).trace = std::move(job.trace);
  TaskAccess::spec(*task).then = std::move(job.then);
  TaskAccess::spec(*task).flow = std::move(job.flow);
  TaskRecord& r = TaskAccess::record_unlocked(*task);
  r.attempts = job.attempt - 1;  // Attempt::start counts the one it begins
  r.fence = job.fence > 0 ? job.fence - 1 : 0;  // and the lease it runs under
  r.created_at = job.created_at;
  return task;
}

RequeueResult Intake::requeue(const TaskPtr& task) {
  if (task->state() != JobState::failed) return RequeueResult::not_failed;
  const Gate gate(*this);
  if (!gate.open()) return RequeueResult::shutting_down;
  if (!broker_.try_reserve(*task)) return RequeueResult::queue_full;
  const bool reset = TaskAccess::with_record(*task, [&](TaskRecord& r) {
    if (!TaskAccess::transition(*task, JobState::failed, JobState::queued)) return false;
    r.attempts = 0;
    r.error.reset();
    r.exception = nullptr;
    r.cleanup_errors.clear();
    r.stuck_trace.reset();
    r.cancel_requested = false;
    r.finished_at.reset();
    return true;
  });
  if (!reset) {
    broker_.unreserve(*task);
    return RequeueResult::not_failed;
  }
  completion_.count_accepted();
  completion_.events().job(*task, JobState::queued, 0);
  if (const FlowLink* flow = task->spec().flow.get()) flow->retained.store(false, std::memory_order_release);  // it ends again
  const auto now = Clock::now();
  TaskAccess::set_ready_at(*task, now);
  broker_.enqueue(task, now, now);
  return RequeueResult::requeued;
}

void Intake::close() {
  open_.store(false, std::memory_order_seq_cst);
  while (inside_.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();
}

IntakeCounts Intake::counts() const {
  IntakeCounts c;
  c.submitted = submitted_.load();
  c.rejected = rejected_.load();
  for (std::size_t i = 0; i < rejected_by_code_.size(); ++i) {
    c.rejected_by_code[std::string(to_string(static_cast<SubmitError::Code>(i)))] = rejected_by_code_[i].load();
  }
  return c;
}

}  // namespace bulwark::detail
