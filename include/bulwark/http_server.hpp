// HttpServer: the HTTP/JSON API of a Runtime (what `bulwark serve` runs).
//
// Serves the routes of README "bulwark serve and the HTTP API" with Boost.Beast on
// its own small pool of I/O threads, separate from the job workers. Every
// request handler runs inside a recover middleware: a throw becomes a 500
// with the JSON error body and a log line with the throw-site trace, and the
// server keeps serving. Limits (body, header, read and idle timeouts,
// connections) come from ServerOptions.
//
//   bulwark::Runtime runtime(std::move(registry), options);
//   bulwark::HttpServer server(runtime, options.server);   // listening now
//   std::cout << "port " << server.port() << "\n";
//   ...
//   server.set_draining(true);   // /readyz answers 503
//   runtime.shutdown();          // jobs drain while the API still answers
//   server.stop();
//
// Thread-safe. The constructor binds and starts serving (throws ConfigError
// naming server.listen if it cannot); stop() blocks until connections close
// (at most a few seconds); the destructor calls stop().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "bulwark/config.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark {

class HttpServer {
 public:
  HttpServer(Runtime& runtime, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::uint16_t port() const noexcept;  // the bound port (useful with port 0)
  void set_draining(bool draining) noexcept;

  // Adds a GET route at `path` answering `body()` as JSON with status 200.
  // Whatever `body` throws is answered 500 by the recover middleware. For
  // tests and small extensions.
  void add_get_route(const std::string& path, std::function<std::string()> body);

  // Stops accepting, lets in-flight requests finish, closes idle
  // keep-alive connections, joins the I/O threads. Idempotent.
  void stop();

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace bulwark
