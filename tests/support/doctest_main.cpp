// The main() of every test executable. As README ("Process isolation") asks
// of any program with isolated job types, it first lets a child worker
// process serve jobs: the built-in `crash` type is isolated, so any suite's
// runtime may start children of its test executable.
//
// It also keeps the redis-server of BULWARK_TEST_BACKEND=redis: started on
// first use, stopped when the tests end.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "bulwark/isolation.hpp"
#include "support/helpers.hpp"
#include "support/redis_server.hpp"

namespace bulwark::testing {

namespace {
std::unique_ptr<RedisServer> g_redis;
std::once_flag g_redis_once;
}  // namespace

bool test_backend_is_redis() {
  const char* backend = std::getenv("BULWARK_TEST_BACKEND");
  return backend != nullptr && std::strcmp(backend, "redis") == 0;
}

std::string test_redis_url() {
  std::call_once(g_redis_once, [] { g_redis = std::make_unique<RedisServer>(); });
  return g_redis->url();
}

}  // namespace bulwark::testing

int main(int argc, char** argv) {
  if (auto code = bulwark::run_worker_process_if_requested(bulwark::testing::builtins())) return *code;
  doctest::Context context(argc, argv);
  const int result = context.run();
  bulwark::testing::g_redis.reset();
  return result;
}
