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

#include "bulwark/handler_options.hpp"
#include "bulwark/job_context.hpp"

namespace bulwark {

// A job type's code: takes the context and the payload, returns the result.
// Whatever it throws becomes the attempt's Failure.
using Handler = std::function<nlohmann::json(JobContext&, const nlohmann::json& payload)>;

class Registry {
 public:
  struct Entry {
    Handler handler{};
    HandlerOptions options{};
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
