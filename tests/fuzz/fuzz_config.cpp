// libFuzzer target: a configuration file's bytes through the strict loader.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "bulwark/config.hpp"
#include "bulwark/json_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const bulwark::RuntimeOptions o = bulwark::RuntimeOptions::from_json(bulwark::parse_json(text));
    if (!bulwark::listen_problem(o.server.listen)) (void)bulwark::listen_url(o.server.listen, 8080);
    (void)o.effective_workers();
    (void)o.effective_max_concurrent_retries();
  } catch (const bulwark::InputError&) {
  } catch (const bulwark::ConfigError&) {
  }
  return 0;
}
