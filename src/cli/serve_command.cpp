#include "cli/serve_command.hpp"

#include <pthread.h>
#include <signal.h>

#include <iostream>

#include "builtin_workers.hpp"
#include "bulwark/http_server.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark::cli {

int serve_command(const ServeArgs& args) {
  std::optional<LoadedConfig> loaded = load(args.config);
  if (!loaded) return 2;
  RuntimeOptions options = std::move(loaded->options);

  // Every thread started from here on inherits the block; this thread takes
  // the signals with sigwait, so no handler runs in the middle of anything.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Registry registry;
  workers::register_builtin(registry);
  std::unique_ptr<Runtime> runtime;
  std::unique_ptr<HttpServer> server;
  try {
    runtime = std::make_unique<Runtime>(std::move(registry), options);
    server = std::make_unique<HttpServer>(*runtime, options.server);
  } catch (const ConfigError& e) {
    std::cerr << "bulwark: configuration error: " << e.what() << "\n";
    return 2;
  }
  const std::string address = listen_url(options.server.listen, server->port());
  // With JSON logs, serve's own lines are log lines too: the log stream
  // stays one JSON object per line, and nothing else goes to standard output.
  const bool json_logs = options.logging.format == "json";
  if (json_logs) {
    runtime->report_info("bulwark serve: listening on " + address);
  } else {
    std::cout << "bulwark serve: listening on " << address << "\n"
              << "  submit a job:  curl -s -X POST " << address
              << "/v1/jobs -H 'Content-Type: application/json' -d '{\"type\": \"echo\", \"payload\": {\"hello\": "
                 "\"world\"}}'"
              << (options.server.auth_token.empty() ? "" : " -H 'Authorization: Bearer <token>'") << "\n"
              << "  look at it:    curl -s " << address << "/v1/jobs?limit=5\n"
              << "  stop with Ctrl-C or SIGTERM" << std::endl;
  }
  const auto note = [&](const std::string& line) {
    if (json_logs) {
      runtime->report_info(line);
    } else {
      std::cerr << line << "\n";
    }
  };

  int sig = 0;
  sigwait(&stop_signals, &sig);
  note(std::string("bulwark serve: ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + " received; draining for up to " +
       std::to_string(options.server.drain_timeout.count()) + " ms");
  server->set_draining(true);
  const ShutdownReport report = runtime->shutdown(options.server.drain_timeout);
  server->stop();
  note("bulwark serve: stopped; " + std::to_string(report.not_run) + " jobs ended with kind shutdown");
  return 0;
}

}  // namespace bulwark::cli
