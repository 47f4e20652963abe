// BackendError: the shared queue's backend (queue.backend "redis") could not
// do what was asked. Runtime calls that read or change jobs in Redis (get,
// list, page, cancel, requeue, stats, pause, ...) throw it; submit answers
// it as a SubmitError instead. what() says what happened, in Redis's words
// where it answered, and never carries a password.
//
//   try {
//     auto job = runtime.get(id);
//   } catch (const bulwark::BackendError& e) {
//     if (e.kind() == bulwark::BackendError::Kind::unavailable) retry_later();
//   }
//
// A plain exception type; thread-safe to read.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace bulwark {

class BackendError : public std::runtime_error {
 public:
  enum class Kind {
    unavailable,  // cannot be reached, timed out, refused our login, or is busy (loading, failing over): retry later
    full,         // out of memory (Redis's maxmemory): nothing new fits until jobs end
    other,        // any other error answer: a bug or bad data, not an outage
  };
  BackendError(const std::string& message, Kind kind) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// "unavailable", "full", "other".
std::string_view to_string(BackendError::Kind kind) noexcept;

}  // namespace bulwark
