// What `bulwark run` and `bulwark serve` share: reading the configuration.
#pragma once

#include <iostream>
#include <optional>
#include <string>

#include "bulwark/config.hpp"

namespace bulwark::cli {

// The options from `path` (built-in defaults when empty) with `workers`
// applied; nullopt after printing the configuration error.
inline std::optional<RuntimeOptions> load_options(const std::string& path, std::optional<unsigned> workers) {
  RuntimeOptions options;
  try {
    if (!path.empty()) options = RuntimeOptions::from_file(path);
  } catch (const ConfigError& e) {
    std::cerr << "bulwark: configuration error: " << e.what() << "\n";
    return std::nullopt;
  }
  if (workers) options.workers = *workers;
  return options;
}

}  // namespace bulwark::cli
