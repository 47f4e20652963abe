// libFuzzer target: a JSON line or request body as bulwark reads it, from
// raw bytes to a JobSpec and back out as a rendered record; and the same
// bytes as a failure read back from a shared queue (failure_from_json).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "bulwark/job.hpp"
#include "bulwark/json_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const nlohmann::json j = bulwark::parse_json(text, bulwark::kDefaultJsonDepth);
    if (bulwark::json_depth(j, 1000) > bulwark::kDefaultJsonDepth) __builtin_trap();  // the limit must hold
    bulwark::JobRecord stored;
    stored.state = bulwark::JobState::failed;
    stored.error = bulwark::failure_from_json(j);
    (void)bulwark::to_json(stored).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    bulwark::JobSpec spec = bulwark::JobSpec::from_json(j);
    if (!spec.id.empty() && !bulwark::is_valid_job_id(spec.id)) __builtin_trap();
    bulwark::JobRecord record;
    record.id = spec.id;
    record.type = spec.type;
    record.payload = spec.payload;
    record.result = spec.payload;
    record.state = bulwark::JobState::succeeded;
    const std::string out = bulwark::to_json(record).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    (void)out;
  } catch (const bulwark::InputError&) {
  } catch (const bulwark::SpecError&) {
  }
  return 0;
}
