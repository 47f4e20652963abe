// Internal: SentinelWatch follows the sentinels' `+switch-master`
// announcements for the redis backend's master (redis.sentinel.*), on its
// own thread, so a process moves to a new master as soon as a sentinel says
// so rather than when a command on the old one fails.
//
// It keeps a subscription to a sentinel (the next one in turn when that
// fails), checked four times a second with a PING, and asks the same
// sentinel for the master's address as often on a second connection: the
// sentinel that leads a failover names the promoted replica seconds before
// it announces the switch (it waits for the other replicas to follow).
// When a sentinel announces or names another master than the last one
// seen (also a switch missed while no sentinel answered), it calls
// Status::master_changed: every connection made before then counts as
// unusable, so links and pools connect again and ask the sentinels.
// While no sentinel answers, the "sentinel watch" part is down in the
// Status (one log line, the health verdict).
//
// Thread-safe: start() and stop() from the owner. stop() blocks up to one
// command timeout.
#pragma once

#include <string>
#include <thread>

#include "redis/connection.hpp"

namespace bulwark::detail::redis {

class SentinelWatch {
 public:
  // `options` must have a sentinel and a status.
  explicit SentinelWatch(ConnectOptions options);
  ~SentinelWatch();
  SentinelWatch(const SentinelWatch&) = delete;
  SentinelWatch& operator=(const SentinelWatch&) = delete;

  void start();
  void stop();

 private:
  void run(std::stop_token stop);
  // Follows the sentinel at `index` (subscribed, and asked on a second
  // connection): returns when stop is asked; throws RedisError when the
  // sentinel fails. Sets `failed` (sentinels failed in a row) to 0 once
  // subscribed.
  void follow(std::size_t index, std::stop_token& stop, std::size_t& failed);
  // Asks `sentinel` for the master's address.
  void ask(Connection& sentinel, const std::string& how);
  // The sentinels name `master` (host:port) now.
  void named(const std::string& master, const std::string& how);

  const ConnectOptions options_;
  std::string known_;  // the master last named; the watch's thread's
  std::jthread thread_;
};

}  // namespace bulwark::detail::redis
