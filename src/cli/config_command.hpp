// What `bulwark run`, `bulwark serve` and `bulwark config` share: the
// configuration in layers (defaults, --config file, BULWARK_* environment,
// flags), and `bulwark config --print`, which shows it with each value's
// source.
#pragma once

#include <optional>
#include <string>

#include "bulwark/config.hpp"

namespace bulwark::cli {

struct ConfigArgs {
  std::string file;                   // --config; empty: none
  std::optional<unsigned> workers;    // --workers: workers
  std::optional<std::string> listen;  // --listen: server.listen (serve and config only)
};

// The effective configuration, or nullopt after printing the error to stderr.
std::optional<LoadedConfig> load(const ConfigArgs& args);

// `bulwark config --print`: one line per key ("key = value  # source"), or
// with `json` one object {"config": {...}, "sources": {key: source}}. Secrets
// (server.auth_token, a password in redis.url) are shown as "<redacted>".
// Exit status 0, or 2 for a configuration error.
int config_command(const ConfigArgs& args, bool json);

}  // namespace bulwark::cli
