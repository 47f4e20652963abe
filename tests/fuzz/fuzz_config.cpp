// libFuzzer target: a configuration file's bytes through the strict loader,
// and redis.url through the URL reader the runtime uses.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "bulwark/config.hpp"
#include "bulwark/json_input.hpp"
#include "redis/connection.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)bulwark::detail::redis::parse_url(std::string(text));  // the raw bytes as a URL too
  try {
    const bulwark::RuntimeOptions o = bulwark::RuntimeOptions::from_json(bulwark::parse_json(text));
    if (!bulwark::listen_problem(o.server.listen)) (void)bulwark::listen_url(o.server.listen, 8080);
    (void)o.effective_workers();
    (void)o.effective_max_concurrent_retries();
    std::string problem;
    if (auto address = bulwark::detail::redis::parse_url(o.redis.url, &problem)) (void)address->text();
  } catch (const bulwark::InputError&) {
  } catch (const bulwark::ConfigError&) {
  }
  return 0;
}
