#include "redis/sentinel_watch.hpp"

#include <condition_variable>
#include <mutex>
#include <sstream>

#include "redis/status.hpp"

namespace bulwark::detail::redis {

namespace {

constexpr auto kCheck = std::chrono::milliseconds(250);  // between PINGs on the subscription
constexpr auto kRetry = std::chrono::milliseconds(500);  // after every sentinel failed once

// Sleeps `d` or until stop is asked; false if it was.
bool pause(std::stop_token& stop, std::chrono::milliseconds d) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  return !cv.wait_for(lock, stop, d, [] { return false; }) && !stop.stop_requested();
}

}  // namespace

SentinelWatch::SentinelWatch(ConnectOptions options) : options_(std::move(options)) {}

SentinelWatch::~SentinelWatch() { stop(); }

void SentinelWatch::start() {
  thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

void SentinelWatch::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void SentinelWatch::named(const std::string& master, const std::string& how) {
  if (known_.empty()) {
    known_ = master;  // the first answer: what connections were made to
    return;
  }
  if (master == known_) return;
  options_.status->master_changed(known_, master, how);
  known_ = master;
}

void SentinelWatch::ask(Connection& sentinel, const std::string& how) {
  const Value now = sentinel.command({"SENTINEL", "get-master-addr-by-name", options_.sentinel->master});
  if (now.elements.size() == 2) named(now.elements[0].str + ":" + now.elements[1].str, how);
}

void SentinelWatch::follow(std::size_t index, std::stop_token& stop, std::size_t& failed) {
  const std::string& name = options_.sentinel->master;
  Connection asked(sentinel_connect(options_, index));
  Connection subscribed(sentinel_connect(options_, index));
  ask(asked, "the sentinels name a new master");  // a switch while no sentinel answered
  subscribed.command({"SUBSCRIBE", "+switch-master"});
  options_.status->up("sentinel watch");
  failed = 0;
  do {
    // Subscribed, PING answers ["pong", ""] after any message already sent.
    for (Value v = subscribed.command({"PING"});; v = subscribed.next_message()) {
      if (v.elements.size() == 3 && v.elements[0].str == "message") {
        // "<name> <old ip> <old port> <new ip> <new port>"
        std::istringstream in(v.elements[2].str);
        std::string master, old_ip, old_port, ip, port;
        if (in >> master >> old_ip >> old_port >> ip >> port && master == name) {
          named(ip + ":" + port, "a sentinel announced +switch-master");
        }
        continue;
      }
      if (!v.elements.empty() && v.elements[0].str == "pong") break;
    }
    // The sentinel that leads a failover names the promoted replica
    // before it announces the switch (once the other replicas follow it).
    ask(asked, "a sentinel names a new master");
  } while (pause(stop, kCheck));
}

void SentinelWatch::run(std::stop_token stop) {
  const std::size_t sentinels = options_.sentinel->addresses.size();
  std::size_t next = 0;
  std::size_t failed = 0;  // in a row
  while (!stop.stop_requested()) {
    try {
      follow(next, stop, failed);
    } catch (const RedisError& e) {
      next = (next + 1) % sentinels;
      if (++failed >= sentinels) {
        options_.status->down("sentinel watch", e);
        failed = 0;
        if (!pause(stop, kRetry)) return;
      }
    }
  }
}

}  // namespace bulwark::detail::redis
