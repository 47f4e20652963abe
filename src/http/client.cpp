#include "http/client.hpp"

#include <algorithm>
#include <cctype>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace bulwark::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// A connected stream to host:port, or ClientError naming what failed.
beast::tcp_stream connect(net::io_context& ioc, const std::string& host, const std::string& port,
                          std::chrono::milliseconds timeout) {
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  const auto endpoints = resolver.resolve(host, port, ec);
  if (ec) throw ClientError("cannot resolve " + host + ": " + ec.message());
  beast::tcp_stream stream(ioc);
  stream.expires_after(timeout);
  stream.connect(endpoints, ec);
  if (ec) throw ClientError("cannot connect to " + host + ":" + port + ": " + ec.message());
  return stream;
}

bhttp::request<bhttp::string_body> make_request(const std::string& method, const std::string& target,
                                                const std::string& host, const std::string& token,
                                                const std::string& body,
                                                const std::map<std::string, std::string>& extra) {
  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, host);
  req.set(bhttp::field::user_agent, "bulwark-cli");
  if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
  for (const auto& [name, value] : extra) req.set(name, value);
  if (!body.empty() || method == "POST") {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
  }
  req.keep_alive(false);
  req.prepare_payload();
  return req;
}

}  // namespace

Client::Client(const std::string& url, std::string token, std::chrono::milliseconds timeout)
    : token_(std::move(token)), timeout_(timeout) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest.erase(0, 7);
  if (rest.rfind("https://", 0) == 0) throw ClientError("https is not supported: put a TLS proxy in front");
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos) {
    throw ClientError("'" + url + "' is not a server URL (expected http://host:port)");
  }
  const auto colon = rest.rfind(':');
  const bool bracketed = !rest.empty() && rest.front() == '[';
  if (colon == std::string::npos || (bracketed && rest.find(']') > colon)) {
    host_ = rest;
    port_ = "80";
  } else {
    host_ = rest.substr(0, colon);
    port_ = rest.substr(colon + 1);
  }
  if (host_.size() > 2 && host_.front() == '[' && host_.back() == ']') host_ = host_.substr(1, host_.size() - 2);
  if (host_.empty() || port_.empty() || !std::all_of(port_.begin(), port_.end(), ::isdigit)) {
    throw ClientError("'" + url + "' is not a server URL (expected http://host:port)");
  }
}

ClientResponse Client::request(const std::string& method, const std::string& target, const std::string& body,
                               const std::map<std::string, std::string>& extra) {
  net::io_context ioc;
  beast::tcp_stream stream = connect(ioc, host_, port_, timeout_);
  beast::error_code ec;
  auto req = make_request(method, target, host_, token_, body, extra);
  stream.expires_after(timeout_);
  bhttp::write(stream, req, ec);
  if (ec) throw ClientError("cannot send the request: " + ec.message());
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(1ULL << 30);
  stream.expires_after(timeout_);
  bhttp::read(stream, buffer, parser, ec);
  if (ec) throw ClientError("no answer from " + host_ + ":" + port_ + ": " + ec.message());
  ClientResponse out;
  const auto& res = parser.get();
  out.status = static_cast<int>(res.result_int());
  for (const auto& field : res) out.headers[lower(std::string(field.name_string()))] = std::string(field.value());
  out.body = res.body();
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return out;
}

int Client::follow(const std::string& target, const std::function<bool(const StreamEvent&)>& on_event,
                   std::string* error) {
  net::io_context ioc;
  beast::tcp_stream stream = connect(ioc, host_, port_, timeout_);
  beast::error_code ec;
  auto req = make_request("GET", target, host_, token_, "", {{"Accept", "text/event-stream"}});
  stream.expires_after(timeout_);
  bhttp::write(stream, req, ec);
  if (ec) throw ClientError("cannot send the request: " + ec.message());
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::empty_body> head;
  stream.expires_after(timeout_);
  bhttp::read_header(stream, buffer, head, ec);
  if (ec) throw ClientError("no answer from " + host_ + ":" + port_ + ": " + ec.message());
  const int status = static_cast<int>(head.get().result_int());
  std::string pending = beast::buffers_to_string(buffer.data());  // what came with the head
  buffer.consume(buffer.size());
  if (status != 200) {
    // An error answer: a JSON body of Content-Length bytes.
    const auto length = head.content_length().value_or(0);
    char chunk[4096];
    while (pending.size() < length) {
      stream.expires_after(timeout_);
      const std::size_t n = stream.read_some(net::buffer(chunk), ec);
      if (ec) break;
      pending.append(chunk, n);
    }
    if (error != nullptr) *error = pending;
    return status;
  }
  StreamEvent event;
  char chunk[16384];
  for (;;) {
    std::size_t end;
    while ((end = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, end);
      pending.erase(0, end + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) {  // the blank line ends an event
        if (!event.data.empty() || !event.event.empty()) {
          if (event.event.empty()) event.event = "message";
          if (!on_event(event)) return status;
        }
        event = StreamEvent{};
        continue;
      }
      if (line.front() == ':') continue;  // a comment (keep-alive)
      const auto colon = line.find(':');
      const std::string field = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (field == "id") event.id = value;
      if (field == "event") event.event = value;
      if (field == "data") event.data += (event.data.empty() ? "" : "\n") + value;
    }
    stream.expires_never();  // events may be minutes apart; the server keeps the line alive
    const std::size_t n = stream.read_some(net::buffer(chunk), ec);
    if (ec) return status;  // the server closed the stream
    pending.append(chunk, n);
  }
}

}  // namespace bulwark::http
