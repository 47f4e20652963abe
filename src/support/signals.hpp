// Support: what signal handlers of this program share. The alternate signal
// stack that lets a handler run after a stack overflow, the real-time signal
// that asks a thread for its stack, and a fixed buffer that a handler can
// format text into without allocating.
//
// AltStack is per thread (construct it on the thread it serves).
// SignalBuffer is async-signal-safe; it is not shared between threads.
#pragma once

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace bulwark::detail {

// Size of every alternate signal stack bulwark installs.
inline constexpr std::size_t kAltStackBytes = 256 * 1024;

// The signals that end a process with a crash report (worker threads and
// child worker processes alike).
inline constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};

// The real-time signal that asks a thread to dump its stack (a worker
// thread in the runtime, the job thread in a child worker process).
int stack_dump_signal_number() noexcept;

// An alternate signal stack for the calling thread while this lives.
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

// Text built inside a signal handler: no allocation, silently truncated at
// 4 KiB.
struct SignalBuffer {
  char data[4096];
  std::size_t size = 0;
  void add(const char* s) noexcept;
  void add_hex(std::uintptr_t v) noexcept;
  void add_dec(long long v) noexcept;
  void add_unsigned(unsigned long long v) noexcept;
};

// write(2) until everything is written or it fails. Async-signal-safe.
bool write_all(int fd, const char* data, std::size_t size) noexcept;

}  // namespace bulwark::detail
