// Internal: a TLS connection to Redis (rediss://, redis.tls.*), built on
// OpenSSL through Boost.Asio's ssl::stream; Asio stays inside
// tls_stream.cpp. Connection speaks RESP over it with hiredis's reply reader,
// as it does over a plain socket with hiredis's own context.
//
// The server's certificate is verified against redis.tls.ca_file (or the
// system's authorities) and its name against redis.tls.server_name (or the
// URL's host), unless redis.tls.verify is false. A client certificate is
// sent when the options carry one.
//
//   TlsStream s(options);        // connects and shakes hands, or throws RedisError
//   s.write("*1\r\n$4\r\nPING\r\n");
//   char buf[4096];
//   std::size_t n = s.read_some(buf, sizeof buf);
//
// Not thread-safe: one thread uses it at a time. Each call blocks for at
// most the connect timeout (constructor) or the command timeout; a call
// that times out or fails throws RedisError (unavailable) and leaves the
// stream closed. A refused handshake (a certificate that does not verify,
// a client certificate the server wants and did not get) throws with
// login() true: waiting does not mend it.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "redis/connection.hpp"

namespace bulwark::detail::redis {

class TlsStream {
 public:
  explicit TlsStream(const ConnectOptions& options);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Writes all of `bytes`.
  void write(std::string_view bytes);
  // Reads what has come, at least one byte.
  std::size_t read_some(char* buffer, std::size_t size);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulwark::detail::redis
