// libFuzzer target: a configuration file's bytes through the strict loader,
// redis.url through the URL reader the runtime uses, the same bytes as
// BULWARK_* environment lines (NAME=VALUE) through load_config's
// environment layer, and as a traceparent/tracestate pair.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "bulwark/config.hpp"
#include "bulwark/json_input.hpp"
#include "bulwark/trace_context.hpp"
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
  // Each line NAME=VALUE, as the environment would hold it.
  bulwark::ConfigLayers layers;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line = text.substr(start, end - start);
    const std::size_t eq = line.find('=');
    if (eq != std::string_view::npos) layers.environment.emplace_back(line.substr(0, eq), line.substr(eq + 1));
    start = end + 1;
  }
  try {
    const bulwark::LoadedConfig c = bulwark::load_config(layers);
    if (c.settings.empty() || !nlohmann::json::accept(c.json)) __builtin_trap();  // always every key, as JSON
  } catch (const bulwark::ConfigError&) {
  }
  const std::size_t cut = text.find('\n');
  const auto trace = bulwark::TraceContext::parse(text.substr(0, cut), cut == std::string_view::npos ? "" : text.substr(cut + 1));
  if (trace && bulwark::TraceContext::parse(trace->traceparent(), trace->state)->trace_id != trace->trace_id) {
    __builtin_trap();  // what parse accepts, traceparent() gives back readable
  }
  return 0;
}
