// A steady submit load for the failover tests: a thread posts an `echo`
// job every 5 ms to `bulwark serve` processes in turn (and to named queues
// in turn, when given) and notes which were
// accepted (201), when the backend was killed (killed()), when submits
// were first refused after that and when they were accepted again.
// lost() counts accepted jobs that never end. Thread-safe; stop() joins.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/http_client.hpp"
#include "support/wait.hpp"

namespace bulwark::testing {

class SubmitLoad {
 public:
  // Jobs "<prefix><n>" to `ports` in turn; job n names queue
  // queues[n % size] (none if empty).
  SubmitLoad(std::vector<std::uint16_t> ports, std::string prefix, std::vector<std::string> queues = {})
      : ports_(std::move(ports)), prefix_(std::move(prefix)), queues_(std::move(queues)) {
    thread_ = std::thread([this] { run(); });
  }
  ~SubmitLoad() { stop(); }
  SubmitLoad(const SubmitLoad&) = delete;
  SubmitLoad& operator=(const SubmitLoad&) = delete;

  // The backend is about to be killed.
  void killed() {
    std::lock_guard lock(mutex_);
    killed_ = std::chrono::steady_clock::now();
  }
  // Until submits were refused and accepted again, or none was refused
  // for `calm` after the kill; false if neither within `limit`.
  bool wait_recovered(std::chrono::milliseconds calm, std::chrono::milliseconds limit) {
    return eventually(
        [&] {
          std::lock_guard lock(mutex_);
          return back_.has_value() || (!refused_ && std::chrono::steady_clock::now() - *killed_ > calm);
        },
        limit);
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  std::vector<std::string> accepted() const {
    std::lock_guard lock(mutex_);
    return accepted_;
  }
  // Seconds from the first refused submit after the kill to the first
  // accepted one after it; 0 if none was refused.
  double refused_seconds() const {
    std::lock_guard lock(mutex_);
    return refused_ && back_ ? std::chrono::duration<double>(*back_ - *refused_).count() : 0.0;
  }
  // Accepted jobs that have not succeeded after waiting up to `limit` for
  // them, asked of the process on `port` (each of the first three said).
  std::size_t lost(std::uint16_t port, std::chrono::milliseconds limit) const {
    const std::vector<std::string> ids = accepted();
    const auto ended = [&](const std::string& id) {
      const auto r = http(port, "GET", "/v1/jobs/" + id);
      return r.status == 200 && r.json()["state"] == "succeeded";
    };
    eventually(
        [&] {
          for (const std::string& id : ids) {
            if (!ended(id)) return false;
          }
          return true;
        },
        limit);
    std::size_t lost = 0;
    for (const std::string& id : ids) {
      if (ended(id)) continue;
      if (++lost <= 3) {
        std::lock_guard lock(mutex_);
        MESSAGE("lost: " << id << ", accepted "
                         << std::chrono::duration<double>(accepted_at_.at(id) - killed_.value_or(accepted_at_.at(id))).count()
                         << " s after the kill");
      }
    }
    return lost;
  }

 private:
  void run() {
    using namespace std::chrono_literals;
    for (int n = 0; !stop_.load(); ++n) {
      const std::string id = prefix_ + std::to_string(n);
      nlohmann::json job = {{"id", id}, {"type", "echo"}, {"payload", n}};
      if (!queues_.empty()) job["queue"] = queues_[static_cast<std::size_t>(n) % queues_.size()];
      const auto r = http(ports_[static_cast<std::size_t>(n) % ports_.size()], "POST", "/v1/jobs", job.dump());
      const auto now = std::chrono::steady_clock::now();
      {
        std::lock_guard lock(mutex_);
        if (r.status == 201) {
          accepted_.push_back(id);
          accepted_at_[id] = now;
          if (killed_ && refused_ && !back_) back_ = now;
        } else if (killed_ && !refused_) {
          refused_ = now;
        }
      }
      std::this_thread::sleep_for(5ms);
    }
  }

  const std::vector<std::uint16_t> ports_;
  const std::string prefix_;
  const std::vector<std::string> queues_;
  mutable std::mutex mutex_;
  std::vector<std::string> accepted_;
  std::map<std::string, std::chrono::steady_clock::time_point> accepted_at_;
  std::optional<std::chrono::steady_clock::time_point> killed_, refused_, back_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: started once the rest exists
};

}  // namespace bulwark::testing
