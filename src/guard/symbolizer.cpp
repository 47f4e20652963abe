// Symbolization with a process-wide cache. libbacktrace (behind
// Boost.Stacktrace's backtrace backend) is slow on first use of a module and
// not designed for concurrent use of one state, so lookups are serialized;
// the cache makes a repeated failure cost a map lookup.
#include <mutex>
#include <string_view>
#include <unordered_map>

#include <boost/stacktrace/frame.hpp>

#include "bulwark/detail/thread_annotations.hpp"
#include "bulwark/trace.hpp"

namespace bulwark {
namespace {

struct Cache {
  detail::Mutex mutex;
  std::unordered_map<std::uintptr_t, Frame> frames BULWARK_GUARDED_BY(mutex);
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: loggers may symbolize during exit
  return *c;
}

constexpr std::size_t kMaxCachedFrames = 1 << 16;

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (std::size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

// Spelled-out standard and JSON types make names unreadably long; print them
// the way the source spells them.
std::string simplify(std::string name) {
  replace_all(name, "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >", "std::string");
  replace_all(name, "std::__cxx11::", "std::");
  replace_all(name, "nlohmann::json_abi_v3_11_2::", "nlohmann::");
  replace_all(name,
              "nlohmann::basic_json<std::map, std::vector, std::string, bool, long, unsigned long, double, "
              "std::allocator, nlohmann::adl_serializer, std::vector<unsigned char, std::allocator<unsigned char> > >",
              "nlohmann::json");
  return name;
}

Frame resolve(std::uintptr_t address) {
  // Return addresses point after the call; look up the call instruction itself.
  boost::stacktrace::frame frame(reinterpret_cast<boost::stacktrace::frame::native_frame_ptr_t>(address - 1));
  Frame out;
  out.address = address;
  out.function = simplify(frame.name());
  out.file = frame.source_file();
  out.line = static_cast<int>(frame.source_line());
  return out;
}

}  // namespace

std::vector<Frame> symbolize(const RawTrace& trace) {
  std::vector<Frame> out;
  out.reserve(trace.size);
  Cache& c = cache();
  detail::MutexLock lock(c.mutex);
  for (std::uint32_t i = 0; i < trace.size; ++i) {
    const std::uintptr_t address = trace.frames[i];
    auto it = c.frames.find(address);
    if (it == c.frames.end()) {
      if (c.frames.size() >= kMaxCachedFrames) c.frames.clear();
      it = c.frames.emplace(address, resolve(address)).first;
    }
    out.push_back(it->second);
  }
  return out;
}

}  // namespace bulwark
