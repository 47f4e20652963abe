// Failure: what went wrong in one attempt of a job, as a plain value.
//
// The guarded frame turns whatever a job throws into a Failure: the kind of
// failure, the demangled dynamic type of the thrown value, its message, the
// nested exceptions below it (std::throw_with_nested), and the raw throw-site
// trace. Traces stay raw here; `to_json(failure, symbolized)` resolves them
// when the record is rendered.
//
//   bulwark::Failure f = ...;
//   if (f.kind == bulwark::FailureKind::exception) log(f.type, f.message);
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "bulwark/trace.hpp"

namespace bulwark {

enum class FailureKind {
  exception,  // a thrown value
  timeout,    // the hard timeout was reached
  crash,      // the process running the job died from a signal
  shutdown,   // the runtime stopped before the job could finish
  invalid,    // bad input: the job was never run
  cancelled,  // the job stopped because a user cancelled it (JobContext::throw_if_stop_requested)
  lease_lost, // the process running it died or stalled past its lease (a shared queue took the job back)
  child_failed,  // a flow's parent: one of its children failed or was cancelled (ChildFailure::fail)
};
inline constexpr std::size_t kFailureKinds = 8;

std::string_view to_string(FailureKind kind) noexcept;

// Where in an attempt a failure was raised: the handler itself, or one of
// its cleanups (JobContext::defer, JobContext::on_failure).
enum class FailureOrigin { handler, defer, on_failure };
std::string_view to_string(FailureOrigin origin) noexcept;
// The origin named `text` ("handler", "defer", "on_failure"); handler for
// anything else.
FailureOrigin failure_origin_from(std::string_view text) noexcept;

// One level below the top of a std::throw_with_nested chain.
struct NestedFailure {
  std::string type{};
  std::string message{};
  RawTrace trace{};
  std::vector<Frame> frames{};  // a trace already symbolized elsewhere (see Failure::frames)
};

struct Failure {
  FailureKind kind = FailureKind::exception;
  std::string type{};     // demangled dynamic type, e.g. "std::runtime_error", "int"
  std::string message{};  // what(), or the value of a thrown scalar or string
  std::vector<NestedFailure> nested{};  // outermost first
  RawTrace trace{};       // where the top-level value was thrown
  FailureOrigin origin = FailureOrigin::handler;
  std::string signal{};   // kind crash: the signal that killed the process ("SIGSEGV"); empty for an exit
  // The trace as symbolized by the process that caught the failure, when
  // it was read back from a shared queue (raw addresses mean nothing in
  // another process); used instead of `trace` when set.
  std::vector<Frame> frames{};
};

// Builds a failure of a kind other than `exception`.
Failure make_failure(FailureKind kind, std::string message);

// Classifies the exception being handled. Call it only inside a catch block.
// Never throws: if recording itself runs out of memory, a short failure saying
// so is returned. Thread-safe, does not block.
Failure classify_current_exception() noexcept;

// Classifies `e` (not null).
Failure classify_exception(const std::exception_ptr& e) noexcept;

// Classifies a std::exception the caller has caught, `ptr` being the same
// exception; cheaper than the exception_ptr form (no rethrow).
Failure classify_exception(const std::exception& e, const std::exception_ptr& ptr) noexcept;

// The failure as in bulwark's output: {"kind","type","message","nested",
// "trace"}. With `symbolized`, frames carry function, file and line
// (see symbolize(): blocks, call it off the worker threads); without, only
// addresses.
nlohmann::ordered_json to_json(const Failure& failure, bool symbolized = true);
nlohmann::ordered_json to_json(const RawTrace& trace, bool symbolized = true);

// A failure from its symbolized JSON (to_json(failure, true)): kind, type,
// message, origin, signal, nested, and the frames as `frames`. Unknown or
// missing fields are left at their defaults; never throws on odd input.
Failure failure_from_json(const nlohmann::json& j);

}  // namespace bulwark
