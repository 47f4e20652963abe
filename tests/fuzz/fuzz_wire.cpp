// libFuzzer target: bytes a child worker process could send its parent,
// through the frame reader and the readers of each frame's parts.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "isolation/wire.hpp"

using namespace bulwark::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  wire::FrameReader reader;
  reader.feed(std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    std::vector<wire::Module> modules;
    while (auto frame = reader.next()) {
      // As ProcessPool reads them: every accessor may throw, none may crash.
      try {
        const std::string op = frame->value("op", "");
        if (op == "ready") modules = wire::modules_from_json(frame->at("modules"));
        if (op == "result" && !frame->at("ok").get<bool>()) {
          (void)wire::failure_from_json(frame->at("failure"), modules);
          for (const auto& e : frame->at("cleanup_errors")) (void)wire::failure_from_json(e, modules);
        }
        if (op == "progress") (void)wire::progress_from_json(*frame);
        if (op == "stack" || op == "crash") (void)wire::translate(wire::trace_from_json(frame->at("trace")), modules);
      } catch (const nlohmann::json::exception&) {
      }
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
