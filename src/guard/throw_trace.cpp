// Throw-site capture by interposing __cxa_allocate_exception (see trace.hpp).
//
// libstdc++ places a 128-byte __cxa_refcounted_exception header right before
// the thrown object; its first member is a 4-byte reference count followed by
// 12 bytes of alignment padding before the 16-byte aligned __cxa_exception.
// We ask the real allocator for room for the object *plus* a RawTrace, write
// the trace behind the object, and record where it is in that padding, which
// the runtime zeroes on allocation and never touches again. Reading checks a
// magic number and that the header's exceptionType matches the exception's
// own type, so an exception allocated by another path simply has no trace.
#include "bulwark/trace.hpp"

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <new>
#include <typeinfo>

#include <unwind.h>

namespace {

#if defined(__GLIBCXX__) && (defined(__x86_64__) || defined(__aarch64__))
constexpr bool kSupported = true;
#else
constexpr bool kSupported = false;
#endif

constexpr std::size_t kHeaderSize = 128;         // sizeof(__cxa_refcounted_exception)
constexpr std::size_t kMagicOffset = 4;          // padding after referenceCount
constexpr std::size_t kTrailerOffsetOffset = 8;  // where the RawTrace offset is kept
constexpr std::size_t kTypeInfoOffset = 16;      // __cxa_exception::exceptionType
constexpr std::uint32_t kMagic = 0xB17A7ACEu;
constexpr std::size_t kAlign = 16;

std::atomic<bulwark::TraceCapture> g_mode{bulwark::TraceCapture::guarded};
// The innermost guarded() frame of this thread (its frame address), or null.
__attribute__((tls_model("initial-exec"))) thread_local const void* t_guard_frame = nullptr;
std::atomic<std::uint64_t> g_captures{0};
std::atomic<std::uint64_t> g_capture_ns{0};

using AllocateFn = void* (*)(std::size_t) noexcept;

AllocateFn real_allocate() noexcept {
  static const AllocateFn fn =
      reinterpret_cast<AllocateFn>(::dlsym(RTLD_NEXT, "__cxa_allocate_exception"));
  return fn;
}

char* header_of(void* object) noexcept { return static_cast<char*>(object) - kHeaderSize; }

const bulwark::RawTrace* trailer_of(void* object, const std::type_info* type) noexcept {
  if (!kSupported || object == nullptr) return nullptr;
  const char* header = header_of(object);
  std::uint32_t magic = 0;
  std::uint32_t offset = 0;
  const std::type_info* stored_type = nullptr;
  std::memcpy(&magic, header + kMagicOffset, sizeof magic);
  std::memcpy(&offset, header + kTrailerOffsetOffset, sizeof offset);
  std::memcpy(&stored_type, header + kTypeInfoOffset, sizeof stored_type);
  if (magic != kMagic || (type != nullptr && stored_type != type)) return nullptr;
  return reinterpret_cast<const bulwark::RawTrace*>(static_cast<const char*>(object) + offset);
}

// Frames above the throwing function: fill_trace and __cxa_allocate_exception.
constexpr std::size_t kHookFrames = 2;

// During _Unwind_Backtrace the callback for a frame sees, as "CFA", that
// frame's stack pointer (the CFA of the frame it called). The function
// guarded() runs in has a stack pointer at or below its frame address, its
// callers above it: the walk keeps the first and stops at the next.
struct Walk {
  bulwark::RawTrace* trace;
  std::size_t skip;
  std::uintptr_t stop;  // the guarded frame's frame address; 0 = walk the whole stack
};

_Unwind_Reason_Code step(_Unwind_Context* context, void* arg) {
  auto* walk = static_cast<Walk*>(arg);
  if (walk->stop != 0 && _Unwind_GetCFA(context) > walk->stop) return _URC_END_OF_STACK;
  if (walk->skip > 0) {
    --walk->skip;
    return _URC_NO_REASON;
  }
  const std::uintptr_t ip = _Unwind_GetIP(context);
  if (ip == 0) return _URC_END_OF_STACK;
  bulwark::RawTrace& t = *walk->trace;
  if (t.size == bulwark::RawTrace::kMaxFrames) {
    t.truncated = true;
    return _URC_END_OF_STACK;
  }
  t.frames[t.size++] = ip;
  return _URC_NO_REASON;
}

// The calling thread's return addresses, innermost first, skipping `skip`
// frames (this one first) and ending below `stop` (see Walk).
__attribute__((noinline)) void fill_trace(bulwark::RawTrace* trace, std::size_t skip, std::uintptr_t stop = 0) noexcept {
  trace->size = 0;
  trace->truncated = false;
  Walk walk{trace, skip, stop};
  _Unwind_Backtrace(step, &walk);
  asm volatile("");  // keep this a real frame: the skip counts it
}

}  // namespace

namespace __cxxabiv1 {
extern "C" __attribute__((visibility("default"), noinline)) void* __cxa_allocate_exception(
    std::size_t thrown_size) noexcept {
  AllocateFn allocate = real_allocate();
  const bulwark::TraceCapture mode = g_mode.load(std::memory_order_relaxed);
  const void* guard = t_guard_frame;
  if (!kSupported || mode == bulwark::TraceCapture::off ||
      (mode == bulwark::TraceCapture::guarded && guard == nullptr)) {
    return allocate(thrown_size);
  }
  const std::size_t offset = (thrown_size + kAlign - 1) & ~(kAlign - 1);
  void* object = allocate(offset + sizeof(bulwark::RawTrace));
  auto* trace = new (static_cast<char*>(object) + offset) bulwark::RawTrace;
  const auto start = std::chrono::steady_clock::now();
  fill_trace(trace, kHookFrames, reinterpret_cast<std::uintptr_t>(guard));
  const auto spent = std::chrono::steady_clock::now() - start;
  g_capture_ns.fetch_add(static_cast<std::uint64_t>(std::chrono::nanoseconds(spent).count()),
                         std::memory_order_relaxed);
  g_captures.fetch_add(1, std::memory_order_relaxed);
  const auto offset32 = static_cast<std::uint32_t>(offset);
  std::memcpy(header_of(object) + kMagicOffset, &kMagic, sizeof kMagic);
  std::memcpy(header_of(object) + kTrailerOffsetOffset, &offset32, sizeof offset32);
  return object;
}
}  // namespace __cxxabiv1

namespace bulwark {

void set_throw_trace_capture(TraceCapture mode) noexcept { g_mode.store(mode, std::memory_order_relaxed); }

TraceCapture throw_trace_capture_mode() noexcept { return g_mode.load(std::memory_order_relaxed); }

void set_throw_trace_capture(bool enabled) noexcept {
  set_throw_trace_capture(enabled ? TraceCapture::everywhere : TraceCapture::off);
}

bool throw_trace_capture() noexcept { return throw_trace_capture_mode() != TraceCapture::off; }

namespace detail {
GuardFrame::GuardFrame(const void* frame) noexcept : previous_(t_guard_frame) { t_guard_frame = frame; }
GuardFrame::~GuardFrame() { t_guard_frame = previous_; }
}  // namespace detail

TraceCaptureStats throw_trace_stats() noexcept {
  return {g_captures.load(std::memory_order_relaxed),
          static_cast<double>(g_capture_ns.load(std::memory_order_relaxed)) / 1e9};
}

RawTrace throw_site_trace(const std::exception_ptr& e) noexcept {
  if (!e) return {};
  // libstdc++'s exception_ptr is a single pointer to the thrown object.
  static_assert(sizeof(std::exception_ptr) == sizeof(void*));
  void* object = nullptr;
  std::memcpy(&object, &e, sizeof object);
  const RawTrace* trace = trailer_of(object, e.__cxa_exception_type());
  return trace != nullptr ? *trace : RawTrace{};
}

RawTrace current_exception_trace() noexcept { return throw_site_trace(std::current_exception()); }

__attribute__((noinline)) RawTrace capture_stack(std::size_t skip) noexcept {
  RawTrace trace;
  fill_trace(&trace, skip + 2);  // fill_trace and capture_stack themselves
  asm volatile("");              // keep this a real frame: no tail call
  return trace;
}

}  // namespace bulwark
