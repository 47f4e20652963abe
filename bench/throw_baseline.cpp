// bulwark_throw_baseline: the cost of a throw + catch `depth` calls deep in a
// program that does not link bulwark (no __cxa_allocate_exception hook), for
// bulwark_bench's "throw outside jobs" figure. Prints ns per throw.
//
//   bulwark_throw_baseline DEPTH ITERATIONS
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

__attribute__((noinline)) void throw_at(int depth) {
  if (depth <= 1) throw std::runtime_error("bench failure");
  throw_at(depth - 1);
  asm volatile("");
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: bulwark_throw_baseline DEPTH ITERATIONS\n");
    return 2;
  }
  const int depth = std::atoi(argv[1]);
  const long iterations = std::atol(argv[2]);
  for (long i = 0; i < iterations / 10; ++i) {  // warm-up
    try {
      throw_at(depth);
    } catch (const std::exception&) {
    }
  }
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) {
    try {
      throw_at(depth);
    } catch (const std::exception&) {
    }
  }
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.1f\n", ns / static_cast<double>(iterations));
  return 0;
}
