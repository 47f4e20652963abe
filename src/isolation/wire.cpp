#include "isolation/wire.hpp"

#include <algorithm>

#include "bulwark/json_input.hpp"

#include <link.h>
#include <sys/socket.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace bulwark::detail::wire {
namespace {

bool send_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);  // a dead peer is an error, not SIGPIPE
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void put_length(char* out, std::uint32_t n) noexcept {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
}

}  // namespace

std::uint64_t unsigned_value(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
  throw std::runtime_error("malformed frame: expected an unsigned integer, got " + v.dump().substr(0, 40));
}

std::uint64_t unsigned_or(const nlohmann::json& object, const char* key, std::uint64_t fallback) noexcept {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  if (it == object.end()) return fallback;
  try {
    return unsigned_value(*it);
  } catch (const std::exception&) {
    return fallback;
  }
}

bool write_frame(int fd, const std::string& json_text) {
  if (json_text.size() > kMaxFrame) throw std::length_error("frame larger than 256 MiB");
  std::string frame(4, '\0');
  put_length(frame.data(), static_cast<std::uint32_t>(json_text.size()));
  frame += json_text;
  return send_all(fd, frame.data(), frame.size());
}

bool FrameReader::fill(int fd) {
  char chunk[65536];
  for (;;) {
    const ssize_t r = ::read(fd, chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(r));
    return true;
  }
}

std::optional<nlohmann::json> FrameReader::next() {
  if (buffer_.size() < 4) return std::nullopt;
  std::uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(buffer_[i])) << (8 * i);
  if (n > kMaxFrame) throw std::runtime_error("frame length " + std::to_string(n) + " is over the limit");
  if (buffer_.size() < 4 + static_cast<std::size_t>(n)) return std::nullopt;
  const std::string_view text(buffer_.data() + 4, n);
  std::optional<nlohmann::json> j;
  try {
    j = parse_json(text, kMaxFrameDepth);
  } catch (const InputError& e) {
    buffer_.erase(0, 4 + static_cast<std::size_t>(n));
    throw std::runtime_error(std::string("malformed frame: ") + e.what());
  }
  buffer_.erase(0, 4 + static_cast<std::size_t>(n));
  return j;
}

std::optional<nlohmann::json> read_frame_blocking(int fd, FrameReader& reader) {
  for (;;) {
    if (auto frame = reader.next()) return frame;
    if (!reader.fill(fd)) return std::nullopt;
  }
}

std::vector<Module> loaded_modules() {
  std::vector<Module> out;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        Module m;
        m.name = info->dlpi_name != nullptr ? info->dlpi_name : "";
        m.base = info->dlpi_addr;
        m.lo = UINTPTR_MAX;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          m.lo = std::min<std::uintptr_t>(m.lo, info->dlpi_addr + ph.p_vaddr);
          m.hi = std::max<std::uintptr_t>(m.hi, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
        }
        if (m.lo != UINTPTR_MAX) static_cast<std::vector<Module>*>(data)->push_back(std::move(m));
        return 0;
      },
      &out);
  return out;
}

nlohmann::json to_json(const std::vector<Module>& modules) {
  nlohmann::json out = nlohmann::json::array();
  for (const Module& m : modules) out.push_back({m.name, m.base, m.lo, m.hi});
  return out;
}

std::vector<Module> modules_from_json(const nlohmann::json& j) {
  std::vector<Module> out;
  for (const auto& m : j) {
    out.push_back({m.at(0).get<std::string>(), unsigned_value(m.at(1)), unsigned_value(m.at(2)),
                   unsigned_value(m.at(3))});
  }
  return out;
}

RawTrace translate(const RawTrace& child, const std::vector<Module>& child_modules) {
  static const std::vector<Module> mine = loaded_modules();
  RawTrace out = child;
  for (std::uint32_t i = 0; i < child.size; ++i) {
    const std::uintptr_t a = child.frames[i];
    for (const Module& cm : child_modules) {
      if (a < cm.lo || a >= cm.hi) continue;
      for (const Module& m : mine) {
        if (m.name == cm.name) {
          out.frames[i] = a - cm.base + m.base;
          break;
        }
      }
      break;
    }
  }
  return out;
}

nlohmann::json trace_to_json(const RawTrace& trace) {
  nlohmann::json frames = nlohmann::json::array();
  for (std::uint32_t i = 0; i < trace.size; ++i) frames.push_back(trace.frames[i]);
  return {{"frames", std::move(frames)}, {"truncated", trace.truncated}};
}

RawTrace trace_from_json(const nlohmann::json& j) {
  RawTrace t;
  if (!j.is_object()) return t;
  const auto& frames = j.at("frames");
  for (const auto& f : frames) {
    if (t.size == RawTrace::kMaxFrames) break;
    t.frames[t.size++] = unsigned_value(f);
  }
  t.truncated = j.value("truncated", false);
  return t;
}

nlohmann::json failure_to_json(const Failure& f) {
  nlohmann::json nested = nlohmann::json::array();
  for (const NestedFailure& n : f.nested) {
    nested.push_back({{"type", n.type}, {"message", n.message}, {"trace", trace_to_json(n.trace)}});
  }
  return {{"kind", static_cast<int>(f.kind)}, {"type", f.type},         {"message", f.message},
          {"nested", std::move(nested)},      {"trace", trace_to_json(f.trace)}, {"origin", to_string(f.origin)},
          {"signal", f.signal}};
}

Failure failure_from_json(const nlohmann::json& j, const std::vector<Module>& child_modules) {
  Failure f;
  const std::uint64_t kind = unsigned_value(j.at("kind"));
  f.kind = kind < kFailureKinds ? static_cast<FailureKind>(kind) : FailureKind::exception;
  f.type = j.at("type").get<std::string>();
  f.message = j.at("message").get<std::string>();
  for (const auto& n : j.at("nested")) {
    f.nested.push_back({n.at("type").get<std::string>(), n.at("message").get<std::string>(),
                        translate(trace_from_json(n.at("trace")), child_modules)});
  }
  f.trace = translate(trace_from_json(j.at("trace")), child_modules);
  f.origin = failure_origin_from(j.value("origin", "handler"));
  f.signal = j.value("signal", "");
  return f;
}

std::string signal_name(int sig) {
  if (const char* abbrev = sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

void write_frame_raw(int fd, const SignalBuffer& buf) noexcept {
  char header[4];
  put_length(header, static_cast<std::uint32_t>(buf.size));
  if (send_all(fd, header, 4)) send_all(fd, buf.data, buf.size);
}

std::optional<std::pair<double, std::string>> progress_from_json(const nlohmann::json& frame) {
  const auto fraction = frame.find("fraction");
  const auto note = frame.find("note");
  if (fraction == frame.end() || !fraction->is_number() || note == frame.end() || !note->is_string()) return std::nullopt;
  return std::pair{std::clamp(fraction->get<double>(), 0.0, 1.0), note->get<std::string>()};
}

}  // namespace bulwark::detail::wire
