#include "redis/parts.hpp"

#include <algorithm>

namespace bulwark::detail::redis {

Parts::Parts(ConnectOptions redis, std::string ns)
    : redis_(std::move(redis)), ns_(std::move(ns)), base_(std::make_unique<Keys>(ns_)) {}

const Keys& Parts::keys(const std::string& queue) {
  if (queue.empty() || queue == "default") return *base_;
  MutexLock lock(mutex_);
  std::unique_ptr<Keys>& k = keys_[queue];
  if (!k) k = std::make_unique<Keys>(ns_, queue);
  return *k;
}

ConnectOptions Parts::reach(const std::string& queue) const {
  ConnectOptions o = redis_;
  if (o.cluster) o.cluster->key = Keys(ns_, queue).tag;
  return o;
}

std::string Parts::route(const std::string& queue) const {
  return redis_.cluster ? Keys(ns_, queue).tag : std::string();
}

Pool& Parts::pool(const std::string& queue) {
  const std::string at = route(queue);
  MutexLock lock(mutex_);
  std::unique_ptr<Pool>& p = pools_[at];
  if (!p) p = std::make_unique<Pool>(reach(queue));
  return *p;
}

std::vector<std::string> Parts::names() {
  const Value v = pool("").command({"SMEMBERS", base_->queues});
  std::vector<std::string> out;
  for (const Value& e : v.elements) {
    if (!e.str.empty() && e.str != "default") out.push_back(e.str);
  }
  std::sort(out.begin(), out.end());
  out.insert(out.begin(), std::string());
  return out;
}

void Parts::note(const std::string& queue) {
  if (queue.empty() || queue == "default") return;
  {
    MutexLock lock(mutex_);
    if (noted_.count(queue) != 0) return;
  }
  pool("").command({"SADD", base_->queues, queue});
  MutexLock lock(mutex_);
  noted_.insert(queue);
}

long long waiting_in(Connection& c, const Keys& keys) {
  long long n = 0;
  for (const Value& v : c.pipeline({{"ZCARD", keys.ready}, {"ZCARD", keys.scheduled}, {"ZCARD", keys.held}})) {
    n += v.as_integer();
  }
  return n;
}

Connection& Links::get(const std::string& queue) {
  std::unique_ptr<Link>& link = links_[parts_.route(queue)];
  if (!link) {
    const std::string at = parts_.route(queue);
    link = std::make_unique<Link>(parts_.reach(queue), at.empty() ? part_ : part_ + " " + at);
  }
  last_ = link.get();
  used_.insert(last_);
  return link->get();
}

void Links::ok() {
  for (Link* link : used_) link->ok();
  used_.clear();
}

void Links::failed(const RedisError& e) {
  used_.clear();
  if (last_ != nullptr) {
    last_->failed(e);
  } else if (!links_.empty()) {
    links_.begin()->second->failed(e);
  }
}

}  // namespace bulwark::detail::redis
