#include "redis/redis_backend.hpp"

#include "core/flow_link.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

#include "bulwark/json_input.hpp"
#include "core/config_file.hpp"
#include "runtime/clock.hpp"
#include "runtime/completion.hpp"
#include "runtime/intake.hpp"
#include "runtime/reporter.hpp"
#include "runtime/type_table.hpp"

namespace bulwark::detail::redis {

namespace {

// A mounted secret: the whole file, less one line break at its end.
std::string read_password_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("redis.password_file: cannot read " + path + ": " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (text.empty()) throw ConfigError("redis.password_file: " + path + " is empty");
  return text;
}

}  // namespace

ConnectOptions connect_options(const RedisOptions& r) {
  std::string problem;
  auto address = parse_url(r.url, &problem);
  if (!address) throw ConfigError("redis.url: " + problem);
  ConnectOptions c;
  c.address = std::move(*address);
  // Given outside the URL, each wins over the URL's.
  if (!r.username.empty()) c.address.username = r.username;
  if (!r.password.empty()) c.address.password = r.password;
  if (!r.password_file.empty()) c.address.password = read_password_file(r.password_file);
  c.tls = TlsOptions{r.tls.enabled || c.address.tls, r.tls.ca_file, r.tls.cert_file, r.tls.key_file,
                     r.tls.server_name, r.tls.verify};
  c.address.tls = c.tls.enabled;
  if (c.tls.enabled && !c.address.unix_path.empty()) {
    throw ConfigError("redis.tls.enabled: TLS is for TCP; redis.url names a unix socket");
  }
  if (!r.sentinel.master.empty()) {
    SentinelOptions s{r.sentinel.master, {}, r.sentinel.username, r.sentinel.password};
    for (const std::string& a : r.sentinel.addresses) {
      auto host_port = detail::host_and_port(a);  // checked when the configuration was read
      if (!host_port) throw ConfigError("redis.sentinel.addresses: expected host:port, got '" + a + "'");
      s.addresses.push_back(std::move(*host_port));
    }
    c.sentinel = std::move(s);
  }
  std::string where = c.sentinel ? "sentinel master '" + c.sentinel->master + "'" : c.address.text();
  if (!r.cluster.addresses.empty()) {
    if (!c.address.unix_path.empty()) throw ConfigError("redis.cluster.addresses: a cluster is reached over TCP; redis.url names a unix socket");
    if (c.address.db != 0) throw ConfigError("redis.url: a Redis Cluster has only database 0, the URL names " + std::to_string(c.address.db));
    ClusterOptions cluster{{}, "{" + r.ns + "}"};  // every key of the namespace shares its hash tag
    for (const std::string& a : r.cluster.addresses) {
      auto host_port = detail::host_and_port(a);  // checked when the configuration was read
      if (!host_port) throw ConfigError("redis.cluster.addresses: expected host:port, got '" + a + "'");
      cluster.addresses.push_back(std::move(*host_port));
    }
    where = "cluster " + r.cluster.addresses.front() + (r.cluster.addresses.size() > 1 ? ",…" : "");
    c.cluster = std::move(cluster);
  }
  c.connect_timeout = r.connect_timeout;
  c.command_timeout = r.command_timeout;
  c.status = std::make_shared<Status>(std::move(where));
  return c;
}

BrokerOptions broker_options(const RuntimeOptions& o) {
  BrokerOptions b;
  b.redis = connect_options(o.redis);
  b.ns = o.redis.ns;
  b.lease = o.redis.lease;
  b.min_replicas_ack = o.redis.min_replicas_ack;
  b.replica_ack_timeout = o.redis.replica_ack_timeout;
  b.workers = o.redis.consume ? o.effective_workers() : 0;  // 0: fetches nothing
  b.prefetch = o.redis.prefetch.value_or(b.workers);
  b.capacity = o.queue_capacity;
  b.max_retries = o.effective_max_concurrent_retries();
  b.retry_priority_offset = o.recovery.priority_offset;
  b.keep_finished = o.retention_max_finished;
  b.keep_dead = o.retention_max_dead;
  b.finished_ttl = o.retention_finished_ttl;
  b.dead_ttl = o.retention_dead_ttl;
  if (!o.queues.empty()) {
    b.queues.clear();
    for (const auto& [name, q] : o.queues) b.queues.push_back({name, q.weight, q.capacity});
    std::stable_sort(b.queues.begin(), b.queues.end(), [](const auto& a, const auto& c) { return a.weight > c.weight; });
  }
  b.strict = o.queue_strict;
  return b;
}

RedisBackend::RedisBackend(const RuntimeOptions& options, std::string owner)
    : options_(logged_in(broker_options(options))),
      json_depth_(static_cast<int>(options.limits.json_depth)),
      broker_(options_, std::move(owner), [this](const FetchedJob& f) { return build(f); }),
      store_(options_, &broker_),
      schedules_(options_.redis, options_.ns),
      events_buffer_(options.events_buffer) {}

// A login Redis refuses will not mend by waiting: the runtime does not
// start. A Redis that cannot be reached now may come: the feeder waits.
BrokerOptions RedisBackend::logged_in(BrokerOptions options) {
  std::unique_ptr<Connection> c;
  try {
    c = std::make_unique<Connection>(options.redis);
  } catch (const RedisError& e) {
    if (e.login()) throw ConfigError(e.what());  // names the URL and the user
    return options;
  }
  try {
    c->command({"PING"});
  } catch (const RedisError& e) {
    if (!e.login()) return options;
    const bool none = options.redis.address.password.empty();
    throw ConfigError("redis " + options.redis.address.text() + ": " +
                      (none ? "Redis asks for a login (redis.password, or the URL's user:password@): " : "") + e.what());
  }
  return options;
}

RedisBackend::~RedisBackend() {
  sentinel_watch_.reset();
  broker_.close();
  if (end_feed_) end_feed_->stop();
  event_feed_.reset();
}

// The task of a job fetched from Redis, as the intake builds every task;
// null if this process does not run its type.
std::shared_ptr<Task> RedisBackend::build(const FetchedJob& f) const {
  Intake::Stored job{f.id, f.type, f.queue, parse_json(f.payload, json_depth_), f.priority,
                     f.max_attempts, std::chrono::milliseconds(f.timeout_ms),
                     static_cast<std::uint64_t>(f.seq), f.attempt,
                     WallClock::time_point(std::chrono::milliseconds(f.created_ms))};
  job.fence = f.fence;
  if (!f.traceparent.empty()) {
    if (auto trace = TraceContext::parse(f.traceparent, f.tracestate)) {
      job.trace = std::make_shared<const TraceContext>(std::move(*trace));
    }
  }
  if (!f.then.empty()) {
    try {
      job.then = std::make_shared<nlohmann::json>(parse_json(f.then, json_depth_));
    } catch (const InputError&) {
      // Written by a bulwark process from a checked spec: not expected.
      host().reporter.log(LogLevel::error, "job " + f.id + ": its follow-up spec in Redis is not JSON; ignored");
    }
  }
  if (!f.parent.empty() || f.children) job.flow = flow_of(f);
  return host().intake.rebuild(std::move(job));
}

// A fetched job's place in its flow: its parent and, for a parent, how
// its children ended (the list its handler sees, and their counts).
std::shared_ptr<FlowLink> RedisBackend::flow_of(const FetchedJob& f) const {
  auto link = std::make_shared<FlowLink>();
  link->parent_id = f.parent;
  link->policy = parse_child_failure(f.policy).value_or(ChildFailure::fail);
  if (!f.children) return link;
  auto list = std::make_shared<nlohmann::json>(nlohmann::json::array());
  ChildCounts counts;
  for (const std::string& text : *f.children) {
    nlohmann::json e;
    try {
      e = parse_json(text, json_depth_);
    } catch (const InputError&) {
      continue;  // written by a bulwark process: not expected
    }
    const auto child = child_outcome_from_json(e);
    if (!child) continue;
    link->children.push_back(child->id);
    ++counts.total;
    if (child->state == JobState::succeeded) ++counts.succeeded;
    if (child->state == JobState::failed) ++counts.failed;
    if (child->state == JobState::cancelled) ++counts.cancelled;
    if (!e.value("removed", false)) list->push_back(to_json(*child));
  }
  MutexLock lock(link->mutex);
  link->tally.counts = counts;
  link->tally.settled = true;
  link->outcomes = std::move(list);
  return link;
}

void RedisBackend::attached() {
  // Types paused through another process (or before this one started).
  broker_.set_on_paused([this](const std::set<std::string>& paused, std::uint64_t epoch) {
    MutexLock lock(pause_mutex_);
    if (broker_.pause_epoch() != epoch) return;  // a pause or resume here came after the read
    host().types.for_each([&](TypeEntry& t) { host().apply_paused(t, paused.count(t.name) != 0); });
  });
  // The heartbeat carries this process's health for GET /v1/workers elsewhere.
  broker_.set_describe(host().describe);
  broker_.set_reporter(host().reporter);
  if (options_.redis.tls.enabled && !options_.redis.tls.verify) {
    host().reporter.log(LogLevel::warn, "redis " + options_.redis.address.text() +
                                            ": redis.tls.verify is false: any certificate is accepted, so anyone "
                                            "between here and Redis can read and change the queue");
  }
  // One event stream for the queue: every process's events, in one order.
  if (events_buffer_ > 0) {
    event_feed_ =
        std::make_unique<EventFeed>(options_, broker_.owner(), events_buffer_, host().events, host().reporter);
  }
  // Taking a lease over is only detection: the lost attempt ends as every
  // failed attempt ends.
  broker_.set_on_lease_lost([this](Lease lease, const LostLease& lost) {
    std::string message = "the lease of process " + lost.holder + " expired while it ran attempt " +
                          std::to_string(lost.attempt) + ": it died or stalled";
    if (lost.holder_seen_ms > 0) {
      message += " (last seen " + format_iso8601(WallClock::time_point(std::chrono::milliseconds(lost.holder_seen_ms))) + ")";
    }
    message += "; taken over by process " + broker_.owner();
    host().completion.lease_lost(std::move(lease), lost.attempt, make_failure(FailureKind::lease_lost, std::move(message)));
  });
}

void RedisBackend::start() {
  if (options_.redis.sentinel) {
    sentinel_watch_ = std::make_unique<SentinelWatch>(options_.redis);
    sentinel_watch_->start();
  }
  broker_.start();
  if (event_feed_) event_feed_->start();
}

CancelResult RedisBackend::cancel(const JobId& id) {
  const CancelResult result = store_.cancel(id);
  if (result == CancelResult::cancelled) {  // it ended in Redis, not in an attempt here
    if (auto record = store_.record(id)) host().completion.ended_elsewhere(*record);
  }
  return result;
}

// The shared state decides: this process's heartbeat may have applied it
// already. Under pause_mutex_, so a heartbeat's older view is not applied
// after this.
PauseResult RedisBackend::set_paused(TypeEntry& type, bool paused) {
  MutexLock lock(pause_mutex_);
  bool changed = false;
  try {
    changed = broker_.set_paused(type.name, paused);
  } catch (const RedisError&) {
    return PauseResult::unavailable;
  }
  host().apply_paused(type, paused);
  return changed ? PauseResult::changed : PauseResult::unchanged;
}

PauseResult RedisBackend::set_queue_paused(const std::string& name, bool paused) {
  try {
    return broker_.set_queue_paused(name, paused) ? PauseResult::changed : PauseResult::unchanged;
  } catch (const RedisError&) {
    return PauseResult::unavailable;
  }
}

// The shared queue is idle when nothing waits or runs in Redis, and this
// process has nothing left to end or to ack.
bool RedisBackend::wait_idle(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    try {
      auto counts = store_.count_by_state();
      if (counts[JobState::queued] + counts[JobState::scheduled] + counts[JobState::running] == 0 &&
          broker_.pending_acks() == 0) {
        return true;
      }
    } catch (const RedisError&) {
      // unreachable now: keep waiting
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::size_t RedisBackend::waiting(const std::map<JobState, std::size_t>& by_state) const {
  const auto count = [&](JobState s) {
    auto it = by_state.find(s);
    return it == by_state.end() ? std::size_t{0} : it->second;
  };
  return count(JobState::queued) + count(JobState::scheduled);
}

void RedisBackend::note_progress(const Task& task, const JobProgress& progress) {
  if (task.spec().stored) broker_.note_progress(task.id(), progress);
}

void RedisBackend::follow_ends(EndListener listener, Wanted wanted) {
  end_feed_ = std::make_unique<EndFeed>(options_, std::move(listener), std::move(wanted));
  end_feed_->start();  // before the first submit can end
}

}  // namespace bulwark::detail::redis
