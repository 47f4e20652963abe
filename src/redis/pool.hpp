// Internal: a few idle connections to one Redis, lent out per call, so
// threads that talk to Redis now and then (submitting, acking, reading
// records) neither share a connection nor open one per call. A connection
// that failed is dropped; the next call opens a fresh one.
//
// Thread-safe. Every call blocks for one round trip (at most the command
// timeout) and throws RedisError like Connection.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "bulwark/detail/thread_annotations.hpp"
#include "redis/connection.hpp"

namespace bulwark::detail::redis {

class Pool {
 public:
  explicit Pool(ConnectOptions options) : options_(std::move(options)) {}

  // Runs `fn(Connection&)` on a lent connection and returns what it returns.
  template <class F>
  decltype(auto) with(F&& fn) {
    std::unique_ptr<Connection> c = take();
    if constexpr (std::is_void_v<decltype(fn(*c))>) {
      fn(*c);  // a throw drops the connection with it
      give_back(std::move(c));
    } else {
      auto result = fn(*c);
      give_back(std::move(c));
      return result;
    }
  }

  Value command(const std::vector<std::string>& args) {
    return with([&](Connection& c) { return c.command(args); });
  }
  Value eval(const Script& s, const std::vector<std::string>& keys, const std::vector<std::string>& args) {
    return with([&](Connection& c) { return c.eval(s, keys, args); });
  }

 private:
  static constexpr std::size_t kIdleMax = 8;
  std::unique_ptr<Connection> take() {
    {
      MutexLock lock(mutex_);
      while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (c->usable()) return c;  // not one to a master the sentinels replaced
      }
    }
    return std::make_unique<Connection>(options_);
  }
  void give_back(std::unique_ptr<Connection> c) {
    if (!c->usable()) return;
    MutexLock lock(mutex_);
    if (idle_.size() < kIdleMax) idle_.push_back(std::move(c));
  }

  const ConnectOptions options_;
  Mutex mutex_;
  std::vector<std::unique_ptr<Connection>> idle_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark::detail::redis
