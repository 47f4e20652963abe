// Support: Wake, a wake-up call for a thread that otherwise waits a while
// (a flag under a mutex, and a condition variable that also wakes on a
// stop request).
//
//   Wake w;
//   // waiting thread:   w.wait(stop, 100ms);   // returns on signal(), stop or timeout
//   // any other thread:  w.signal();
//
// Thread-safe. wait() blocks up to its timeout; signal() does not block.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace bulwark::detail {

class Wake {
 public:
  void signal() {
    {
      std::lock_guard lock(mutex_);
      signalled_ = true;
    }
    cv_.notify_one();
  }

  // Waits for a signal (consuming it), the stop request or the timeout.
  void wait(std::stop_token& stop, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, stop, timeout, [&] { return signalled_; });
    signalled_ = false;
  }

 private:
  std::mutex mutex_;  // guards only signalled_, for the wait
  std::condition_variable_any cv_;
  bool signalled_ = false;
};

}  // namespace bulwark::detail
