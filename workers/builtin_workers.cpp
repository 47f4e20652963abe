#include "builtin_workers.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bulwark/json_input.hpp"

namespace bulwark::workers {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kMaxMs = 86'400'000;
constexpr std::int64_t kMaxPrimeLimit = 200'000'000;

const json& object_payload(const json& payload, const char* type) {
  if (!payload.is_object() && !payload.is_null()) {
    throw std::invalid_argument(std::string(type) + ": payload: expected an object");
  }
  return payload;
}

std::int64_t int_field(const json& payload, const char* type, const char* key, std::int64_t lo, std::int64_t hi,
                       std::int64_t fallback) {
  const json& p = object_payload(payload, type);
  if (p.is_null() || !p.contains(key)) return fallback;
  const json& v = p.at(key);
  if (auto n = integer_in_range(v, lo, hi)) return *n;  // 2^64 - 1 is out of range, not -1
  throw std::invalid_argument(std::string(type) + ": payload." + key + ": " + integer_problem(v, lo, hi));
}

// --- fail: three calls from the handler down to the throw ------------------

const std::vector<std::string> kThrowKinds = {"runtime_error", "logic_error", "out_of_range", "bad_alloc", "int",
                                              "c_string",      "string",      "custom",       "nested"};

std::string throw_kind(const json& payload) {
  const json& p = object_payload(payload, "fail");
  if (p.is_null() || !p.contains("throw")) return "runtime_error";
  if (!p.at("throw").is_string()) throw std::invalid_argument("fail: payload.throw: expected a string");
  std::string kind = p.at("throw").get<std::string>();
  if (std::find(kThrowKinds.begin(), kThrowKinds.end(), kind) == kThrowKinds.end()) {
    std::string list;
    for (const auto& k : kThrowKinds) list += (list.empty() ? "" : ", ") + k;
    throw std::invalid_argument("fail: payload.throw: expected one of " + list + ", got '" + kind + "'");
  }
  return kind;
}

std::string fail_message(const json& payload) {
  if (payload.is_object() && payload.contains("message")) {
    if (!payload.at("message").is_string()) throw std::invalid_argument("fail: payload.message: expected a string");
    return payload.at("message").get<std::string>();
  }
  return "boom";
}

[[noreturn]] __attribute__((noinline)) void fail_throw_site(const std::string& kind, const std::string& message) {
  if (kind == "logic_error") throw std::logic_error(message);
  if (kind == "out_of_range") throw std::out_of_range(message);
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "int") throw 42;
  if (kind == "c_string") throw "c-string failure";
  if (kind == "string") throw std::string(message);
  if (kind == "custom") throw CustomFailure{7, "custom failure"};
  if (kind == "nested") {
    try {
      throw std::runtime_error(message);
    } catch (...) {
      std::throw_with_nested(std::runtime_error("while running the fail job"));
    }
  }
  throw std::runtime_error(message);
}

// The empty asm keeps each level a real call, so the trace shows all three.
__attribute__((noinline)) void fail_level2(const std::string& kind, const std::string& message) {
  fail_throw_site(kind, message);
  asm volatile("");
}

__attribute__((noinline)) void fail_level1(const std::string& kind, const std::string& message) {
  fail_level2(kind, message);
  asm volatile("");
}

// --- hang: spin, ignoring cancellation --------------------------------------

__attribute__((noinline)) std::uint64_t hang_spin(std::int64_t ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(ms);
  std::uint64_t spins = 0;
  while (Clock::now() < until) {
    ++spins;
    asm volatile("" : "+r"(spins));
  }
  return spins;
}

// --- crash: what no in-process runtime survives -----------------------------

const std::vector<std::string> kCrashKinds = {"segv", "abort", "fpe", "stack_overflow", "oom", "exit", "none"};

std::string crash_kind(const json& payload) {
  const json& p = object_payload(payload, "crash");
  if (p.is_null() || !p.contains("how")) throw std::invalid_argument("crash: payload.how: required");
  const json& how = p.at("how");
  std::string list;
  for (const auto& k : kCrashKinds) list += (list.empty() ? "" : ", ") + k;
  if (!how.is_string() || std::find(kCrashKinds.begin(), kCrashKinds.end(), how.get<std::string>()) == kCrashKinds.end()) {
    throw std::invalid_argument("crash: payload.how: expected one of " + list);
  }
  return how.get<std::string>();
}

// Each crash happens in a function of its own, so a trace can name it. The
// sanitizers are kept out of them: their checks would turn the crash into a
// sanitizer report (and an abort) before the real fault happens.
#define BULWARK_CRASH_SITE __attribute__((noinline, no_sanitize("address", "undefined")))

BULWARK_CRASH_SITE void crash_segv() {
  volatile int* volatile nowhere = nullptr;
  *nowhere = 1;
}

BULWARK_CRASH_SITE void crash_abort() { std::abort(); }

BULWARK_CRASH_SITE int crash_fpe(int zero) {
  volatile int dividend = 1;
  volatile int divisor = zero;
  return dividend / divisor;
}

BULWARK_CRASH_SITE std::uint64_t crash_stack_overflow(std::uint64_t depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth > (1ULL << 40)) return depth;  // never: the stack ends long before
  return crash_stack_overflow(depth + 1) + static_cast<std::uint64_t>(frame[0]);
}

// Allocates and touches 16 MiB blocks until allocation fails or max_mb is reached.
__attribute__((noinline)) std::int64_t crash_oom(std::int64_t max_mb) {
  std::vector<std::unique_ptr<char[]>> blocks;
  constexpr std::size_t kBlock = 16u << 20;
  for (std::int64_t mb = 0; mb < max_mb; mb += 16) {
    blocks.emplace_back(new char[kBlock]);
    std::memset(blocks.back().get(), 0x5A, kBlock);
  }
  return max_mb;
}

// --- compute ----------------------------------------------------------------

std::int64_t count_primes_below(std::int64_t n, const JobContext& ctx) {
  if (n < 3) return 0;
  std::vector<bool> composite(static_cast<std::size_t>(n), false);
  std::int64_t count = 0;
  for (std::int64_t i = 2; i < n; ++i) {
    if (composite[static_cast<std::size_t>(i)]) continue;
    ++count;
    if ((i & 0xFFFF) == 0) ctx.throw_if_stop_requested();
    for (std::int64_t j = i * i; j < n; j += i) composite[static_cast<std::size_t>(j)] = true;
  }
  return count;
}

}  // namespace

void register_builtin(Registry& registry) {
  registry.add("echo", [](JobContext&, const json& payload) { return payload; });

  registry.add(
      "sleep",
      [](JobContext& ctx, const json& payload) {
        const auto ms = std::chrono::milliseconds(int_field(payload, "sleep", "ms", 0, kMaxMs, 0));
        const auto start = Clock::now();
        const auto end = start + ms;
        std::mutex mutex;
        std::condition_variable_any cv;
        std::unique_lock lock(mutex);
        // A long sleep says how far it is every quarter second (ctx.progress).
        constexpr auto kSlice = std::chrono::milliseconds(250);
        for (auto now = start; now < end && !ctx.stop_requested(); now = Clock::now()) {
          cv.wait_for(lock, ctx.stop_token(), std::min<Clock::duration>(end - now, kSlice), [] { return false; });
          if (ms > kSlice) ctx.progress(std::chrono::duration<double>(Clock::now() - start) / ms);
        }
        ctx.throw_if_stop_requested();  // woken early: it did not sleep its time
        const auto slept = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
        return json{{"slept_ms", slept.count()}};
      },
      {.validate = [](const json& p) { int_field(p, "sleep", "ms", 0, kMaxMs, 0); }});

  registry.add(
      "compute",
      [](JobContext& ctx, const json& payload) {
        const std::int64_t n = int_field(payload, "compute", "n", 0, kMaxPrimeLimit, 10'000);
        return json{{"primes", count_primes_below(n, ctx)}};
      },
      {.validate = [](const json& p) { int_field(p, "compute", "n", 0, kMaxPrimeLimit, 10'000); }});

  registry.add(
      "fail",
      [](JobContext&, const json& payload) -> json {
        fail_level1(throw_kind(payload), fail_message(payload));
        return nullptr;
      },
      {.validate = [](const json& p) {
         throw_kind(p);
         fail_message(p);
       }});

  registry.add(
      "flaky",
      [](JobContext& ctx, const json& payload) -> json {
        const std::int64_t k = int_field(payload, "flaky", "fail_times", 0, 1000, 1);
        if (ctx.attempt() <= k) {
          throw std::runtime_error("flaky: planned failure " + std::to_string(ctx.attempt()) + " of " +
                                   std::to_string(k));
        }
        return json{{"succeeded_on_attempt", ctx.attempt()}};
      },
      {.validate = [](const json& p) { int_field(p, "flaky", "fail_times", 0, 1000, 1); }});

  // Only safe with process isolation, which is its default.
  registry.add(
      "crash",
      [](JobContext&, const json& payload) -> json {
        const std::string how = crash_kind(payload);
        if (how == "segv") crash_segv();
        if (how == "abort") crash_abort();
        if (how == "fpe") return json{{"result", crash_fpe(0)}};
        if (how == "stack_overflow") return json{{"depth", crash_stack_overflow(0)}};
        if (how == "oom") return json{{"allocated_mb", crash_oom(int_field(payload, "crash", "max_mb", 16, 1 << 20, 65536))}};
        if (how == "exit") std::exit(3);
        return json{{"crashed", false}};
      },
      {.validate = [](const json& p) {
         crash_kind(p);
         int_field(p, "crash", "max_mb", 16, 1 << 20, 65536);
       },
       .isolation = Isolation::process});

  registry.add(
      "hang",
      [](JobContext&, const json& payload) {
        const std::int64_t ms = int_field(payload, "hang", "ms", 0, kMaxMs, 1000);
        hang_spin(ms);
        return json{{"hung_ms", ms}};
      },
      {.validate = [](const json& p) { int_field(p, "hang", "ms", 0, kMaxMs, 1000); }});
}

}  // namespace bulwark::workers
