// `bulwark serve`: the HTTP/JSON API over a runtime with the built-in workers.
#pragma once

#include <optional>
#include <string>

#include "cli/config_command.hpp"

namespace bulwark::cli {

struct ServeArgs {
  ConfigArgs config;  // file, environment, --workers, --listen
};

// Serves until SIGINT or SIGTERM, then drains and stops. Returns the exit
// status: 0 after a clean stop, 2 for a usage or configuration error.
int serve_command(const ServeArgs& args);

}  // namespace bulwark::cli
