// The main() of every test executable. As README ("Process isolation") asks
// of any program with isolated job types, it first lets a child worker
// process serve jobs: the built-in `crash` type is isolated, so any suite's
// runtime may start children of its test executable.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "bulwark/isolation.hpp"
#include "support/helpers.hpp"

int main(int argc, char** argv) {
  if (auto code = bulwark::run_worker_process_if_requested(bulwark::testing::builtins())) return *code;
  doctest::Context context(argc, argv);
  return context.run();
}
