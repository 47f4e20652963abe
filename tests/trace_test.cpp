#include <doctest/doctest.h>

#include <algorithm>
#include <exception>
#include <thread>
#include <stdexcept>
#include <vector>

#include "bulwark/guarded.hpp"
#include "bulwark/trace.hpp"
#include "support/helpers.hpp"

extern "C" void shared_lib_entry(int depth);

namespace {

using bulwark::current_exception_trace;
using bulwark::testing::top_function;
using bulwark::testing::trace_names;

__attribute__((noinline)) void trace_test_throw_site(int x) {
  if (x > 0) throw std::runtime_error("deep");
}
__attribute__((noinline)) void trace_test_level2(int x) {
  trace_test_throw_site(x);
  asm volatile("");
}
__attribute__((noinline)) void trace_test_level1(int x) {
  trace_test_level2(x);
  asm volatile("");
}

__attribute__((noinline)) void trace_test_library_throw() {
  std::vector<int> v;
  (void)v.at(5);
}

// The throw-site trace of whatever `f` throws.
template <class F>
bulwark::RawTrace trace_of(F&& f) {
  try {
    f();
  } catch (...) {
    return current_exception_trace();
  }
  FAIL("nothing was thrown");
  return {};
}

// Every throw traced while it lives; the mode before it afterwards.
struct CaptureOn {
  CaptureOn() { bulwark::set_throw_trace_capture(true); }
  ~CaptureOn() { bulwark::set_throw_trace_capture(before); }
  bulwark::TraceCapture before = bulwark::throw_trace_capture_mode();
};

struct CaptureMode {
  explicit CaptureMode(bulwark::TraceCapture mode) { bulwark::set_throw_trace_capture(mode); }
  ~CaptureMode() { bulwark::set_throw_trace_capture(before); }
  bulwark::TraceCapture before = bulwark::throw_trace_capture_mode();
};

// Calls guarded() from a frame of its own: a trace that ends at the guarded
// frame names it last, and nothing of its callers.
__attribute__((noinline)) bulwark::RawTrace trace_test_guarded_caller() {
  auto outcome = bulwark::guarded([] { trace_test_level1(1); });
  asm volatile("");
  return outcome.ok() ? bulwark::RawTrace{} : bulwark::throw_site_trace(outcome.exception());
}
__attribute__((noinline)) bulwark::RawTrace trace_test_unguarded_caller() {
  auto trace = trace_of([] { trace_test_level1(1); });
  asm volatile("");
  return trace;
}

}  // namespace

TEST_SUITE("throw-site trace") {
  TEST_CASE("a throw three calls deep is traced from the throwing function") {
    CaptureOn on;
    bulwark::RawTrace trace = trace_of([] { trace_test_level1(1); });
    REQUIRE_FALSE(trace.empty());
    CHECK(top_function(trace).find("trace_test_throw_site") != std::string::npos);
    CHECK(trace_names(trace, "trace_test_level2"));
    CHECK(trace_names(trace, "trace_test_level1"));
  }

  TEST_CASE("the trace is of the throw site, not of the catch site") {
    CaptureOn on;
    bulwark::RawTrace trace = trace_of([] { trace_test_level1(1); });
    // The catching frame is this test case; the frames above it must be the
    // three throwing calls, which are gone from the stack at catch time.
    const auto frames = bulwark::symbolize(trace);
    REQUIRE(frames.size() >= 3);
    CHECK(frames[1].function.find("trace_test_level2") != std::string::npos);
    CHECK(frames[2].function.find("trace_test_level1") != std::string::npos);
  }

  TEST_CASE("a bare rethrow keeps the original trace") {
    CaptureOn on;
    bulwark::RawTrace inner;
    bulwark::RawTrace outer;
    try {
      try {
        trace_test_level1(1);
      } catch (...) {
        inner = current_exception_trace();
        throw;
      }
    } catch (...) {
      outer = current_exception_trace();
    }
    REQUIRE_FALSE(outer.empty());
    CHECK(outer.size == inner.size);
    CHECK(std::equal(outer.frames.begin(), outer.frames.begin() + outer.size, inner.frames.begin()));
    CHECK(top_function(outer).find("trace_test_throw_site") != std::string::npos);
  }

  TEST_CASE("rethrow_exception on another thread keeps the trace" * doctest::timeout(30)) {
    CaptureOn on;
    std::exception_ptr saved;
    try {
      trace_test_level1(1);
    } catch (...) {
      saved = std::current_exception();
    }
    bulwark::RawTrace trace;
    std::thread([&] {
      try {
        std::rethrow_exception(saved);
      } catch (...) {
        trace = current_exception_trace();
      }
    }).join();
    CHECK(top_function(trace).find("trace_test_throw_site") != std::string::npos);
  }

  TEST_CASE("an exception thrown by the standard library names the calling function") {
    CaptureOn on;
    bulwark::RawTrace trace = trace_of([] { trace_test_library_throw(); });
    CHECK(trace_names(trace, "trace_test_library_throw"));
  }

  TEST_CASE("an exception thrown inside a shared library is traced there") {
    CaptureOn on;
    bulwark::RawTrace trace = trace_of([] { shared_lib_entry(1); });
    CHECK(top_function(trace).find("shared_lib_throw_site") != std::string::npos);
    CHECK(trace_names(trace, "shared_lib_entry"));
  }

  TEST_CASE("with capture off, a throw carries no trace") {
    CaptureOn restore;
    bulwark::set_throw_trace_capture(false);
    CHECK(trace_of([] { trace_test_level1(1); }).empty());
    bulwark::set_throw_trace_capture(true);
    CHECK_FALSE(trace_of([] { trace_test_level1(1); }).empty());
  }

  TEST_CASE("by default only throws inside a guarded call are traced, and only up to its frame") {
    CaptureMode guarded(bulwark::TraceCapture::guarded);
    CHECK(trace_test_unguarded_caller().empty());  // no guarded frame on this thread: no capture
    const bulwark::RawTrace inside = trace_test_guarded_caller();
    REQUIRE_FALSE(inside.empty());
    CHECK(top_function(inside).find("trace_test_throw_site") != std::string::npos);
    CHECK(trace_names(inside, "trace_test_level1"));
    const auto frames = bulwark::symbolize(inside);
    CHECK(frames.back().function.find("trace_test_guarded_caller") != std::string::npos);  // the guarded frame, last
    CHECK_FALSE(trace_names(inside, "DOCTEST_ANON_FUNC"));  // nothing above it: the test, doctest, main
  }

  TEST_CASE("'everywhere' traces a throw outside any guarded call to the bottom of the stack") {
    CaptureMode everywhere(bulwark::TraceCapture::everywhere);
    const bulwark::RawTrace outside = trace_test_unguarded_caller();
    REQUIRE_FALSE(outside.empty());
    CHECK(trace_names(outside, "trace_test_unguarded_caller"));
    CHECK(trace_names(outside, "DOCTEST_ANON_FUNC"));                       // to the bottom
    CHECK_FALSE(trace_names(trace_test_guarded_caller(), "DOCTEST_ANON_FUNC"));  // a guarded one still ends at its frame
    bulwark::set_throw_trace_capture(bulwark::TraceCapture::off);
    CHECK(trace_test_guarded_caller().empty());
  }

  TEST_CASE("a very deep throw keeps the innermost frames and says it was truncated") {
    CaptureOn on;
    struct Recurse {
      __attribute__((noinline)) static void down(int n) {
        if (n == 0) trace_test_throw_site(1);
        else down(n - 1);
        asm volatile("");
      }
    };
    bulwark::RawTrace trace = trace_of([] { Recurse::down(200); });
    CHECK(trace.size == bulwark::RawTrace::kMaxFrames);
    CHECK(trace.truncated);
    CHECK(top_function(trace).find("trace_test_throw_site") != std::string::npos);
  }

  TEST_CASE("symbolize resolves file and line for code built with debug info") {
    CaptureOn on;
    bulwark::RawTrace trace = trace_of([] { trace_test_level1(1); });
    const auto frames = bulwark::symbolize(trace);
    REQUIRE_FALSE(frames.empty());
    CHECK(frames.front().file.find("trace_test.cpp") != std::string::npos);
    CHECK(frames.front().line > 0);
    CHECK(frames.front().address == trace.frames[0]);
  }

  TEST_CASE("an empty exception_ptr has an empty trace") {
    CHECK(bulwark::throw_site_trace(nullptr).empty());
  }
}

namespace {
__attribute__((noinline)) bulwark::RawTrace trace_test_capture_here() {
  bulwark::RawTrace t = bulwark::capture_stack();
  asm volatile("");
  return t;
}
}  // namespace

TEST_CASE("capture_stack starts at its caller") {
  const auto frames = bulwark::symbolize(trace_test_capture_here());
  REQUIRE_FALSE(frames.empty());
  CHECK(frames.front().function.find("trace_test_capture_here") != std::string::npos);
}
