// Internal: what this process knows of its Redis, for the redis backend.
//
// Every RedisError a connection meets is counted by kind (unavailable,
// login, full, other: bulwark_redis_errors_total). Each part that loops on
// Redis (the feeder, the acker, the feeds, submits) says when a round
// failed (down) and when one went through again (up); a change of state is
// logged once, at warning going down and at info coming back, instead of
// once per retry. The parts down make the backend's problem (GET /readyz,
// the health verdict).
//
//   auto status = std::make_shared<redis::Status>(address.text());
//   try { ...; status->up("acker"); } catch (const RedisError& e) { status->down("acker", e); }
//
// Thread-safe; nothing blocks for long (up() is one atomic load when
// nothing was down).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "bulwark/detail/thread_annotations.hpp"
#include "redis/connection.hpp"
#include "runtime/reporter.hpp"

namespace bulwark::detail::redis {

class Status {
 public:
  explicit Status(std::string where) : where_(std::move(where)) {}

  // Where state changes are logged; until set, they are only kept.
  void set_reporter(Reporter* reporter) {
    MutexLock lock(mutex_);
    reporter_ = reporter;
  }

  // One more error of `e`'s kind.
  void count(const RedisError& e) noexcept { counts_[index(e)].fetch_add(1, std::memory_order_relaxed); }

  // `part`'s last round failed with `e`; logged if its state changed.
  void down(std::string_view part, const RedisError& e) {
    MutexLock lock(mutex_);
    auto [it, fresh] = down_.try_emplace(std::string(part));
    const int was = fresh ? -1 : it->second.kind;
    std::string_view message = e.what();
    if (const std::string self = "redis " + where_ + ": "; message.substr(0, self.size()) == self) {
      message.remove_prefix(self.size());  // said once, in front of the line
    }
    it->second = Problem{index(e), std::string(message)};
    if (fresh) downs_.fetch_add(1, std::memory_order_release);
    if (was != it->second.kind && reporter_ != nullptr) {
      reporter_->log(LogLevel::warn, "redis " + where_ + ": the " + std::string(part) + " cannot work: " + it->second.message);
    }
  }

  // `part`'s last round went through; logged if it was down.
  void up(std::string_view part) {
    if (downs_.load(std::memory_order_acquire) == 0) return;
    MutexLock lock(mutex_);
    auto it = down_.find(std::string(part));
    if (it == down_.end()) return;
    down_.erase(it);
    downs_.fetch_sub(1, std::memory_order_release);
    if (reporter_ != nullptr) reporter_->log(LogLevel::info, "redis " + where_ + ": the " + std::string(part) + " works again");
  }

  // False while the feeder or the acker (the parts that move jobs) is down
  // because Redis cannot be reached or refused the login. The other parts
  // (event feeds, replicas) only make problem() non-empty.
  bool reachable() const {
    if (downs_.load(std::memory_order_acquire) == 0) return true;
    MutexLock lock(mutex_);
    for (const auto& [part, p] : down_) {
      if ((part == "feeder" || part == "acker") && (p.kind == kUnavailable || p.kind == kLogin)) return false;
    }
    return true;
  }

  // "the feeder cannot work: <Redis's answer>; ..." for the parts down;
  // empty when none is.
  std::string problem() const {
    if (downs_.load(std::memory_order_acquire) == 0) return {};
    MutexLock lock(mutex_);
    std::string out = "redis " + where_ + ": ";
    bool first = true;
    for (const auto& [part, p] : down_) {
      out += (first ? "the " : "; the ") + part + " cannot work: " + p.message;
      first = false;
    }
    return out;
  }

  // With Sentinel: bumped each time the sentinels name a new master;
  // connections made before then are stale (Connection::usable).
  std::uint64_t master_epoch() const noexcept { return master_epoch_.load(std::memory_order_acquire); }
  // The sentinels named `master` (host:port) instead of `was`: logged, and
  // every older connection becomes unusable.
  void master_changed(const std::string& was, const std::string& master, const std::string& how) {
    master_epoch_.fetch_add(1, std::memory_order_acq_rel);
    MutexLock lock(mutex_);
    if (reporter_ != nullptr) {
      reporter_->log(LogLevel::warn, "redis " + where_ + ": " + how + ": the master is now " + master + " (was " + was +
                                         "); connecting to it");
    }
  }

  // With Cluster: the node ("host:port") a MOVED answer named for `slot`;
  // the next connection for that slot asks it first for the slot map.
  void moved(int slot, std::string node) {
    MutexLock lock(mutex_);
    moved_[slot] = std::move(node);
  }
  std::string moved_to(int slot) const {
    MutexLock lock(mutex_);
    auto it = moved_.find(slot);
    return it == moved_.end() ? std::string() : it->second;
  }

  // Errors met so far, by kind: "unavailable", "login", "full", "other".
  std::map<std::string, std::uint64_t> counts() const {
    std::map<std::string, std::uint64_t> out;
    for (int k = 0; k < kKinds; ++k) out[kNames[k]] = counts_[k].load(std::memory_order_relaxed);
    return out;
  }

 private:
  static constexpr int kUnavailable = 0, kLogin = 1, kFull = 2, kOther = 3, kKinds = 4;
  static constexpr std::array<const char*, kKinds> kNames = {"unavailable", "login", "full", "other"};
  static int index(const RedisError& e) noexcept {
    if (e.login()) return kLogin;
    switch (e.kind()) {
      case RedisError::Kind::unavailable: return kUnavailable;
      case RedisError::Kind::full: return kFull;
      case RedisError::Kind::other: return kOther;
    }
    return kOther;
  }
  struct Problem {
    int kind = -1;
    std::string message;
  };

  const std::string where_;
  std::array<std::atomic<std::uint64_t>, kKinds> counts_{};
  std::atomic<int> downs_{0};
  std::atomic<std::uint64_t> master_epoch_{0};
  mutable Mutex mutex_;
  Reporter* reporter_ BULWARK_GUARDED_BY(mutex_) = nullptr;
  std::map<std::string, Problem> down_ BULWARK_GUARDED_BY(mutex_);
  std::map<int, std::string> moved_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark::detail::redis
