// A shared library whose code throws: the throw-site trace must name
// shared_lib_throw_site even though the exception is allocated here.
#include <stdexcept>

extern "C" __attribute__((visibility("default"), noinline)) void shared_lib_throw_site(int depth) {
  if (depth > 0) throw std::runtime_error("thrown inside a shared library");
}

extern "C" __attribute__((visibility("default"), noinline)) void shared_lib_entry(int depth) {
  shared_lib_throw_site(depth);
  asm volatile("");
}
