// Internal: the last words of a process that crashes in a job that is not
// isolated. A segfault, abort or stack overflow on a worker thread cannot be
// survived in-process; before the process dies, a handler on an alternate
// signal stack writes which job was running (id, type), the signal and the
// crashing thread's raw stack to standard error and to the log file, then,
// best effort, the same stack with names. Then the previous disposition of
// the signal takes over (the default: the process dies from it).
#pragma once

#include <memory>
#include <string>

namespace bulwark::detail {

class Task;

// Installs the handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT,
// once per process; `log_file` (may be empty) also gets the report.
// Thread-safe.
void install_crash_reporter(const std::string& log_file);

// The job the calling worker thread runs, for the report; null between jobs.
void set_crash_context(const Task* task, unsigned worker) noexcept;

// An alternate signal stack for the calling thread while this lives, so a
// stack overflow can still be reported. One per worker thread.
class AltStack {
 public:
  AltStack();
  ~AltStack();
  AltStack(const AltStack&) = delete;
  AltStack& operator=(const AltStack&) = delete;

 private:
  std::unique_ptr<char[]> memory_;
  bool installed_ = false;
};

}  // namespace bulwark::detail
