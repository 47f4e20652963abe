// Registry: job types by name, each with its Handler and HandlerOptions.
//
// Build a Registry, then hand it to a Runtime, which owns it from then on
// and only reads it, so lookups on the submit path take no lock.
//
//   bulwark::Registry registry;
//   registry.add("resize", [](bulwark::JobContext& ctx, const nlohmann::json& p) {
//     return nlohmann::json{{"width", p.at("width")}};
//   }, {.max_attempts = 5});
//
// Not thread-safe while being built; immutable inside a Runtime.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/job_context.hpp"

namespace bulwark {

// Where a job type's attempts run: on a worker thread of this process (the
// default), or in a child worker process that may crash without taking this
// process down (see bulwark/isolation.hpp).
enum class Isolation { thread, process };

// A job type's code: takes the context and the payload, returns the result.
// Whatever it throws becomes the attempt's Failure.
using Handler = std::function<nlohmann::json(JobContext&, const nlohmann::json& payload)>;

// Defaults for one job type, set by code. Config (handlers.<type>.*) overrides
// them, and a job's own fields override both.
struct HandlerOptions {
  // Checks a payload at submit time; throws (any exception) to refuse the job
  // with SubmitError::Code::invalid and the exception's message. Runs on the
  // submitting thread: keep it cheap.
  std::function<void(const nlohmann::json& payload)> validate;
  std::optional<int> max_attempts;
  std::optional<std::chrono::milliseconds> backoff_initial;
  std::optional<std::chrono::milliseconds> backoff_max;
  std::optional<std::chrono::milliseconds> timeout;       // soft timeout: the stop token is set
  std::optional<std::chrono::milliseconds> hard_timeout;  // the attempt fails with kind timeout
  std::optional<Isolation> isolation;                     // default: thread
  std::optional<std::size_t> memory_limit_mb;             // process isolation only; 0: none
};

class Registry {
 public:
  struct Entry {
    Handler handler;
    HandlerOptions options;
  };

  // Throws std::invalid_argument for an empty name, a duplicate name or an
  // empty handler.
  Registry& add(std::string type, Handler handler, HandlerOptions options = {});

  const Entry* find(std::string_view type) const noexcept;
  std::vector<std::string> types() const;

 private:
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace bulwark
