#include "redis/redis_job_store.hpp"

#include <algorithm>

#include <charconv>
#include <map>

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
  return r;
}

RedisJobStore::RedisJobStore(const BrokerOptions& options, RedisBroker* broker)
    : options_(options),
      keys_(options.ns),
      broker_(broker),
      pool_(options.redis) {}

std::optional<JobRecord> RedisJobStore::record(const JobId& id) const {
  const Value h = pool_.command({"HGETALL", keys_.job(id)});
  if (h.elements.empty()) return std::nullopt;
  return record_from_hash(h);
}

// Newest first from the submit index, in chunks, filtering as it goes; the
// cursor is the sequence number of the last job returned.
std::optional<StorePage> RedisJobStore::list(const StoreQuery& query) const {
  long long before = 0;
  if (!query.cursor.empty()) {
    const char* end = query.cursor.data() + query.cursor.size();
    auto [ptr, ec] = std::from_chars(query.cursor.data(), end, before);
    if (ec != std::errc() || ptr != end || before <= 0) return std::nullopt;
  }
  StorePage page;
  // "(n": below n, exclusive. Built with append: GCC 12's -Wrestrict
  // misfires on "(" + std::string here.
  const auto below = [](const std::string& n) { return std::string(1, '(').append(n); };
  std::string max = before > 0 ? below(std::to_string(before)) : std::string("+inf");
  const std::size_t chunk = std::max<std::size_t>(query.limit + 1, 100);
  for (;;) {
    const Value ids = pool_.command({"ZREVRANGEBYSCORE", keys_.index, max, "-inf", "WITHSCORES", "LIMIT", "0",
                                     std::to_string(chunk)});
    if (ids.elements.empty()) return page;
    std::vector<std::vector<std::string>> reads;
    for (std::size_t i = 0; i < ids.elements.size(); i += 2) reads.push_back({"HGETALL", keys_.job(ids.elements[i].str)});
    const std::vector<Value> hashes = pool_.with([&](Connection& c) { return c.pipeline(reads); });
    for (const Value& h : hashes) {
      if (h.elements.empty()) continue;  // forgotten meanwhile
      JobRecord r = record_from_hash(h);
      if (query.state && r.state != *query.state) continue;
      if (!query.type.empty() && r.type != query.type) continue;
      if (!query.queue.empty() && r.queue != query.queue) continue;
      if (page.jobs.size() == query.limit) {
        page.next_cursor = std::to_string(page.jobs.back().seq);
        return page;
      }
      page.jobs.push_back(std::move(r));
    }
    max = below(ids.elements[ids.elements.size() - 1].str);
    if (ids.elements.size() / 2 < chunk) return page;
  }
}

std::map<JobState, std::size_t> RedisJobStore::count_by_state() const {
  const Value v = pool_.eval(kCounts, {keys_.leased, keys_.dead, keys_.counts, keys_.held}, {keys_.prefix});
  const JobState order[] = {JobState::queued, JobState::scheduled, JobState::running,
                            JobState::failed, JobState::succeeded, JobState::cancelled};
  std::map<JobState, std::size_t> out;
  for (std::size_t i = 0; i < 6 && i < v.elements.size(); ++i) {
    out[order[i]] = static_cast<std::size_t>(v.elements[i].as_integer());
  }
  return out;
}

std::vector<QueueProcess> RedisJobStore::processes(const std::string& self) const {
  const Value ids = pool_.command({"ZRANGE", keys_.processes, "0", "-1", "WITHSCORES"});
  std::vector<std::vector<std::string>> reads;
  for (std::size_t i = 0; i + 1 < ids.elements.size(); i += 2) reads.push_back({"HGETALL", keys_.process(ids.elements[i].str)});
  const std::vector<Value> hashes = pool_.with([&](Connection& c) { return c.pipeline(reads); });
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

CancelResult RedisJobStore::cancel(const JobId& id) {
  const long long now = epoch_ms(Clock::now());
  const long long r = pool_.eval(kCancel, {keys_.job(id), keys_.done, keys_.cancel, keys_.index, keys_.ended, keys_.counts},
                                 {id, std::to_string(now), std::to_string(options_.keep_finished), keys_.job_prefix,
                                  retention_cutoff(options_.finished_ttl, now), keys_.prefix})
                          .as_integer();
  switch (r) {
    case 1: return CancelResult::cancelled;
    case 2:
      if (broker_ != nullptr) broker_->stop_local(id);  // at once if it runs here; other processes poll
      return CancelResult::stop_requested;
    case 3: return CancelResult::already_terminal;
    default: return CancelResult::not_found;
  }
}

std::vector<QueueDepth> RedisJobStore::queue_depths() const {
  const Value v = pool_.eval(kQueueDepths, {keys_.queues}, {keys_.prefix});
  std::vector<QueueDepth> out;
  for (const Value& row : v.elements) {
    const auto ready = static_cast<std::size_t>(row.elements.at(1).as_integer());
    out.push_back(QueueDepth{row.elements.at(0).str, ready, ready + static_cast<std::size_t>(row.elements.at(2).as_integer()),
                             row.elements.size() > 3 && row.elements.at(3).as_integer() == 1});
  }
  std::sort(out.begin(), out.end(), [](const QueueDepth& a, const QueueDepth& b) { return a.name < b.name; });
  return out;
}

RequeueResult RedisJobStore::requeue(const JobId& id) {
  const long long r = pool_.eval(kRequeue, {keys_.job(id), keys_.dead}, {id, std::to_string(options_.capacity), keys_.prefix})
                          .as_integer();
  switch (r) {
    case 1: return RequeueResult::requeued;
    case -1: return RequeueResult::not_failed;
    case -2: return RequeueResult::queue_full;
    default: return RequeueResult::not_found;
  }
}

}  // namespace bulwark::detail::redis
