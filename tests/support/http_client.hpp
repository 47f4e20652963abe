// A small blocking HTTP/1.1 client over POSIX sockets, for end-to-end tests
// of the server: raw bytes in, parsed responses out, so tests can also send
// what a real client library never would (trickled bytes, pipelined
// requests, HTTP/1.0, oversized headers).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <chrono>
#include <map>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace bulwark::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class HttpConnection {
 public:
  // `small_receive_buffer`: a 4 KiB kernel receive buffer, so that a client
  // that stops reading stalls the server's writes soon.
  explicit HttpConnection(std::uint16_t port, bool small_receive_buffer = false) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    if (small_receive_buffer) {
      int size = 4096;
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~HttpConnection() { ::close(fd_); }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // False if the peer has closed the connection.
  bool send_raw(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  // `head`: the answer to a HEAD request, which has a Content-Length but no body.
  HttpResponse read_response(bool head_request = false) {
    HttpResponse r = read_head();
    const std::size_t length =
        !head_request && r.headers.count("content-length") ? std::stoul(r.headers["content-length"]) : 0;
    while (buffer_.size() < length) {
      if (!fill()) throw std::runtime_error("connection closed in the middle of a body");
    }
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return r;
  }

  // The status line and headers only (an event stream's body goes on).
  HttpResponse read_head() {
    std::size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) throw std::runtime_error("connection closed before a response header");
    }
    HttpResponse r;
    const std::string head = buffer_.substr(0, header_end);
    buffer_.erase(0, header_end + 4);
    std::size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    r.status = std::stoi(status_line.substr(status_line.find(' ') + 1, 3));
    while (line_end != std::string::npos) {
      const std::size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line = head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      r.headers[name] = value;
    }
    return r;
  }

  // Reads up to and including the next `delim` (what follows stays
  // buffered); throws if the connection closes first or the socket's
  // receive timeout (10 s) passes.
  std::string read_until(const std::string& delim) {
    std::size_t at;
    while ((at = buffer_.find(delim)) == std::string::npos) {
      if (!fill()) throw std::runtime_error("connection closed before '" + delim + "'");
    }
    std::string out = buffer_.substr(0, at + delim.size());
    buffer_.erase(0, at + delim.size());
    return out;
  }

  // Reads and keeps whatever comes until the peer closes the connection
  // (true) or the socket's receive timeout passes without a byte (false).
  bool read_to_end(std::string& out) {
    while (fill()) {
    }
    out = std::move(buffer_);
    buffer_.clear();
    return errno != EAGAIN && errno != EWOULDBLOCK;
  }

  // True if the peer closes the connection within `timeout`.
  bool closed_by_peer(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK) == 0;
  }

 private:
  bool fill() {
    errno = 0;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

inline std::string http_request_text(const std::string& method, const std::string& target, const std::string& body,
                                     const std::string& extra_headers = "", bool close = true) {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  const bool own_type = extra_headers.find("Content-Type:") != std::string::npos;
  if ((!body.empty() || method == "POST") && !own_type) r += "Content-Type: application/json\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers;
  if (close) r += "Connection: close\r\n";
  return r + "\r\n" + body;
}

// One request on a connection of its own.
inline HttpResponse http(std::uint16_t port, const std::string& method, const std::string& target,
                         const std::string& body = "", const std::string& extra_headers = "") {
  HttpConnection c(port);
  c.send_raw(http_request_text(method, target, body, extra_headers));
  return c.read_response();
}

}  // namespace bulwark::testing
