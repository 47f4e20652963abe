// Internal: the named queues of one namespace, each in its own part of
// Redis (keys.hpp: a hash tag per queue), and how to reach each part: on a
// Redis Cluster the master of its tag's slot, elsewhere the one Redis.
//
//   Parts parts(connect_options, "bulwark");
//   const Keys& k = parts.keys("critical");   // {bulwark:critical}:...
//   parts.pool("critical").eval(kCounts, ...);
//
// Thread-safe. keys() and pool() never block and hand out references that
// live as long as the Parts; names() and note() block for a round trip and
// throw RedisError.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "redis/connection.hpp"
#include "redis/keys.hpp"
#include "redis/pool.hpp"

namespace bulwark::detail::redis {

class Parts {
 public:
  Parts(ConnectOptions redis, std::string ns);

  const std::string& ns() const noexcept { return ns_; }
  const ConnectOptions& redis() const noexcept { return redis_; }
  // The keys of `queue` ("" or "default": the default queue, whose keys
  // hold the namespace's too).
  const Keys& keys(const std::string& queue);
  const Keys& base() const noexcept { return *base_; }
  // How to connect to where `queue`'s keys live.
  ConnectOptions reach(const std::string& queue) const;
  // Where `queue`'s keys live: equal for queues on one connection (always,
  // without a cluster).
  std::string route(const std::string& queue) const;
  // Connections to where `queue`'s keys live.
  Pool& pool(const std::string& queue);
  // Every queue a job ever named: "" (the default) first, then the others
  // by name. One round trip.
  std::vector<std::string> names();
  // Records that jobs name `queue` (so listings and counts look there),
  // once per process: a round trip the first time.
  void note(const std::string& queue);

 private:
  const ConnectOptions redis_;
  const std::string ns_;
  const std::unique_ptr<Keys> base_;
  Mutex mutex_;
  std::map<std::string, std::unique_ptr<Keys>> keys_ BULWARK_GUARDED_BY(mutex_);
  std::map<std::string, std::unique_ptr<Pool>> pools_ BULWARK_GUARDED_BY(mutex_);  // by route
  std::set<std::string> noted_ BULWARK_GUARDED_BY(mutex_);
};

// Jobs waiting in the queue of `keys` (ready, scheduled and held for a
// paused type), asked on `c` (one round trip); throws RedisError.
long long waiting_in(Connection& c, const Keys& keys);

// The connections of one thread's loop to every part it touches, a Link
// each (made when first needed). Not thread-safe: one thread owns it.
class Links {
 public:
  Links(const Parts& parts, std::string part) : parts_(parts), part_(std::move(part)) {}
  // The connection to where `queue`'s keys live, connecting first if need
  // be; throws RedisError (unavailable). A failure after this call is the
  // failure of this link (failed()).
  Connection& get(const std::string& queue);
  // A round went through: the next failure of each link it used waits the
  // shortest backoff.
  void ok();
  // The last link handed out failed with `e`: drops its connection and
  // sleeps its backoff.
  void failed(const RedisError& e);

 private:
  const Parts& parts_;
  const std::string part_;
  std::map<std::string, std::unique_ptr<Link>> links_;  // by route
  Link* last_ = nullptr;
  std::set<Link*> used_;  // since the last ok() or failed()
};

}  // namespace bulwark::detail::redis
