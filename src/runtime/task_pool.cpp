#include "bulwark/detail/task_pool.hpp"

#include <array>
#include <new>

#include <concurrentqueue.h>

namespace bulwark::detail {

// Under ASan or TSan the pool steps aside: recycled blocks would hide
// use-after-free from ASan, and TSan does not model the fences that order a
// block's reuse through the queue.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kPoolEnabled = true;
#else
constexpr bool kPoolEnabled = true;
#endif

namespace {

constexpr std::size_t kGranule = 64;
constexpr std::size_t kClasses = 24;          // blocks up to 1,536 bytes are pooled
constexpr std::size_t kMaxCachedPerClass = 8192;

struct SizeClass {
  moodycamel::ConcurrentQueue<void*> free;
};

// Never destroyed: a task may be released during static destruction.
SizeClass* size_classes() {
  static auto* classes = new std::array<SizeClass, kClasses>();
  return classes->data();
}

std::size_t class_of(std::size_t bytes) noexcept { return (bytes + kGranule - 1) / kGranule - 1; }

}  // namespace

void* pool_allocate(std::size_t bytes) {
  const std::size_t c = class_of(bytes);
  if (!kPoolEnabled || c >= kClasses) return ::operator new(bytes);
  void* block = nullptr;
  if (size_classes()[c].free.try_dequeue(block)) return block;
  return ::operator new((c + 1) * kGranule);
}

void pool_deallocate(void* block, std::size_t bytes) noexcept {
  const std::size_t c = class_of(bytes);
  if (!kPoolEnabled || c >= kClasses) {
    ::operator delete(block);
    return;
  }
  SizeClass& sc = size_classes()[c];
  // size_approx() is a few relaxed loads; the bound only needs to be rough.
  if (sc.free.size_approx() < kMaxCachedPerClass && sc.free.enqueue(block)) return;
  ::operator delete(block);
}

}  // namespace bulwark::detail
