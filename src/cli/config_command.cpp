#include "cli/config_command.hpp"

#include <algorithm>
#include <iostream>

#include <nlohmann/json.hpp>

#include "builtin_workers.hpp"

namespace bulwark::cli {
namespace {

constexpr const char* kRedacted = "<redacted>";

// A Redis URL without its password (redis://user:password@host).
std::string without_password(std::string url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const auto at = url.substr(0, url.find('/', scheme + 3)).rfind('@');  // the userinfo ends at the authority's last '@'
  if (at == std::string::npos) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon != std::string::npos && colon < at) url.replace(colon + 1, at - colon - 1, kRedacted);
  return url;
}

// The value to show: secrets are replaced, the rest is as loaded.
std::string shown(const ConfigSetting& s) {
  if ((s.key == "server.auth_token" || s.key == "redis.password" || s.key == "redis.sentinel.password") &&
      s.value != "\"\"") {
    return nlohmann::json(kRedacted).dump();
  }
  if (s.key == "redis.url") return nlohmann::json(without_password(nlohmann::json::parse(s.value).get<std::string>())).dump();
  return s.value;
}

// What `bulwark serve` would refuse at start for this program's job types:
// a handlers.<type> or a schedule's job naming a type it does not have.
std::string unknown_types(const RuntimeOptions& o) {
  Registry registry;
  workers::register_builtin(registry);
  const auto known = [&](const std::string& type) { return registry.find(type) != nullptr || type == kCollectType; };
  std::string types;
  for (const std::string& t : registry.types()) types += t + ", ";
  types += std::string(kCollectType);
  for (const auto& [type, handler] : o.handlers) {
    if (!known(type)) return "handlers." + type + ": unknown job type '" + type + "' (this program's types: " + types + ")";
  }
  for (const auto& [name, schedule] : o.schedules) {
    const std::string type = schedule.job.is_object() ? schedule.job.value("type", "") : "";
    if (!known(type)) {
      return "schedules." + name + ".job.type: unknown job type '" + type + "' (this program's types: " + types + ")";
    }
  }
  return {};
}

}  // namespace

std::optional<LoadedConfig> load(const ConfigArgs& args) {
  ConfigLayers layers{args.file, bulwark_environment(), {}};
  try {
    if (args.workers) layers.overrides.push_back({"workers", std::to_string(*args.workers), "flag --workers"});
    if (args.listen) layers.overrides.push_back({"server.listen", nlohmann::json(*args.listen).dump(), "flag --listen"});
  } catch (const nlohmann::json::exception&) {
    std::cerr << "bulwark: --listen: not valid UTF-8\n";
    return std::nullopt;
  }
  try {
    return load_config(layers);
  } catch (const ConfigError& e) {
    std::cerr << "bulwark: configuration error: " << e.what() << "\n";
    return std::nullopt;
  }
}

int config_command(const ConfigArgs& args, bool json) {
  const std::optional<LoadedConfig> loaded = load(args);
  if (!loaded) return 2;
  if (const std::string problem = unknown_types(loaded->options); !problem.empty()) {
    std::cerr << "bulwark: configuration error: " << problem << "\n";
    return 2;
  }
  if (json) {
    auto config = nlohmann::ordered_json::parse(loaded->json);
    for (auto* secret :
         {&config["server"]["auth_token"], &config["redis"]["password"], &config["redis"]["sentinel"]["password"]}) {
      if (*secret != "") *secret = kRedacted;
    }
    config["redis"]["url"] = without_password(config["redis"]["url"].get<std::string>());
    nlohmann::ordered_json sources = nlohmann::ordered_json::object();
    for (const ConfigSetting& s : loaded->settings) sources[s.key] = s.source;
    // A file name need not be UTF-8: show what cannot be as U+FFFD rather than fail.
    std::cout << nlohmann::ordered_json{{"config", config}, {"sources", sources}}.dump(
                     2, ' ', false, nlohmann::ordered_json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  std::size_t width = 0;
  for (const ConfigSetting& s : loaded->settings) width = std::max(width, s.key.size() + 3 + shown(s).size());
  width = std::min<std::size_t>(width, 60);  // a long value does not push every source off the screen
  for (const ConfigSetting& s : loaded->settings) {
    const std::string line = s.key + " = " + shown(s);
    std::cout << line << std::string(line.size() < width ? width - line.size() + 2 : 2, ' ') << "# " << s.source
              << "\n";
  }
  return 0;
}

}  // namespace bulwark::cli
