// Reading a configuration file's JSON, shared by RuntimeOptions::from_file
// and load_config.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace bulwark::detail {

// The file's JSON (at most 16 MiB, the outside-input depth limit). Throws
// ConfigError naming the file for I/O and syntax errors.
nlohmann::json read_config_file(const std::string& path);

}  // namespace bulwark::detail
