#include "redis/end_feed.hpp"

#include <algorithm>

#include "redis/redis_broker.hpp"
#include "redis/redis_job_store.hpp"
#include "runtime/clock.hpp"

namespace bulwark::detail::redis {

namespace {

constexpr int kBatch = 256;

}  // namespace

EndFeed::EndFeed(const BrokerOptions& options, Listener listener, Wanted wanted)
    : redis_(options.redis),
      parts_(options.redis, options.ns),
      listener_(std::move(listener)),
      wanted_(std::move(wanted)) {}

EndFeed::~EndFeed() { stop(); }

void EndFeed::start() {
  try {
    for (const std::string& queue : parts_.names()) {
      const Value newest =
          parts_.pool(queue).command({"XREVRANGE", parts_.keys(queue).ended, "+", "-", "COUNT", "1"});
      last_[queue] = newest.elements.empty() ? "0-0" : newest.elements.front().elements.at(0).str;
    }
  } catch (const RedisError&) {
    // Stream ids begin with Redis's clock in ms: a little before ours will do.
    const std::string since = std::to_string(epoch_ms(Clock::now()) - 1000).append("-0");
    last_[""] = since;
    for (auto& [queue, last] : last_) last = since;
  }
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

void EndFeed::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void EndFeed::look_for_queues(Connection& c) {
  // Ends written a little before this look count: the queue may have been
  // named (and its jobs ended) since the last one, a second ago.
  const std::string since = std::to_string(epoch_ms(Clock::now()) - 2000).append("-0");
  for (const Value& e : c.command({"SMEMBERS", parts_.base().queues}).elements) {
    if (e.str.empty() || e.str == kDefaultQueue) continue;
    last_.emplace(e.str, since);
  }
}

void EndFeed::read_batch(Connection& c, const std::vector<std::string>& queues, long long block_ms) {
  std::vector<std::string> read = {"XREAD", "COUNT", std::to_string(kBatch), "BLOCK", std::to_string(block_ms),
                                   "STREAMS"};
  for (const std::string& queue : queues) read.push_back(parts_.keys(queue).ended);
  for (const std::string& queue : queues) read.push_back(last_[queue]);
  // Blocks in Redis for a while when nothing is there, well inside the
  // command timeout, so stop() is seen within one read.
  const Value got = c.command(read);
  if (got.is_nil() || got.elements.empty()) return;
  struct End {
    std::string queue, id, state;
  };
  std::vector<End> ends;
  for (const Value& stream : got.elements) {
    const std::string& key = stream.elements.at(0).str;
    std::string queue;
    for (const std::string& q : queues) {
      if (parts_.keys(q).ended == key) queue = q;
    }
    for (const Value& entry : stream.elements.at(1).elements) {
      last_[queue] = entry.elements.at(0).str;
      const Value& fields = entry.elements.at(1);  // id, state, id, state, ...
      for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
        const std::string& id = fields.elements[i].str;
        if (!id.empty() && (!wanted_ || wanted_(id))) ends.push_back(End{queue, id, fields.elements[i + 1].str});
      }
    }
  }
  if (ends.empty()) return;
  std::vector<std::vector<std::string>> reads;
  reads.reserve(ends.size());
  for (const End& e : ends) reads.push_back({"HGETALL", parts_.keys(e.queue).job(e.id)});
  const std::vector<Value> hashes = c.pipeline(reads);
  for (std::size_t i = 0; i < ends.size(); ++i) {
    JobRecord r = record_from_hash(hashes[i]);
    const auto ended_as = parse_job_state(ends[i].state);
    // Forgotten by retention already, or live again (requeued) since: the
    // end as the stream has it.
    if (r.id.empty()) r.id = ends[i].id;
    if (!is_terminal(r.state) && ended_as) r.state = *ended_as;
    listener_(r);
  }
}

void EndFeed::run(std::stop_token stop) {
  Links links(parts_, "end feed");
  auto last_look = Clock::now();
  while (!stop.stop_requested()) {
    try {
      if (Clock::now() - last_look >= std::chrono::seconds(1)) {
        look_for_queues(links.get(""));
        last_look = Clock::now();
      }
      // One read per connection: every queue's stream on one Redis at once,
      // the wait shared out among a cluster's shards.
      std::map<std::string, std::vector<std::string>> by_route;
      for (const auto& [queue, last] : last_) by_route[parts_.route(queue)].push_back(queue);
      const long long block = std::max<long long>(
          1, blocking_read_ms(redis_.command_timeout) / static_cast<long long>(by_route.size()));
      for (const auto& [route, queues] : by_route) read_batch(links.get(queues.front()), queues, block);
      links.ok();
    } catch (const RedisError& e) {
      links.failed(e);
    }
  }
}

}  // namespace bulwark::detail::redis
