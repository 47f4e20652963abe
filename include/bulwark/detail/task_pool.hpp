// Internal: recycled memory for tasks. A producer thread allocates every task
// and workers free them; with glibc's malloc that hand-off makes both sides
// fight over the producer's arena lock. Blocks freed here wait in lock-free
// per-size free lists (at most 8,192 per size) for the next allocation.
//
// Thread-safe, never blocks. Under ASan/TSan it is plain new/delete.
#pragma once

#include <cstddef>

namespace bulwark::detail {

void* pool_allocate(std::size_t bytes);
void pool_deallocate(void* block, std::size_t bytes) noexcept;

// A std::allocator for std::allocate_shared over the pool.
template <class T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() noexcept = default;
  template <class U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(pool_allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { pool_deallocate(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const PoolAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace bulwark::detail
