// Internal: how the runtime and its child worker processes talk.
//
// One socketpair per child. Each message is a frame: a 4-byte little-endian
// length, then that many bytes of JSON. The parent sends {"op":"run",...};
// the child answers {"op":"ready"} once at start (with its module map), then
// {"op":"result"} per job. From signal handlers the child may also send
// {"op":"crash"} (before dying) and {"op":"stack"} (asked for a dump); those
// are formatted by hand, without allocating.
//
// Raw trace addresses belong to the child's address space. The child reports
// where each of its modules is loaded; translate() maps a child address to
// the same instruction in this process, which loaded the same program and
// libraries, so symbolize() can name it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bulwark/failure.hpp"
#include "support/signals.hpp"
#include "bulwark/trace.hpp"

namespace bulwark::detail::wire {

constexpr std::size_t kMaxFrame = 256u << 20;
// Nesting allowed in a frame: a job's result is whatever its handler built,
// so more than limits.json_depth, but bounded all the same.
constexpr std::size_t kMaxFrameDepth = 1000;

// A number a child sent as an unsigned integer (an address, a count).
// Throws std::runtime_error for anything else: nlohmann's get<T>() of a
// float out of T's range is undefined behaviour (the wire fuzz target found
// it), so child bytes never reach it.
std::uint64_t unsigned_value(const nlohmann::json& v);
// The same for `object[key]`, or `fallback` when it is missing or not one.
std::uint64_t unsigned_or(const nlohmann::json& object, const char* key, std::uint64_t fallback) noexcept;

// A {"op": "progress", "fraction", "note"} frame's fraction (clamped to
// 0..1) and note; nullopt if either is missing or of another type.
std::optional<std::pair<double, std::string>> progress_from_json(const nlohmann::json& frame);

// Writes one frame; false if the peer is gone. Blocks until written.
bool write_frame(int fd, const std::string& json_text);

// Accumulates bytes from an fd and yields frames.
class FrameReader {
 public:
  // Reads what is available (one read(); blocks if nothing is). Returns
  // false on EOF or error.
  bool fill(int fd);
  // Appends bytes as if read (tests and the fuzz target).
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete frame, parsed; nullopt if none is complete yet. Throws
  // std::runtime_error on a malformed frame (bad JSON, over kMaxFrame bytes
  // or kMaxFrameDepth levels); the frame is dropped.
  std::optional<nlohmann::json> next();

 private:
  std::string buffer_;
};

// Blocking read of one frame (for the child). nullopt on EOF.
std::optional<nlohmann::json> read_frame_blocking(int fd, FrameReader& reader);

// Where each loaded module lies in this process.
struct Module {
  std::string name;  // path; "" for the main program
  std::uintptr_t base = 0;
  std::uintptr_t lo = 0, hi = 0;  // executable range
};
std::vector<Module> loaded_modules();
nlohmann::json to_json(const std::vector<Module>& modules);
std::vector<Module> modules_from_json(const nlohmann::json& j);

// Maps `child` trace addresses into this process using both module maps.
// Addresses in modules this process lacks are kept as they are.
RawTrace translate(const RawTrace& child, const std::vector<Module>& child_modules);

nlohmann::json trace_to_json(const RawTrace& trace);
RawTrace trace_from_json(const nlohmann::json& j);

// A Failure's wire form (raw addresses) and back.
nlohmann::json failure_to_json(const Failure& f);
Failure failure_from_json(const nlohmann::json& j, const std::vector<Module>& child_modules);

// "SIGSEGV" for SIGSEGV, "signal 42" for one without a name.
std::string signal_name(int sig);

// Writes `buf` as one frame with write(2) only. Async-signal-safe.
void write_frame_raw(int fd, const SignalBuffer& buf) noexcept;

}  // namespace bulwark::detail::wire
