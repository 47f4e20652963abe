#include "runtime/type_table.hpp"

namespace bulwark::detail {

namespace {

std::unique_ptr<TypeEntry> make_entry(std::string name, const HandlerOptions& set, const RuntimeOptions& options,
                                      CircuitBreakerOptions breaker) {
  auto e = std::make_unique<TypeEntry>(breaker, set.concurrency, set.rate);
  e->name = std::move(name);
  e->validate = set.validate;
  e->policy = options.retry;
  if (set.max_attempts) e->policy.max_attempts = *set.max_attempts;
  if (set.backoff_initial) e->policy.initial = *set.backoff_initial;
  if (set.backoff_max) e->policy.max = *set.backoff_max;
  e->timeout = set.timeout.value_or(std::chrono::milliseconds(0));
  e->hard_timeout = set.hard_timeout.value_or(options.supervisor.hard_timeout);
  e->isolation = set.isolation.value_or(Isolation::thread);
  e->memory_limit_mb = set.memory_limit_mb.value_or(options.isolation.memory_limit_mb);
  return e;
}

}  // namespace

TypeTable::TypeTable(const Registry& registry, const RuntimeOptions& options) {
  for (const auto& [type, config] : options.handlers) {
    if (registry.find(type) == nullptr) throw ConfigError("handlers." + type + ": unknown job type '" + type + "'");
  }
  for (const std::string& type : registry.types()) {
    const Registry::Entry* code = registry.find(type);
    HandlerOptions merged = code->options;
    if (auto it = options.handlers.find(type); it != options.handlers.end()) merged = merged.overridden_by(it->second);
    auto entry = make_entry(type, merged, options, options.circuit_breaker);
    entry->handler = &code->handler;
    types_.emplace(type, std::move(entry));
  }
  // Posted callables: counters only, no breaker.
  posts_ = make_entry("post", HandlerOptions{}, options, CircuitBreakerOptions{.failures = 0});
}

TypeEntry* TypeTable::find(std::string_view type) const noexcept {
  auto it = types_.find(type);
  return it == types_.end() ? nullptr : it->second.get();
}

bool TypeTable::any_isolated() const noexcept {
  for (const auto& [name, entry] : types_) {
    if (entry->isolation == Isolation::process) return true;
  }
  return false;
}

}  // namespace bulwark::detail

namespace bulwark::detail {

void TypeTable::use_processes(const std::shared_ptr<ProcessRunner>& processes) {
  for (auto& [name, entry] : types_) {
    if (entry->isolation == Isolation::process) entry->runner = std::make_shared<ChildRunner>(processes, entry->memory_limit_mb);
  }
}

}  // namespace bulwark::detail
