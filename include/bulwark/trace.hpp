// Throw-site stack traces.
//
// bulwark records where an exception was *thrown*, not where it was caught.
// It does so by interposing `__cxa_allocate_exception`, the C++ runtime entry
// that every `throw` expression calls first: the allocation is made a little
// larger and the raw return addresses of the throwing thread are stored behind
// the exception object. The trace therefore travels with the exception: a bare
// `throw;` or `std::rethrow_exception` keeps it, and it works for code in the
// consuming program and in shared libraries alike (the dynamic linker resolves
// every module's `__cxa_allocate_exception` to ours). This is the technique
// Boost.Stacktrace 1.85 adopted for `from_current_exception`; Boost 1.74 has
// no equivalent, so bulwark carries its own.
//
// Capturing stores raw addresses only (a few hundred nanoseconds per throw on
// a shallow stack); turning them into names, files and lines happens later,
// off the worker thread, through `symbolize()`.
//
//   try { parse(input); }
//   catch (...) {
//     bulwark::RawTrace t = bulwark::current_exception_trace();
//     for (const bulwark::Frame& f : bulwark::symbolize(t)) std::cout << f.function << '\n';
//   }
//
// Supported on Linux with libstdc++ (x86_64, aarch64). Elsewhere the traces
// are simply empty. A program linked with -static-libstdc++ cannot interpose
// the runtime and gets empty traces too.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace bulwark {

// A bounded list of raw return addresses, innermost first. A plain value:
// copyable, no heap, safe to fill in a signal handler or on a throw path.
struct RawTrace {
  static constexpr std::size_t kMaxFrames = 48;

  std::array<std::uintptr_t, kMaxFrames> frames{};
  std::uint32_t size = 0;
  bool truncated = false;  // the stack was deeper than kMaxFrames

  bool empty() const noexcept { return size == 0; }
};

// One symbolized frame. `function`, `file` may be empty when the module has
// no symbols or debug info; `line` is then 0.
struct Frame {
  std::string function{};
  std::string file{};
  int line = 0;
  std::uintptr_t address = 0;
};

// Where throws are captured, for the whole process:
//   off         never: a throw costs what it costs without bulwark, plus one
//               relaxed load;
//   guarded     (the default) only throws on a thread that is inside a
//               guarded() call (every job runs in one); the trace ends with
//               the function that made the innermost guarded call (the
//               frames of its callers are not walked), so its cost follows the
//               throw's depth below the job, not the whole worker stack. A
//               throw elsewhere costs one relaxed load and one thread-local
//               read more than without bulwark;
//   everywhere  every throw in the process (inside a guarded call the
//               trace still ends at its frame).
// A Runtime sets `off` when started with recovery.capture_traces false, and
// `guarded` when it is true and capture was off. Thread-safe.
enum class TraceCapture { off, guarded, everywhere };
void set_throw_trace_capture(TraceCapture mode) noexcept;
TraceCapture throw_trace_capture_mode() noexcept;
// true: `everywhere`; false: `off`.
void set_throw_trace_capture(bool enabled) noexcept;
// Whether capture is anything but off.
bool throw_trace_capture() noexcept;

namespace detail {
// Marks a guarded() call on the calling thread for the capture above: while
// one lives, throws on the thread are captured in `guarded` mode and their
// traces end with the frame whose frame address is `frame` (the function
// guarded() runs in). Nests; lives on the stack of one thread. Not for use
// outside guarded().
class GuardFrame {
 public:
  explicit GuardFrame(const void* frame) noexcept;
  ~GuardFrame();
  GuardFrame(const GuardFrame&) = delete;
  GuardFrame& operator=(const GuardFrame&) = delete;

 private:
  const void* previous_;
};
}  // namespace detail

// How many throw-site traces were captured in this process, and the time
// spent capturing them. Thread-safe, does not block.
struct TraceCaptureStats {
  std::uint64_t captures = 0;
  double seconds = 0;
};
TraceCaptureStats throw_trace_stats() noexcept;

// The throw-site trace stored with the exception `e`, or an empty trace if
// it was thrown while capture was off or by a runtime bulwark cannot hook.
// Thread-safe, does not block.
RawTrace throw_site_trace(const std::exception_ptr& e) noexcept;

// throw_site_trace(std::current_exception()); call it inside a catch block.
RawTrace current_exception_trace() noexcept;

// The calling thread's stack now, skipping `skip` frames above the caller.
RawTrace capture_stack(std::size_t skip = 0) noexcept;

// Names, files and lines of every frame of `trace`. Results are cached by
// address, so a hot failure path is symbolized once. Thread-safe; blocks while
// it reads debug information (milliseconds on the first call for a module):
// call it from a logging or rendering thread, never from a worker.
std::vector<Frame> symbolize(const RawTrace& trace);

}  // namespace bulwark
