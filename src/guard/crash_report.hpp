// Internal: the last words of a process that crashes in a job that is not
// isolated. A segfault, abort or stack overflow on a worker thread cannot be
// survived in-process; before the process dies, a handler on an alternate
// signal stack writes which job was running (id, type), the signal and the
// crashing thread's raw stack to standard error and to the log file, then,
// best effort, the same stack with names. Then the previous disposition of
// the signal takes over (the default: the process dies from it).
#pragma once

#include <string>

namespace bulwark::detail {

// Installs the handlers for the fatal signals (support/signals.hpp),
// once per process; `log_file` (may be empty) also gets the report.
// Thread-safe.
void install_crash_reporter(const std::string& log_file);

// The job the calling worker thread runs, for the report: its id and type
// (both must outlive the call that clears them); null between jobs.
void set_crash_context(const char* job_id, const char* job_type, unsigned worker) noexcept;

}  // namespace bulwark::detail
