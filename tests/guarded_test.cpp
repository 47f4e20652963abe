#include <doctest/doctest.h>

#include <pthread.h>

#include <atomic>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "bulwark/guarded.hpp"
#include "support/helpers.hpp"

namespace {

struct UserError {
  int code;
};

template <class F>
bulwark::Failure failure_of(F&& f) {
  auto outcome = bulwark::guarded(std::forward<F>(f));
  REQUIRE_FALSE(outcome.ok());
  return outcome.failure();
}

__attribute__((noinline)) void guarded_test_throw_site() { throw std::runtime_error("inner cause"); }

}  // namespace

TEST_SUITE("guarded") {
  TEST_CASE("a value passes through") {
    auto outcome = bulwark::guarded([] { return 42; });
    REQUIRE(outcome.ok());
    CHECK(outcome.value() == 42);
    CHECK_FALSE(outcome.exception());
  }

  TEST_CASE("a void function succeeds with no value") {
    int calls = 0;
    auto outcome = bulwark::guarded([&] { ++calls; });
    CHECK(outcome.ok());
    CHECK(calls == 1);
  }

  TEST_CASE("std::exception subclasses give their dynamic type and what()") {
    auto f = failure_of([] { throw std::out_of_range("index 9"); });
    CHECK(f.kind == bulwark::FailureKind::exception);
    CHECK(f.type == "std::out_of_range");
    CHECK(f.message == "index 9");

    f = failure_of([]() -> int { throw std::logic_error("bad state"); });
    CHECK(f.type == "std::logic_error");
    CHECK(f.message == "bad state");

    // Thrown through a base reference: the dynamic type still shows.
    f = failure_of([] {
      const std::exception& e = std::runtime_error("hidden");
      throw std::runtime_error(static_cast<const std::runtime_error&>(e));
    });
    CHECK(f.type == "std::runtime_error");
  }

  TEST_CASE("bad_alloc is an ordinary failure") {
    auto f = failure_of([] { throw std::bad_alloc(); });
    CHECK(f.type == "std::bad_alloc");
    CHECK(f.message == "std::bad_alloc");
  }

  TEST_CASE("scalars, C strings and std::string give their type and value") {
    auto f = failure_of([] { throw 42; });
    CHECK(f.type == "int");
    CHECK(f.message == "42");

    f = failure_of([] { throw "c-string boom"; });
    CHECK(f.type == "const char*");
    CHECK(f.message == "c-string boom");

    f = failure_of([] { throw std::string("string boom"); });
    CHECK(f.type == "std::string");
    CHECK(f.message == "string boom");

    f = failure_of([] { throw 2.5; });
    CHECK(f.type == "double");
    CHECK(f.message.rfind("2.5", 0) == 0);

    f = failure_of([] { throw 7UL; });
    CHECK(f.type == "unsigned long");
    CHECK(f.message == "7");
  }

  TEST_CASE("a user struct gives its demangled type") {
    auto f = failure_of([] { throw UserError{3}; });
    CHECK(f.type == "(anonymous namespace)::UserError");
    CHECK(f.message.empty());
  }

  TEST_CASE("a throw_with_nested chain is recorded level by level, outermost first") {
    auto f = failure_of([] {
      try {
        try {
          guarded_test_throw_site();
        } catch (...) {
          std::throw_with_nested(std::logic_error("middle"));
        }
      } catch (...) {
        std::throw_with_nested(std::runtime_error("outer"));
      }
    });
    CHECK(f.message == "outer");
    CHECK(f.type.find("std::runtime_error") != std::string::npos);
    REQUIRE(f.nested.size() == 2);
    CHECK(f.nested[0].message == "middle");
    CHECK(f.nested[0].type.find("std::logic_error") != std::string::npos);
    CHECK(f.nested[1].message == "inner cause");
    CHECK(f.nested[1].type == "std::runtime_error");
    // The root cause keeps its own throw site.
    CHECK(bulwark::testing::top_function(f.nested[1].trace).find("guarded_test_throw_site") != std::string::npos);
  }

  TEST_CASE("the original exception is kept for rethrowing") {
    auto outcome = bulwark::guarded([] { throw std::runtime_error("keep me"); });
    REQUIRE(outcome.exception());
    try {
      std::rethrow_exception(outcome.exception());
      FAIL("not rethrown");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "keep me");
    }
  }

  TEST_CASE("thread cancellation (abi::__forced_unwind) is never swallowed" * doctest::timeout(10)) {
    std::atomic<bool> started{false};
    std::atomic<bool> swallowed{false};
    std::thread t([&] {
      bulwark::guarded([&] {
        started = true;
        for (;;) pthread_testcancel();
      });
      swallowed = true;  // only reached if guarded() ate the unwind
    });
    while (!started) std::this_thread::yield();
    pthread_cancel(t.native_handle());
    t.join();
    CHECK_FALSE(swallowed.load());
  }

  TEST_CASE("to_json renders kind, type, message, nested and symbolized frames") {
    auto f = failure_of([] { guarded_test_throw_site(); });
    const auto j = bulwark::to_json(f);
    CHECK(j["kind"] == "exception");
    CHECK(j["type"] == "std::runtime_error");
    CHECK(j["message"] == "inner cause");
    CHECK(j["nested"].empty());
    REQUIRE(j["trace"].is_array());
    REQUIRE_FALSE(j["trace"].empty());
    CHECK(j["trace"][0]["function"].get<std::string>().find("guarded_test_throw_site") != std::string::npos);
    CHECK(j["trace"][0]["address"].get<std::string>().rfind("0x", 0) == 0);
  }
}
