#include "bulwark/registry.hpp"

#include <stdexcept>

namespace bulwark {

Registry& Registry::add(std::string type, Handler handler, HandlerOptions options) {
  if (type.empty()) throw std::invalid_argument("Registry::add: empty job type name");
  if (!handler) throw std::invalid_argument("Registry::add: empty handler for job type '" + type + "'");
  if (options.max_attempts && *options.max_attempts < 1) {
    throw std::invalid_argument("Registry::add: max_attempts of job type '" + type + "' must be at least 1");
  }
  const std::string name = type;
  if (!entries_.emplace(std::move(type), Entry{std::move(handler), options}).second) {
    throw std::invalid_argument("Registry::add: job type '" + name + "' is already registered");
  }
  return *this;
}

const Registry::Entry* Registry::find(std::string_view type) const noexcept {
  auto it = entries_.find(type);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::types() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

}  // namespace bulwark

namespace bulwark {

HandlerOptions HandlerOptions::overridden_by(const HandlerOptions& over) const {
  HandlerOptions out = *this;
  if (over.validate) out.validate = over.validate;
  if (over.max_attempts) out.max_attempts = over.max_attempts;
  if (over.backoff_initial) out.backoff_initial = over.backoff_initial;
  if (over.backoff_max) out.backoff_max = over.backoff_max;
  if (over.timeout) out.timeout = over.timeout;
  if (over.hard_timeout) out.hard_timeout = over.hard_timeout;
  if (over.isolation) out.isolation = over.isolation;
  if (over.memory_limit_mb) out.memory_limit_mb = over.memory_limit_mb;
  if (over.concurrency) out.concurrency = over.concurrency;
  if (over.rate) out.rate = over.rate;
  return out;
}

}  // namespace bulwark
