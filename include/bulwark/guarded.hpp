// guarded(): the frame every job runs in.
//
// `guarded(f)` calls `f()` and returns an Outcome: its value, or the Failure
// classified from whatever it threw, with the original exception kept so it
// can be rethrown later. No exception escapes except abi::__forced_unwind
// (thread cancellation), which must never be swallowed.
//
//   bulwark::Outcome<int> r = bulwark::guarded([] { return parse_port(text); });
//   if (!r.ok()) log(r.failure().type, r.failure().message);
//
// Thread-safe (it holds no state); blocks only as long as `f` does.
#pragma once

#include <cxxabi.h>

#include <exception>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

#include "bulwark/failure.hpp"

namespace bulwark {

// The result of a guarded call: a value or a Failure plus the original
// exception. For `void` functions the value is std::monostate.
template <class T>
class Outcome {
 public:
  using value_type = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

  explicit Outcome(value_type value) : state_(std::in_place_index<0>, std::move(value)) {}
  Outcome(Failure failure, std::exception_ptr exception)
      : state_(std::in_place_index<1>, std::move(failure)), exception_(std::move(exception)) {}

  bool ok() const noexcept { return state_.index() == 0; }
  value_type& value() & { return std::get<0>(state_); }
  value_type&& value() && { return std::get<0>(std::move(state_)); }
  const Failure& failure() const { return std::get<1>(state_); }
  Failure& failure() { return std::get<1>(state_); }
  // The exception that was caught; null on success or for failures that were
  // not thrown (timeout, shutdown).
  const std::exception_ptr& exception() const noexcept { return exception_; }

 private:
  std::variant<value_type, Failure> state_;
  std::exception_ptr exception_;
};

// UBSan's null-reference check is off here: a forced unwind is a foreign
// exception with no object, and catching it by reference (the only way) binds
// a reference to null by design.
template <class F>
__attribute__((no_sanitize("null"))) auto guarded(F&& f) -> Outcome<std::invoke_result_t<F&&>> {
  using R = std::invoke_result_t<F&&>;
  try {
    // Throws below this frame are traced, up to it (trace.hpp); gone before
    // the handlers run, so classifying does not capture.
    const detail::GuardFrame frame(__builtin_frame_address(0));
    if constexpr (std::is_void_v<R>) {
      std::forward<F>(f)();
      return Outcome<R>(std::monostate{});
    } else {
      return Outcome<R>(std::forward<F>(f)());
    }
  } catch (const abi::__forced_unwind&) {
    throw;  // thread cancellation unwinds through us; swallowing it aborts the process
  } catch (const std::exception& e) {
    auto ptr = std::current_exception();
    Failure failure = classify_exception(e, ptr);  // before ptr is moved: argument order is unspecified
    return Outcome<R>(std::move(failure), std::move(ptr));
  } catch (...) {
    return Outcome<R>(classify_current_exception(), std::current_exception());
  }
}

}  // namespace bulwark
