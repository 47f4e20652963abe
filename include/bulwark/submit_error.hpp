// SubmitError: why a job was not accepted (Runtime::submit, Runtime::post).
//
// A plain value; not synchronized.
#pragma once

#include <string>
#include <string_view>

namespace bulwark {

// Why a job was not accepted.
struct SubmitError {
  enum class Code {
    invalid,        // a field is wrong: see message
    unknown_type,   // no handler registered under that name
    duplicate_id,   // a job with this id is still known
    queue_full,     // queue.capacity jobs are waiting: retry later
    shutting_down,  // the runtime is stopping
    backend_unavailable,  // the shared queue (queue.backend redis) cannot be reached: retry later
    backend_full,         // the shared queue's Redis is out of memory (maxmemory): retry when jobs have ended
  };
  Code code;
  std::string message;
};

std::string_view to_string(SubmitError::Code code) noexcept;

}  // namespace bulwark
