// The job types shipped with bulwark: echo, sleep, compute, fail, flaky, hang
// and crash (README, "Built-in workers"). `crash` is registered with
// process isolation: a program using these must call
// bulwark::run_worker_process_if_requested() first thing in main(). They serve the demo, the tests and
// the benchmarks, and show how a handler is written.
//
//   bulwark::Registry registry;
//   bulwark::workers::register_builtin(registry);
//
// Each validates its payload at submit time, so a bad payload is refused
// with a message naming the field instead of failing on a worker.
#pragma once

#include "bulwark/registry.hpp"

namespace bulwark::workers {

// The user struct the `fail` worker throws for {"throw": "custom"}.
struct CustomFailure {
  int code;
  const char* detail;
};

void register_builtin(Registry& registry);

}  // namespace bulwark::workers
