#include "redis/redis_job_store.hpp"

#include <algorithm>

#include <charconv>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "bulwark/json_input.hpp"
#include "redis/scripts.hpp"

namespace bulwark::detail::redis {

namespace {

long long number(const std::map<std::string, std::string>& h, const char* key, long long fallback = 0) {
  auto it = h.find(key);
  if (it == h.end()) return fallback;
  long long v = fallback;
  std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  return v;
}

WallClock::time_point at_ms(long long ms) { return WallClock::time_point(std::chrono::milliseconds(ms)); }

nlohmann::json parsed(const std::string& text) {
  try {
    return parse_json(text, 1000);
  } catch (const std::exception&) {
    return nullptr;  // not ours to fail on: show the record without it
  }
}

void apply_outcome(JobRecord& r, const std::string& text) {
  const nlohmann::json o = parsed(text);
  if (!o.is_object()) return;
  if (auto it = o.find("result"); it != o.end()) r.result = *it;
  if (auto it = o.find("error"); it != o.end() && it->is_object()) r.error = failure_from_json(*it);
  if (auto it = o.find("duration_ms"); it != o.end() && it->is_number()) r.duration_ms = it->get<double>();
  if (auto it = o.find("span_id"); it != o.end() && it->is_string()) r.span_id = it->get<std::string>();
  if (auto it = o.find("cleanup_errors"); it != o.end() && it->is_array()) {
    for (const auto& f : *it) r.cleanup_errors.push_back(failure_from_json(f));
  }
}

// Counts by state: the sets for the waiting, running and dead; the done
// set's split into succeeded and cancelled from the counts the scripts keep.

}  // namespace

JobRecord record_from_hash(const Value& hgetall) {
  std::map<std::string, std::string> h;
  for (std::size_t i = 0; i + 1 < hgetall.elements.size(); i += 2) h[hgetall.elements[i].str] = hgetall.elements[i + 1].str;
  JobRecord r;
  r.id = h["id"];
  r.type = h["type"];
  if (const std::string& queue = h["queue"]; !queue.empty()) r.queue = queue;
  r.unique_key = h["unique_key"];
  if (const std::string& progress = h["progress"]; !progress.empty()) {
    const nlohmann::json p = nlohmann::json::parse(progress, nullptr, false);
    if (p.is_object() && p.value("fraction", nlohmann::json()).is_number()) {
      r.progress = JobProgress{p["fraction"].get<double>(), p.value("note", ""),
                               at_ms(p.value("at_ms", 0LL))};
    }
  }
  if (const std::string& then = h["then"]; !then.empty()) {
    const nlohmann::json spec = nlohmann::json::parse(then, nullptr, false);  // written by bulwark; tolerated if not
    if (spec.is_object()) {
      r.then_type = spec.value("type", "");
      r.then_id = spec.value("id", "");
    }
  }
  r.seq = static_cast<std::uint64_t>(number(h, "seq"));
  r.priority = static_cast<int>(number(h, "priority"));
  r.max_attempts = static_cast<int>(number(h, "max_attempts", 1));
  r.attempts = static_cast<int>(number(h, "attempts"));
  r.payload = parsed(h["payload"]);
  r.state = parse_job_state(h["state"]).value_or(JobState::queued);
  r.created_at = at_ms(number(h, "created_ms"));
  if (h.count("started_ms")) r.started_at = at_ms(number(h, "started_ms"));
  if (h.count("finished_ms")) r.finished_at = at_ms(number(h, "finished_ms"));
  if (h.count("outcome")) apply_outcome(r, h["outcome"]);
  if (h.count("traceparent")) r.trace = TraceContext::parse(h["traceparent"], h["tracestate"]);
  if (h.count("parent")) r.parent = h["parent"];
  if (h.count("kids_total")) {
    ChildCounts c;
    c.total = static_cast<std::size_t>(number(h, "kids_total"));
    c.succeeded = static_cast<std::size_t>(number(h, "kids_succeeded"));
    c.failed = static_cast<std::size_t>(number(h, "kids_failed"));
    c.cancelled = static_cast<std::size_t>(number(h, "kids_cancelled"));
    r.children = c;
  }
  return r;
}

RedisJobStore::RedisJobStore(const BrokerOptions& options, RedisBroker* broker)
    : options_(options), parts_(options.redis, options.ns), keys_(parts_.base()), broker_(broker) {}

std::optional<std::pair<std::string, Value>> RedisJobStore::probe(const JobId& id, const char* command) const {
  const auto ask = [&](const std::string& queue) -> std::optional<std::pair<std::string, Value>> {
    Value v = parts_.pool(queue).command({command, parts_.keys(queue).job(id)});
    const bool found = v.type == Value::Type::integer ? v.integer != 0 : !v.elements.empty();
    if (!found) return std::nullopt;
    return std::pair(queue, std::move(v));
  };
  if (auto in_default = ask("")) return in_default;  // most jobs; no list of queues needed
  const std::vector<std::string> names = parts_.names();
  for (std::size_t i = 1; i < names.size(); ++i) {
    if (auto found = ask(names[i])) return found;
  }
  return std::nullopt;
}

std::optional<std::string> RedisJobStore::find_queue(const JobId& id) const {
  auto found = probe(id, "EXISTS");
  return found ? std::optional(found->first) : std::nullopt;
}

std::optional<JobRecord> RedisJobStore::record(const JobId& id) const {
  auto found = probe(id, "HGETALL");
  return found ? std::optional(record_from_hash(found->second)) : std::nullopt;
}

std::vector<JobRecord> RedisJobStore::newest(const Keys& keys, const StoreQuery& query, long long before,
                                             std::size_t want) const {
  // "(n": below n, exclusive. Built with append: GCC 12's -Wrestrict
  // misfires on "(" + std::string here.
  const auto below = [](const std::string& n) { return std::string(1, '(').append(n); };
  std::string max = before > 0 ? below(std::to_string(before)) : std::string("+inf");
  const std::size_t chunk = std::max<std::size_t>(want, 100);
  Pool& pool = parts_.pool(keys.queue);
  std::vector<JobRecord> out;
  for (;;) {
    const Value ids = pool.command({"ZREVRANGEBYSCORE", keys.index, max, "-inf", "WITHSCORES", "LIMIT", "0",
                                    std::to_string(chunk)});
    if (ids.elements.empty()) return out;
    std::vector<std::vector<std::string>> reads;
    for (std::size_t i = 0; i < ids.elements.size(); i += 2) reads.push_back({"HGETALL", keys.job(ids.elements[i].str)});
    const std::vector<Value> hashes = pool.with([&](Connection& c) { return c.pipeline(reads); });
    for (const Value& h : hashes) {
      if (h.elements.empty()) continue;  // forgotten meanwhile
      JobRecord r = record_from_hash(h);
      if (query.state && r.state != *query.state) continue;
      if (!query.type.empty() && r.type != query.type) continue;
      out.push_back(std::move(r));
      if (out.size() == want) return out;
    }
    max = below(ids.elements[ids.elements.size() - 1].str);
    if (ids.elements.size() / 2 < chunk) return out;
  }
}

// Newest first from each queue's submit index, merged by submit sequence;
// the cursor is the sequence number of the last job returned.
std::optional<StorePage> RedisJobStore::list(const StoreQuery& query) const {
  long long before = 0;
  if (!query.cursor.empty()) {
    const char* end = query.cursor.data() + query.cursor.size();
    auto [ptr, ec] = std::from_chars(query.cursor.data(), end, before);
    if (ec != std::errc() || ptr != end || before <= 0) return std::nullopt;
  }
  std::vector<std::string> queues;
  if (!query.queue.empty()) {
    queues.push_back(query.queue == kDefaultQueue ? std::string() : query.queue);
  } else {
    queues = parts_.names();
  }
  std::vector<JobRecord> all;
  for (const std::string& queue : queues) {
    std::vector<JobRecord> some = newest(parts_.keys(queue), query, before, query.limit + 1);
    all.insert(all.end(), std::make_move_iterator(some.begin()), std::make_move_iterator(some.end()));
  }
  std::sort(all.begin(), all.end(), [](const JobRecord& a, const JobRecord& b) { return a.seq > b.seq; });
  StorePage page;
  if (all.size() > query.limit) {
    all.resize(query.limit);
    if (!all.empty()) page.next_cursor = std::to_string(all.back().seq);
  }
  page.jobs = std::move(all);
  return page;
}

std::map<JobState, std::size_t> RedisJobStore::count_by_state() const {
  const JobState order[] = {JobState::queued,    JobState::scheduled, JobState::running,         JobState::failed,
                            JobState::succeeded, JobState::cancelled, JobState::waiting_children};
  std::map<JobState, std::size_t> out;
  for (const JobState s : order) out[s] = 0;
  for (const std::string& queue : parts_.names()) {
    const Keys& k = parts_.keys(queue);
    const Value v =
        parts_.pool(queue).eval(kCounts, {k.leased, k.dead, k.counts, k.held, k.ready, k.scheduled, k.waiting}, {});
    for (std::size_t i = 0; i < 7 && i < v.elements.size(); ++i) {
      out[order[i]] += static_cast<std::size_t>(v.elements[i].as_integer());
    }
  }
  return out;
}

std::vector<QueueProcess> RedisJobStore::processes(const std::string& self) const {
  Pool& pool = parts_.pool("");
  const Value ids = pool.command({"ZRANGE", keys_.processes, "0", "-1", "WITHSCORES"});
  std::vector<std::vector<std::string>> reads;
  for (std::size_t i = 0; i + 1 < ids.elements.size(); i += 2) reads.push_back({"HGETALL", keys_.process(ids.elements[i].str)});
  const std::vector<Value> hashes = pool.with([&](Connection& c) { return c.pipeline(reads); });
  const long long now = epoch_ms(Clock::now());
  std::vector<QueueProcess> out;
  for (std::size_t i = 0; i < hashes.size(); ++i) {
    std::map<std::string, std::string> h;
    for (std::size_t k = 0; k + 1 < hashes[i].elements.size(); k += 2) h[hashes[i].elements[k].str] = hashes[i].elements[k + 1].str;
    QueueProcess p;
    p.id = ids.elements[2 * i].str;
    p.host = h["host"];
    p.pid = static_cast<int>(number(h, "pid"));
    p.workers = static_cast<unsigned>(number(h, "workers"));
    for (std::size_t at = 0; at < h["queues"].size();) {
      const std::size_t comma = std::min(h["queues"].find(',', at), h["queues"].size());
      p.queues.push_back(h["queues"].substr(at, comma - at));
      at = comma + 1;
    }
    p.started_at = at_ms(number(h, "started_ms"));
    const long long seen = ids.elements[2 * i + 1].as_integer();
    p.last_seen = at_ms(seen);
    p.alive = now - seen < options_.lease.count();
    p.self = p.id == self;
    if (auto it = h.find("health"); it != h.end()) {
      try {
        p.health = nlohmann::ordered_json::parse(it->second);
        p.verdict = p.health.value("verdict", "");
      } catch (const nlohmann::json::exception&) {
        // not ours to fail on: list the process without it
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

// The children's ids are listed with the parent (<part>kids:<id>); each
// child's record is wherever its queue lives.
std::optional<std::pair<std::vector<JobRecord>, std::size_t>> RedisJobStore::children_of(const JobId& id,
                                                                                         std::size_t offset,
                                                                                         std::size_t limit) const {
  const std::optional<std::string> queue = find_queue(id);
  if (!queue) return std::nullopt;
  std::pair<std::vector<JobRecord>, std::size_t> out{{}, 0};
  if (limit == 0) limit = 1;
  const std::string kids = parts_.keys(*queue).prefix + "kids:" + id;
  const std::vector<Value> got = parts_.pool(*queue).with([&](Connection& c) {
    return c.pipeline({{"LLEN", kids},
                       {"LRANGE", kids, std::to_string(offset), std::to_string(offset + limit - 1)}});
  });
  if (got.size() != 2) return out;
  out.second = static_cast<std::size_t>(got[0].as_integer());
  for (const Value& child : got[1].elements) {
    if (auto r = record(child.str)) out.first.push_back(std::move(*r));
  }
  return out;
}

CancelResult RedisJobStore::cancel(const JobId& id) {
  const std::optional<std::string> queue = find_queue(id);
  if (!queue) return CancelResult::not_found;
  const long long r = cancel_job(parts_, options_, *queue, id);
  switch (r) {
    case 1:
    case 4: return CancelResult::cancelled;  // 4: a flow's parent, its tree with it
    case 2:
      if (broker_ != nullptr) broker_->stop_local(id);  // at once if it runs here; other processes poll
      return CancelResult::stop_requested;
    case 3: return CancelResult::already_terminal;
    default: return CancelResult::not_found;
  }
}

long long RedisJobStore::waiting_elsewhere(const std::string& queue) const {
  long long n = 0;
  for (const std::string& other : parts_.names()) {
    if (other == queue) continue;
    n += parts_.pool(other).with([&](Connection& c) { return waiting_in(c, parts_.keys(other)); });
  }
  return n;
}

std::vector<QueueDepth> RedisJobStore::queue_depths() const {
  std::vector<std::string> names = parts_.names();
  const Value paused = parts_.pool("").command({"HKEYS", keys_.queues_paused});
  std::set<std::string> paused_names;
  for (const Value& p : paused.elements) {
    paused_names.insert(p.str);
    // A queue paused before any job named it is listed too (it has no jobs).
    const std::string queue = p.str == kDefaultQueue ? std::string() : p.str;
    if (std::find(names.begin(), names.end(), queue) == names.end()) names.push_back(queue);
  }
  std::vector<QueueDepth> out;
  for (const std::string& queue : names) {
    const Keys& k = parts_.keys(queue);
    const std::vector<Value> c = parts_.pool(queue).with([&](Connection& conn) {
      return conn.pipeline({{"ZCARD", k.ready}, {"ZCARD", k.scheduled}, {"ZCARD", k.held}});
    });
    const std::string name = queue.empty() ? std::string(kDefaultQueue) : queue;
    const auto ready = static_cast<std::size_t>(c.at(0).as_integer());
    out.push_back(QueueDepth{name, ready, ready + static_cast<std::size_t>(c.at(1).as_integer() + c.at(2).as_integer()),
                             paused_names.count(name) != 0});
  }
  std::sort(out.begin(), out.end(), [](const QueueDepth& a, const QueueDepth& b) { return a.name < b.name; });
  return out;
}

RequeueResult RedisJobStore::requeue(const JobId& id) {
  const std::optional<std::string> queue = find_queue(id);
  if (!queue) return RequeueResult::not_found;
  const Keys& k = parts_.keys(*queue);
  const long long r = parts_.pool(*queue)
                          .eval(kRequeue, {k.job(id), k.dead, k.ready, k.scheduled, k.held},
                                {id, std::to_string(options_.capacity), std::to_string(waiting_elsewhere(*queue))})
                          .as_integer();
  switch (r) {
    case 1: return RequeueResult::requeued;
    case -1: return RequeueResult::not_failed;
    case -2: return RequeueResult::queue_full;
    default: return RequeueResult::not_found;
  }
}

}  // namespace bulwark::detail::redis
