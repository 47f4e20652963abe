#include "facade/backend_factory.hpp"

#include <unistd.h>

#include "redis/redis_backend.hpp"
#include "runtime/memory_backend.hpp"
#include "support/text.hpp"

namespace bulwark::detail {

std::unique_ptr<Backend> make_backend(const RuntimeOptions& options) {
  switch (options.backend) {
    case QueueBackend::memory: return std::make_unique<MemoryBackend>(options);
    case QueueBackend::redis:
      // This process in a shared queue: host, pid and a random tag (a pid
      // is reused across restarts and containers).
      return std::make_unique<redis::RedisBackend>(
          options, host_name() + ":" + std::to_string(getpid()) + ":" + random_tag(6));
  }
  throw ConfigError("queue.backend: unknown backend");
}

}  // namespace bulwark::detail
