// libFuzzer target: raw bytes of an HTTP request through Beast's parser
// (with the server's limits) and the API router, against a real Runtime.
// No sockets: what the server does with a request, minus the network.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string_view>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "bulwark/runtime.hpp"
#include "http/api.hpp"

namespace {

namespace bhttp = boost::beast::http;

struct World {
  std::unique_ptr<bulwark::Runtime> runtime;
  std::unique_ptr<bulwark::http::Api> api;
  World() {
    // Handlers that finish at once: the target is the API, not the jobs (a
    // built-in `hang` or an isolated `crash` would only slow the fuzzer).
    bulwark::Registry registry;
    registry.add("echo", [](bulwark::JobContext&, const nlohmann::json& p) { return p; });
    registry.add("fail", [](bulwark::JobContext&, const nlohmann::json&) -> nlohmann::json {
      throw std::runtime_error("fail");
    });
    bulwark::RuntimeOptions o;
    o.workers = 1;
    o.queue_capacity = 1000;
    o.retention_max_finished = 200;
    o.retention_max_dead = 200;
    o.logging.level = "off";
    o.capture_traces = false;
    runtime = std::make_unique<bulwark::Runtime>(std::move(registry), o);
    api = std::make_unique<bulwark::http::Api>(*runtime, o.server);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(8 << 10);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec || !parser.is_done()) return 0;
  auto& req = parser.get();
  bulwark::http::Request request;
  request.method = std::string(req.method_string());
  request.target = std::string(req.target());
  request.content_type = std::string(req[bhttp::field::content_type]);
  request.authorization = std::string(req[bhttp::field::authorization]);
  request.body = req.body();
  request.last_event_id = std::string(req["Last-Event-ID"]);
  request.origin = std::string(req[bhttp::field::origin]);
  request.host = std::string(req[bhttp::field::host]);
  request.traceparent = std::string(req["traceparent"]);
  request.tracestate = std::string(req["tracestate"]);
  world.api->route_of(request);
  const bulwark::http::Response response = world.api->handle(request);
  // What the server carries on for a stream or a wait, as it would.
  if (response.events) {
    const auto first = world.api->events_chunk(*response.events, response.events->after, true);
    world.api->events_chunk(*response.events, first.next_after, false);
  }
  if (response.wait && !world.api->job_answer(response.wait->id, true)) __builtin_trap();
  if (response.status < 200 || response.status > 599) __builtin_trap();
  for (const auto& [name, value] : response.headers) {
    if (value.find_first_of("\r\n") != std::string::npos) __builtin_trap();  // no header injection
  }
  return 0;
}
