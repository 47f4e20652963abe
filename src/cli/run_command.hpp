// `bulwark run`: jobs in as JSON lines, one result line out per input line.
#pragma once

#include <optional>
#include <string>

#include "cli/config_command.hpp"

namespace bulwark::cli {

struct RunArgs {
  ConfigArgs config;                 // file, environment, --workers
  std::string input = "-";
  std::string output = "-";
  bool progress = true;              // a progress line when stderr is a terminal
};

// Runs the batch. Returns the exit status: 0 every job succeeded, 1 any job
// failed, was cancelled or rejected, 2 a usage or configuration error.
int run_command(const RunArgs& args);

}  // namespace bulwark::cli
