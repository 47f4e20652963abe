// The bulwark program. Exit status 2 for usage errors, otherwise the
// command's own.
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "bulwark/isolation.hpp"
#include "bulwark/version.hpp"
#include "builtin_workers.hpp"
#include "cli/admin_command.hpp"
#include "cli/config_command.hpp"
#include "cli/run_command.hpp"
#include "cli/serve_command.hpp"

namespace {


constexpr const char* kRunHelp = R"(
Reads one job per line as JSON ({"type": ..., "payload": ...}) and writes one
result line per job, in completion order. Exit status: 0 every job
succeeded, 1 some job failed or a line was rejected, 2 usage or config error.
SIGINT/SIGTERM stop reading and drain; a second one gives up on an output
nobody reads.)";

constexpr const char* kServeHelp = R"(
Runs the HTTP/JSON API until SIGINT or SIGTERM, then drains jobs for
server.drain_timeout_ms. Exit status 0 after a clean stop, 2 for a usage or
config error.)";

constexpr const char* kConfigHelp = R"(
Layers, each overriding the one before key by key: built-in defaults, the
--config file, BULWARK_* environment variables (BULWARK_SERVER__LISTEN is
server.listen: "__" between the parts of the key path), then flags. Secrets
are shown as <redacted>. Exit status 0, or 2 for a configuration error.)";

}  // namespace

int main(int argc, char** argv) {
  {
    // A child worker process of process isolation runs jobs and nothing else.
    bulwark::Registry registry;
    bulwark::workers::register_builtin(registry);
    if (auto code = bulwark::run_worker_process_if_requested(registry)) return *code;
  }
  CLI::App app("bulwark: a job runtime whose workers never die", "bulwark");
  app.set_version_flag("--version", std::string("bulwark ") + BULWARK_VERSION);
  app.require_subcommand(1);

  bulwark::cli::RunArgs run_args;
  unsigned run_workers = 0;
  CLI::App* run = app.add_subcommand("run", "run jobs from JSON lines, one result line per job");
  run->footer(kRunHelp);
  run->add_option("--config", run_args.config.file, "configuration file (JSON); built-in defaults without");
  run->add_option("--workers", run_workers, "worker threads (0: one per hardware thread)")->check(CLI::Range(0, 1024));
  run->add_option("--input", run_args.input, "job lines to read; - for standard input")->capture_default_str();
  run->add_option("--output", run_args.output, "where result lines go; - for standard output")->capture_default_str();
  run->add_flag("--no-progress{false}", run_args.progress, "no progress line on a terminal");

  // serve and config take the same configuration flags.
  bulwark::cli::ConfigArgs config_args;
  unsigned workers = 0;
  std::string listen;
  const auto config_flags = [&](CLI::App* command) {
    command->add_option("--config", config_args.file, "configuration file (JSON); built-in defaults without");
    command->add_option("--workers", workers, "worker threads (0: one per hardware thread)")
        ->check(CLI::Range(0, 1024));
    command->add_option("--listen", listen, "HOST:PORT to listen on (overrides server.listen; port 0 picks one)");
  };
  CLI::App* serve = app.add_subcommand("serve", "serve the HTTP/JSON API");
  serve->footer(kServeHelp);
  config_flags(serve);

  bool print = false;
  bool print_json = false;
  CLI::App* config = app.add_subcommand("config", "show the effective configuration and where each value came from");
  config->footer(kConfigHelp);
  config->add_flag("--print", print, "print every key, its value and its source (the default action)");
  config->add_flag("--json", print_json, "as one JSON object: {\"config\": ..., \"sources\": {key: source}}");
  config_flags(config);

  bulwark::cli::add_admin_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (const int code = bulwark::cli::admin_command(app); code >= 0) return code;
  if (run->parsed()) {
    if (run->count("--workers") > 0) run_args.config.workers = run_workers;
    return bulwark::cli::run_command(run_args);
  }
  for (CLI::App* command : {serve, config}) {
    if (command->count("--workers") > 0) config_args.workers = workers;
    if (command->count("--listen") > 0) config_args.listen = listen;
  }
  if (config->parsed()) return bulwark::cli::config_command(config_args, print_json);
  return bulwark::cli::serve_command(bulwark::cli::ServeArgs{config_args});
}
