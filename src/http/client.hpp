// Client: a small blocking HTTP/1.1 client (Boost.Beast) for the API of a
// running `bulwark serve`: what the admin commands (`bulwark submit`, `get`,
// `events`, ...) and the tests speak. One connection per request; event
// streams on a connection of their own.
//
//   bulwark::http::Client c("http://127.0.0.1:8080", token, std::chrono::seconds(10));
//   auto r = c.request("POST", "/v1/jobs", R"({"type":"echo"})");   // r.status, r.body
//   c.follow("/v1/events", [](const StreamEvent& e) { ...; return true; });
//
// Not thread-safe (one per thread); every call blocks, at most `timeout`
// per read or write (an event stream waits for events without limit).
// Throws ClientError when the server cannot be reached or answers
// something that is not HTTP.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

namespace bulwark::http {

struct ClientError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

// One server-sent event.
struct StreamEvent {
  std::string id;
  std::string event;  // "message" when the server named none
  std::string data;
};

class Client {
 public:
  // `url`: http://host:port (an http:// prefix is optional; no path).
  // Throws ClientError for a url it cannot use.
  Client(const std::string& url, std::string token, std::chrono::milliseconds timeout);

  // `body` is sent as application/json when not empty; the token, if any,
  // as a Bearer header. `extra` headers are added as given.
  ClientResponse request(const std::string& method, const std::string& target, const std::string& body = "",
                         const std::map<std::string, std::string>& extra = {});

  // GETs `target` as an event stream and calls `on_event` for each event
  // until it returns false or the server closes the stream. Returns the
  // response's status (anything but 200 ends at once, its body in `error`).
  int follow(const std::string& target, const std::function<bool(const StreamEvent&)>& on_event,
             std::string* error = nullptr);

  const std::string& host() const noexcept { return host_; }
  const std::string& port() const noexcept { return port_; }

 private:
  std::string host_;
  std::string port_;
  std::string token_;
  std::chrono::milliseconds timeout_;
};

}  // namespace bulwark::http
