// Process isolation: job types whose attempts run in child worker processes.
//
// Some failures cannot be recovered inside a process: a segfault, an abort, a
// stack overflow, memory exhaustion, a thread spinning forever. A job type
// registered or configured with `isolation: process` runs in a pool of child
// processes instead (isolation.processes, default 2). When a child dies, the
// job fails with kind `crash`, the signal, and the stack of the crash site
// (written by the child's signal handler before it died); a child over its
// memory limit, or past a hard timeout, is killed. The child is replaced at
// once; the worker thread that was waiting for it carries on.
//
// Children are this same program, started again (posix_spawn of
// /proc/self/exe, never a fork of the threaded parent) with BULWARK_WORKER_FD
// in the environment. For the children to know the job types, main() must
// build the same Registry and hand it to run_worker_process_if_requested()
// before doing anything else:
//
//   int main(int argc, char** argv) {
//     bulwark::Registry registry = make_registry();
//     if (auto code = bulwark::run_worker_process_if_requested(registry)) return *code;
//     ...  // the normal program: options, Runtime, and so on
//   }
#pragma once

#include <optional>

#include "bulwark/registry.hpp"

namespace bulwark {

// In a child worker process (BULWARK_WORKER_FD set): runs jobs sent by the
// parent until it closes the connection, then returns the exit code for
// main() to return. In any other process: returns nullopt at once.
// Call it from the main thread, before starting threads. Blocks.
std::optional<int> run_worker_process_if_requested(const Registry& registry);

}  // namespace bulwark
