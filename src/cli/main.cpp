// The bulwark program. Exit status 2 for usage errors, otherwise the
// command's own.
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

#include "bulwark/isolation.hpp"
#include "builtin_workers.hpp"
#include "cli/run_command.hpp"
#include "cli/serve_command.hpp"

namespace {

constexpr std::string_view kUsage = R"(usage:
  bulwark run [--config FILE] [--workers N] [--input FILE|-] [--output FILE|-] [--no-progress]
  bulwark serve [--config FILE] [--workers N] [--listen HOST:PORT]
  bulwark --help | --version

bulwark run reads one job per line as JSON ({"type": ..., "payload": ...}) and
writes one result line per job, in completion order. Exit status: 0 every job
succeeded, 1 some job failed or a line was rejected, 2 usage or config error.

bulwark serve runs the HTTP/JSON API until SIGINT or SIGTERM, then drains
jobs for server.drain_timeout_ms. Exit status 0 after a clean stop, 2 for a
usage or config error.
)";

bool parse_workers(const char* v, unsigned& out) {
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < 0 || n > 1024) return false;
  out = static_cast<unsigned>(n);
  return true;
}

int usage_error(const std::string& message) {
  std::cerr << "bulwark: " << message << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  {
    // A child worker process of process isolation runs jobs and nothing else.
    bulwark::Registry registry;
    bulwark::workers::register_builtin(registry);
    if (auto code = bulwark::run_worker_process_if_requested(registry)) return *code;
  }
  if (argc < 2) return usage_error("missing command");
  const std::string_view command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (command == "--version") {
    std::cout << "bulwark 0.1.0\n";
    return 0;
  }
  if (command == "serve") {
    bulwark::cli::ServeArgs args;
    for (int i = 2; i < argc; ++i) {
      const std::string_view flag = argv[i];
      if (flag != "--config" && flag != "--workers" && flag != "--listen") {
        return usage_error("unknown option '" + std::string(flag) + "'");
      }
      if (i + 1 >= argc) return usage_error(std::string(flag) + ": missing value");
      const char* v = argv[++i];
      if (flag == "--config") args.config = v;
      if (flag == "--listen") args.listen = v;
      if (flag == "--workers") {
        unsigned n = 0;
        if (!parse_workers(v, n)) {
          return usage_error("--workers: expected an integer from 0 to 1024, got '" + std::string(v) + "'");
        }
        args.workers = n;
      }
    }
    return bulwark::cli::serve_command(args);
  }
  if (command != "run") return usage_error("unknown command '" + std::string(command) + "'");

  bulwark::cli::RunArgs args;
  for (int i = 2; i < argc; ++i) {
    const std::string_view flag = argv[i];
    const auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (flag == "--no-progress") {
      args.progress = false;
      continue;
    }
    if (flag != "--config" && flag != "--workers" && flag != "--input" && flag != "--output") {
      return usage_error("unknown option '" + std::string(flag) + "'");
    }
    const char* v = value();
    if (v == nullptr) return usage_error(std::string(flag) + ": missing value");
    if (flag == "--config") args.config = v;
    if (flag == "--input") args.input = v;
    if (flag == "--output") args.output = v;
    if (flag == "--workers") {
      unsigned n = 0;
      if (!parse_workers(v, n)) {
        return usage_error("--workers: expected an integer from 0 to 1024, got '" + std::string(v) + "'");
      }
      args.workers = n;
    }
  }
  return bulwark::cli::run_command(args);
}
