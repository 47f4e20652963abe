#include "bulwark/failure.hpp"

#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <typeinfo>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "support/text.hpp"

namespace bulwark {
namespace {

constexpr std::size_t kMaxMessage = 4096;
constexpr std::size_t kMaxNested = 16;

// Demangling allocates and walks the whole name; a failing job type throws
// the same few types over and over, so each thread keeps what it demangled.
std::string demangle_uncached(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                                   &std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

std::string demangle(const char* mangled) {
  thread_local std::unordered_map<const char*, std::string> cache;  // keyed by the type_info's name pointer
  auto it = cache.find(mangled);
  if (it != cache.end()) return it->second;
  if (cache.size() >= 256) cache.clear();
  return cache.emplace(mangled, demangle_uncached(mangled)).first->second;
}

std::string bounded(std::string_view s) {
  if (s.size() <= kMaxMessage) return std::string(s);
  return std::string(s.substr(0, kMaxMessage)) + "…[truncated]";
}

// Type and message of the exception being handled; for std::exception also
// the nested exception it carries, if any.
struct Level {
  std::string type;
  std::string message;
  std::exception_ptr next;
};

template <class T>
Level scalar(const char* type, T value) {
  return {type, std::to_string(value), nullptr};
}

Level std_level(const std::exception& e) {
  Level level{demangle(typeid(e).name()), bounded(e.what()), nullptr};
  if (const auto* nested = dynamic_cast<const std::nested_exception*>(&e)) level.next = nested->nested_ptr();
  return level;
}

Level classify_level() {
  try {
    throw;
  } catch (const std::exception& e) {
    return std_level(e);
  } catch (const std::nested_exception& e) {
    return {demangle(typeid(e).name()), "", e.nested_ptr()};
  } catch (const char* s) {
    return {"const char*", bounded(s != nullptr ? s : "(null)"), nullptr};
  } catch (const std::string& s) {
    return {"std::string", bounded(s), nullptr};
  } catch (std::string_view s) {
    return {"std::string_view", bounded(s), nullptr};
  } catch (bool v) {
    return {"bool", v ? "true" : "false", nullptr};
  } catch (char v) {
    return {"char", std::string(1, v), nullptr};
  } catch (int v) {
    return scalar("int", v);
  } catch (unsigned v) {
    return scalar("unsigned int", v);
  } catch (long v) {
    return scalar("long", v);
  } catch (unsigned long v) {
    return scalar("unsigned long", v);
  } catch (long long v) {
    return scalar("long long", v);
  } catch (unsigned long long v) {
    return scalar("unsigned long long", v);
  } catch (double v) {
    return scalar("double", v);
  } catch (float v) {
    return scalar("float", v);
  } catch (...) {
    const std::type_info* type = abi::__cxa_current_exception_type();
    return {type != nullptr ? demangle(type->name()) : "unknown", "", nullptr};
  }
}

Level classify_level(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (...) {
    return classify_level();
  }
}

Failure classify(const std::exception_ptr& e, Level top) {
  Failure failure;
  failure.type = std::move(top.type);
  failure.message = std::move(top.message);
  failure.trace = throw_site_trace(e);
  std::exception_ptr next = top.next;
  while (next && failure.nested.size() < kMaxNested) {
    Level level = classify_level(next);
    failure.nested.push_back({std::move(level.type), std::move(level.message), throw_site_trace(next)});
    next = level.next;
  }
  return failure;
}

Failure out_of_memory_failure() noexcept {
  // Both strings fit the small-string buffer: no allocation.
  Failure failure;
  failure.type = "std::bad_alloc";
  failure.message = "oom";
  return failure;
}

}  // namespace

std::string_view to_string(FailureKind kind) noexcept {
  switch (kind) {
    case FailureKind::exception: return "exception";
    case FailureKind::timeout: return "timeout";
    case FailureKind::crash: return "crash";
    case FailureKind::shutdown: return "shutdown";
    case FailureKind::invalid: return "invalid";
    case FailureKind::cancelled: return "cancelled";
    case FailureKind::lease_lost: return "lease_lost";
    case FailureKind::child_failed: return "child_failed";
  }
  return "unknown";
}

std::string_view to_string(FailureOrigin origin) noexcept {
  switch (origin) {
    case FailureOrigin::handler: return "handler";
    case FailureOrigin::defer: return "defer";
    case FailureOrigin::on_failure: return "on_failure";
  }
  return "handler";
}

FailureOrigin failure_origin_from(std::string_view text) noexcept {
  if (text == "defer") return FailureOrigin::defer;
  if (text == "on_failure") return FailureOrigin::on_failure;
  return FailureOrigin::handler;
}

Failure make_failure(FailureKind kind, std::string message) {
  Failure failure;
  failure.kind = kind;
  failure.message = std::move(message);
  return failure;
}

Failure classify_exception(const std::exception_ptr& e) noexcept {
  try {
    return classify(e, classify_level(e));
  } catch (...) {
    return out_of_memory_failure();
  }
}

Failure classify_exception(const std::exception& e, const std::exception_ptr& ptr) noexcept {
  try {
    return classify(ptr, std_level(e));  // no rethrow: the caller caught it as std::exception already
  } catch (...) {
    return out_of_memory_failure();
  }
}

Failure classify_current_exception() noexcept { return classify_exception(std::current_exception()); }

namespace {

nlohmann::ordered_json frame_json(const Frame& f) {
  return {{"function", f.function}, {"file", f.file}, {"line", f.line}, {"address", detail::hex(f.address)}};
}

nlohmann::ordered_json frames_json(const std::vector<Frame>& frames) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const Frame& f : frames) out.push_back(frame_json(f));
  return out;
}

std::string text_of(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::vector<Frame> frames_from(const nlohmann::json& j) {
  std::vector<Frame> out;
  if (!j.is_array()) return out;
  for (const auto& f : j) {
    if (!f.is_object()) continue;
    Frame frame;
    frame.function = text_of(f, "function");
    frame.file = text_of(f, "file");
    if (auto line = f.find("line"); line != f.end() && line->is_number_integer()) frame.line = line->get<int>();
    frame.address = static_cast<std::uintptr_t>(std::strtoull(text_of(f, "address").c_str(), nullptr, 16));
    out.push_back(std::move(frame));
  }
  return out;
}

}  // namespace

Failure failure_from_json(const nlohmann::json& j) {
  Failure f;
  if (!j.is_object()) return f;
  const std::string kind = text_of(j, "kind");
  for (std::size_t k = 0; k < kFailureKinds; ++k) {
    if (to_string(static_cast<FailureKind>(k)) == kind) f.kind = static_cast<FailureKind>(k);
  }
  f.type = text_of(j, "type");
  f.message = text_of(j, "message");
  f.origin = failure_origin_from(text_of(j, "origin"));
  f.signal = text_of(j, "signal");
  if (auto t = j.find("trace"); t != j.end()) f.frames = frames_from(*t);
  if (auto n = j.find("nested"); n != j.end() && n->is_array()) {
    for (const auto& level : *n) {
      if (!level.is_object()) continue;
      NestedFailure nf{text_of(level, "type"), text_of(level, "message"), {}, {}};
      if (auto t = level.find("trace"); t != level.end()) nf.frames = frames_from(*t);
      f.nested.push_back(std::move(nf));
    }
  }
  return f;
}

nlohmann::ordered_json to_json(const RawTrace& trace, bool symbolized) {
  nlohmann::ordered_json frames = nlohmann::ordered_json::array();
  if (symbolized) {
    for (const Frame& f : symbolize(trace)) frames.push_back(frame_json(f));
  } else {
    for (std::uint32_t i = 0; i < trace.size; ++i) frames.push_back({{"address", detail::hex(trace.frames[i])}});
  }
  return frames;
}

nlohmann::ordered_json to_json(const Failure& failure, bool symbolized) {
  nlohmann::ordered_json nested = nlohmann::ordered_json::array();
  for (const NestedFailure& n : failure.nested) {
    nested.push_back({{"type", n.type},
                      {"message", n.message},
                      {"trace", n.frames.empty() ? to_json(n.trace, symbolized) : frames_json(n.frames)}});
  }
  nlohmann::ordered_json out = {{"kind", to_string(failure.kind)},
                        {"type", failure.type},
                        {"message", failure.message},
                        {"nested", std::move(nested)},
                        {"trace", failure.frames.empty() ? to_json(failure.trace, symbolized) : frames_json(failure.frames)}};
  if (failure.origin != FailureOrigin::handler) out["origin"] = to_string(failure.origin);
  if (!failure.signal.empty()) out["signal"] = failure.signal;
  if (failure.trace.truncated) out["trace_truncated"] = true;
  return out;
}

}  // namespace bulwark
