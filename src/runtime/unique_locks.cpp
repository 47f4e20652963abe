#include "runtime/unique_locks.hpp"

namespace bulwark::detail {

std::string UniqueLocks::name(const std::string& type, const std::string& key) {
  std::string n = std::to_string(type.size());
  n.append(":").append(type).append(":").append(key);
  return n;
}

std::optional<JobId> UniqueLocks::claim(const std::string& name, const JobId& id, Clock::time_point until,
                                        Clock::time_point now, const std::function<bool(const JobId&)>& known) {
  MutexLock lock(mutex_);
  sweep(now);
  auto it = held_.find(name);
  if (it != held_.end() && it->second.until > now && known(it->second.id)) return it->second.id;
  held_[name] = Held{id, until};
  expiry_.emplace(until, name);
  return std::nullopt;
}

void UniqueLocks::release(const std::string& name, const JobId& id) {
  MutexLock lock(mutex_);
  auto it = held_.find(name);
  if (it != held_.end() && it->second.id == id) held_.erase(it);
}

void UniqueLocks::sweep(Clock::time_point now) {
  while (!expiry_.empty() && expiry_.top().first <= now) {
    auto it = held_.find(expiry_.top().second);
    // A lock claimed again since has a later time: it stays.
    if (it != held_.end() && it->second.until <= now) held_.erase(it);
    expiry_.pop();
  }
}

}  // namespace bulwark::detail
