// `bulwark serve`: the HTTP/JSON API over a runtime with the built-in workers.
#pragma once

#include <optional>
#include <string>

namespace bulwark::cli {

struct ServeArgs {
  std::string config;               // empty: built-in defaults
  std::optional<std::string> listen;  // overrides server.listen
  std::optional<unsigned> workers;  // overrides workers
};

// Serves until SIGINT or SIGTERM, then drains and stops. Returns the exit
// status: 0 after a clean stop, 2 for a usage or configuration error.
int serve_command(const ServeArgs& args);

}  // namespace bulwark::cli
