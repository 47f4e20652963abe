// The admin commands: `bulwark submit`, `get`, `list`, `dead`, `retry`,
// `cancel`, `stats`, `types`, `pause`, `resume`, `health`, `workers`,
// `events`, each a client of a running
// `bulwark serve` (its HTTP API) through http::Client.
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace bulwark::cli {

// Exit statuses of the admin commands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitJobFailed = 1;  // submit --wait: the job did not succeed
inline constexpr int kExitUsage = 2;
inline constexpr int kExitServer = 3;     // unreachable, or an error answer

// Adds the admin subcommands to `app`. Call admin_command() after parsing:
// it runs the one that was given and returns its exit status, or -1 when
// none of them was.
void add_admin_commands(CLI::App& app);
int admin_command(CLI::App& app);

}  // namespace bulwark::cli
