// Internal: the child side of process isolation, as the rest of bulwark
// sees it (the entry point is bulwark/isolation.hpp).
#pragma once

namespace bulwark::detail {

// Ends the process with a message naming the missing call when this process
// was started as a child worker process but main() did not call
// bulwark::run_worker_process_if_requested() first. Called as a Runtime
// starts. Thread-safe.
void refuse_runtime_in_worker_process();

}  // namespace bulwark::detail
