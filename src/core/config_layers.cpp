// load_config: defaults, file, environment and overrides merged key by key
// into one JSON object, which RuntimeOptions::from_json then reads strictly.
#include <algorithm>
#include <cctype>
#include <map>

#include <nlohmann/json.hpp>

#include "bulwark/config.hpp"
#include "bulwark/json_input.hpp"
#include "core/config_file.hpp"
#include "support/text.hpp"

extern char** environ;

namespace bulwark {
namespace {

using Json = nlohmann::ordered_json;
constexpr std::string_view kEnvPrefix = "BULWARK_";

// The merged configuration and, for each key path set above the defaults,
// the layer that set it.
struct Layers {
  Json merged;
  std::map<std::string, std::string> sources;
};

std::string join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

// Sets `value` at `path` in `into`; an object is merged key by key, so a
// file's {"server": {"listen": ...}} keeps server's other defaults.
void merge(Layers& layers, Json& into, const std::string& path, const Json& value, const std::string& source) {
  if (value.is_object() && (into.is_object() || into.is_null())) {
    if (!into.is_object()) into = Json::object();
    if (value.empty()) layers.sources[path] = source;  // "handlers": {"t": {}} still names t
    for (const auto& [key, v] : value.items()) merge(layers, into[key], join(path, key), v, source);
    return;
  }
  into = value;
  layers.sources[path] = source;
}

std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The key path of a BULWARK_ variable, or empty if it is not configuration.
std::vector<std::string> env_path(std::string_view name, const Json& defaults) {
  const std::string rest = lowercase(std::string(name.substr(kEnvPrefix.size())));
  std::vector<std::string> parts;
  if (rest.find("__") == std::string::npos) {
    // Only top-level keys that are values (workers); BULWARK_SERVER and
    // BULWARK_TOKEN belong to the admin commands.
    const auto it = defaults.find(rest);
    if (it != defaults.end() && !it->is_object()) parts.push_back(rest);
    return parts;
  }
  for (std::size_t start = 0;;) {
    const std::size_t end = rest.find("__", start);
    parts.push_back(rest.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 2;
  }
  return parts;
}

// The variable's value as the key's default type: strings stay text,
// anything else is read as JSON (and left as text when it is not, so the
// strict reader names the key and what it expected).
Json env_value(const std::string& text, const Json* default_value) {
  if (default_value != nullptr && default_value->is_string()) return text;
  try {
    return Json(parse_json(text));
  } catch (const InputError&) {
    return text;
  }
}

void apply_environment(Layers& layers, const std::vector<std::pair<std::string, std::string>>& environment,
                       const Json& defaults) {
  for (const auto& [name, text] : environment) {
    if (name.size() <= kEnvPrefix.size() || name.compare(0, kEnvPrefix.size(), kEnvPrefix) != 0) continue;
    // Environment bytes are not JSON: what is not UTF-8 could not be shown or read as a key.
    if (!detail::is_valid_utf8(name)) throw ConfigError("an environment variable's name is not valid UTF-8");
    if (!detail::is_valid_utf8(text)) throw ConfigError(name + ": the value is not valid UTF-8");
    const std::vector<std::string> parts = env_path(name, defaults);
    if (parts.empty()) continue;
    Json* at = &layers.merged;
    const Json* def = &defaults;
    std::string path;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].empty()) throw ConfigError(name + ": an empty part in the key path (\"___\" or a trailing \"__\")");
      if (!at->is_object() && !at->is_null()) throw ConfigError(name + ": " + path + " is a value, not a section");
      path = join(path, parts[i]);
      at = &(*at)[parts[i]];
      if (def != nullptr) {
        const auto it = def->find(parts[i]);
        def = it != def->end() ? &*it : nullptr;
      }
    }
    if (at->is_object() && !at->empty()) throw ConfigError(name + ": " + path + " is a section; name one of its keys");
    *at = env_value(text, def);
    layers.sources[path] = "environment " + name;
  }
}

// The layer behind the key path an error starts with ("server.listen: ...").
std::string blame(const Layers& layers, const std::string& message) {
  const std::string key = message.substr(0, message.find(": "));
  const std::string* best = nullptr;
  std::size_t best_length = 0;
  for (const auto& [path, source] : layers.sources) {
    const bool covers = key == path || key.rfind(path + ".", 0) == 0 || path.rfind(key + ".", 0) == 0;
    if (covers && (best == nullptr || path.size() > best_length)) {
      best = &source;
      best_length = path.size();
    }
  }
  return best != nullptr ? " (" + *best + ")" : "";
}

void flatten(const Json& j, const std::string& path, const Layers& layers, std::vector<ConfigSetting>& out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& [key, v] : j.items()) flatten(v, join(path, key), layers, out);
    return;
  }
  const auto it = layers.sources.find(path);
  out.push_back({path, detail::dump_line(j), it != layers.sources.end() ? it->second : "default"});
}

}  // namespace

LoadedConfig load_config(const ConfigLayers& in) {
  const Json defaults = Json::parse(default_config_json());
  Layers layers{defaults, {}};
  if (!in.file.empty()) {
    const Json file(detail::read_config_file(in.file));
    if (!file.is_object()) throw ConfigError(in.file + ": configuration: expected an object");
    merge(layers, layers.merged, "", file, "file " + in.file);
  }
  apply_environment(layers, in.environment, defaults);
  for (const ConfigOverride& o : in.overrides) {
    Json value;
    try {
      value = Json(parse_json(o.value));
    } catch (const InputError& e) {
      throw ConfigError(o.key + ": not a JSON value (" + o.source + "): " + e.what());
    }
    Json* at = &layers.merged;
    std::size_t start = 0;
    for (std::size_t dot; (dot = o.key.find('.', start)) != std::string::npos; start = dot + 1) {
      at = &(*at)[o.key.substr(start, dot - start)];
      if (!at->is_object() && !at->is_null()) throw ConfigError(o.key + ": not a key path (" + o.source + ")");
    }
    (*at)[o.key.substr(start)] = std::move(value);
    layers.sources[o.key] = o.source;
  }
  LoadedConfig out;
  try {
    out.options = RuntimeOptions::from_json(nlohmann::json(layers.merged));
  } catch (const ConfigError& e) {
    throw ConfigError(std::string(e.what()) + blame(layers, e.what()));
  }
  flatten(layers.merged, "", layers, out.settings);
  out.json = layers.merged.dump();
  return out;
}

std::vector<std::pair<std::string, std::string>> bulwark_environment() {
  std::vector<std::pair<std::string, std::string>> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (entry.rfind(kEnvPrefix, 0) != 0) continue;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    out.emplace_back(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace bulwark
