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
      keys_(options.ns),
      listener_(std::move(listener)),
      wanted_(std::move(wanted)) {}

EndFeed::~EndFeed() { stop(); }

void EndFeed::start() {
  try {
    Connection c(redis_);
    const Value newest = c.command({"XREVRANGE", keys_.ended, "+", "-", "COUNT", "1"});
    last_ = newest.elements.empty() ? "0-0" : newest.elements.front().elements.at(0).str;
  } catch (const RedisError&) {
    // Stream ids begin with Redis's clock in ms: a little before ours will do.
    last_ = std::to_string(epoch_ms(Clock::now()) - 1000).append("-0");
  }
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

void EndFeed::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void EndFeed::read_batch(Connection& c) {
  // Blocks in Redis for a while when nothing is there, well inside the
  // command timeout, so stop() is seen within one read.
  const auto block = blocking_read_ms(redis_.command_timeout);
  const Value got = c.command({"XREAD", "COUNT", std::to_string(kBatch), "BLOCK", std::to_string(block), "STREAMS",
                               keys_.ended, last_});
  if (got.is_nil() || got.elements.empty()) return;
  struct End {
    std::string id, state;
  };
  std::vector<End> ends;
  for (const Value& entry : got.elements.at(0).elements.at(1).elements) {
    last_ = entry.elements.at(0).str;
    const Value& fields = entry.elements.at(1);  // id, state, id, state, ...
    for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
      const std::string& id = fields.elements[i].str;
      if (!id.empty() && (!wanted_ || wanted_(id))) ends.push_back(End{id, fields.elements[i + 1].str});
    }
  }
  if (ends.empty()) return;
  std::vector<std::vector<std::string>> reads;
  reads.reserve(ends.size());
  for (const End& e : ends) reads.push_back({"HGETALL", keys_.job(e.id)});
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
  Link link(redis_, "end feed");
  while (!stop.stop_requested()) {
    try {
      read_batch(link.get());
      link.ok();
    } catch (const RedisError& e) {
      link.failed(e);
    }
  }
}

}  // namespace bulwark::detail::redis
