// Internal: clang's thread-safety annotations, and a mutex that carries them.
//
// Members guarded by a lock say so with BULWARK_GUARDED_BY(mutex_); a
// function that expects a lock held says BULWARK_REQUIRES(mutex_). Under
// clang with -Wthread-safety (`make check-clang`, run by CI) every access
// is checked at compile time; elsewhere the macros are empty.
//
//   detail::Mutex mutex_;
//   int count_ BULWARK_GUARDED_BY(mutex_) = 0;
//   void add() { detail::MutexLock lock(mutex_); ++count_; }
//
// std::mutex carries no annotations in libstdc++, hence the wrapper; it is
// a std::mutex with the same cost. Thread-safe as a mutex is.
#pragma once

#include <mutex>

#if defined(__clang__)
#define BULWARK_TSA(x) __attribute__((x))
#else
#define BULWARK_TSA(x)
#endif

#define BULWARK_CAPABILITY(x) BULWARK_TSA(capability(x))
#define BULWARK_SCOPED_CAPABILITY BULWARK_TSA(scoped_lockable)
#define BULWARK_GUARDED_BY(x) BULWARK_TSA(guarded_by(x))
#define BULWARK_PT_GUARDED_BY(x) BULWARK_TSA(pt_guarded_by(x))
#define BULWARK_REQUIRES(...) BULWARK_TSA(requires_capability(__VA_ARGS__))
#define BULWARK_EXCLUDES(...) BULWARK_TSA(locks_excluded(__VA_ARGS__))
#define BULWARK_ACQUIRE(...) BULWARK_TSA(acquire_capability(__VA_ARGS__))
#define BULWARK_RELEASE(...) BULWARK_TSA(release_capability(__VA_ARGS__))
#define BULWARK_TRY_ACQUIRE(...) BULWARK_TSA(try_acquire_capability(__VA_ARGS__))
#define BULWARK_NO_THREAD_SAFETY_ANALYSIS BULWARK_TSA(no_thread_safety_analysis)

namespace bulwark::detail {

class BULWARK_CAPABILITY("mutex") Mutex {
 public:
  void lock() BULWARK_ACQUIRE() { m_.lock(); }
  void unlock() BULWARK_RELEASE() { m_.unlock(); }
  bool try_lock() BULWARK_TRY_ACQUIRE(true) { return m_.try_lock(); }

 private:
  std::mutex m_;
};

// Holds `m` for its scope; unlock()/lock() in between release and take it
// again (what a condition variable's wait does through it).
class BULWARK_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) BULWARK_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~MutexLock() BULWARK_RELEASE() {
    if (held_) m_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void lock() BULWARK_ACQUIRE() {
    m_.lock();
    held_ = true;
  }
  void unlock() BULWARK_RELEASE() {
    held_ = false;
    m_.unlock();
  }

 private:
  Mutex& m_;
  bool held_ = true;
};

}  // namespace bulwark::detail
