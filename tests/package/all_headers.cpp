// Every public header, and README's designated-initializer style: compiled
// against the installed package with -Wall -Wextra -Wpedantic -Werror by
// check.sh, with GCC and (when installed) clang.
#include <bulwark/config.hpp>
#include <bulwark/events.hpp>
#include <bulwark/failure.hpp>
#include <bulwark/guarded.hpp>
#include <bulwark/handler_options.hpp>
#include <bulwark/health.hpp>
#include <bulwark/http_server.hpp>
#include <bulwark/isolation.hpp>
#include <bulwark/job.hpp>
#include <bulwark/job_context.hpp>
#include <bulwark/job_handle.hpp>
#include <bulwark/json_input.hpp>
#include <bulwark/registry.hpp>
#include <bulwark/retry_policy.hpp>
#include <bulwark/runtime.hpp>
#include <bulwark/stats.hpp>
#include <bulwark/submit_error.hpp>
#include <bulwark/trace.hpp>
#include <bulwark/version.hpp>
int main() {
  bulwark::Registry registry;
  registry.add("greet", [](bulwark::JobContext&, const nlohmann::json& p) { return p; },
               {.max_attempts = 2});
  bulwark::Runtime runtime(std::move(registry), {.workers = 2});
  auto job = runtime.submit({.type = "greet", .payload = "world"});
  auto sum = runtime.post([] { return 1 + 1; }, {.priority = 1});
  bulwark::JobSpec spec{.type = "greet", .priority = 3, .max_attempts = 2};
  runtime.submit(spec);
  return job && sum.accepted() ? 0 : 1;
}
