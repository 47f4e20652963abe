#include "redis/tls_stream.hpp"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <string>

namespace bulwark::detail::redis {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

bool is_ip_address(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

struct TlsStream::Impl {
  explicit Impl(const ConnectOptions& o) : options(o), where("redis " + o.address.text()) {}

  const ConnectOptions options;
  const std::string where;
  asio::io_context io;
  ssl::context context{ssl::context::tls_client};
  std::unique_ptr<ssl::stream<tcp::socket>> stream;
  // Until the first reply comes: with TLS 1.3 a server that refuses our
  // certificate (or its absence) says so only after the handshake, by an
  // alert or by closing the connection.
  bool first_exchange = true;

  // The context: protocol floor, whom to trust, who we are.
  void prepare() {
    const TlsOptions& tls = options.tls;
    context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    const auto load = [&](const char* key, const std::string& path, auto&& fn) {
      error_code ec;
      fn(ec);
      if (ec) throw RedisError(std::string(key) + ": cannot load " + path + ": " + ec.message(), RedisError::Kind::unavailable, true);
    };
    if (tls.verify) {
      context.set_verify_mode(ssl::verify_peer);
      if (tls.ca_file.empty()) {
        load("redis.tls.ca_file", "the system's certificate authorities", [&](error_code& ec) { context.set_default_verify_paths(ec); });
      } else {
        load("redis.tls.ca_file", tls.ca_file, [&](error_code& ec) { context.load_verify_file(tls.ca_file, ec); });
      }
    } else {
      context.set_verify_mode(ssl::verify_none);
    }
    if (!tls.cert_file.empty()) {
      load("redis.tls.cert_file", tls.cert_file,
           [&](error_code& ec) { context.use_certificate_chain_file(tls.cert_file, ec); });
      load("redis.tls.key_file", tls.key_file,
           [&](error_code& ec) { context.use_private_key_file(tls.key_file, ssl::context::pem, ec); });
    }
    stream = std::make_unique<ssl::stream<tcp::socket>>(io, context);
    const std::string name = tls.server_name.empty() ? options.address.host : tls.server_name;
    if (!is_ip_address(name)) SSL_set_tlsext_host_name(stream->native_handle(), name.c_str());  // SNI
    if (tls.verify) stream->set_verify_callback(ssl::host_name_verification(name));
  }

  // Runs the started operation until it completed or `timeout` passed;
  // throws RedisError naming what was being done. `exchange`: a read or
  // write after the handshake.
  void wait(const bool& done, const error_code& ec, std::chrono::milliseconds timeout, const char* doing,
            bool exchange = false) {
    io.restart();
    io.run_for(timeout);
    if (!done) {
      error_code ignored;
      stream->lowest_layer().close(ignored);
      io.restart();
      io.run();  // the operation completes, aborted
      throw RedisError(where + ": " + doing + ": timed out after " + std::to_string(timeout.count()) + " ms",
                       RedisError::Kind::unavailable);
    }
    if (!ec) return;
    error_code ignored;
    stream->lowest_layer().close(ignored);
    // A handshake either side refused (a certificate that does not verify;
    // with TLS 1.3 a missing client certificate is told on the first read)
    // is not mended by waiting. A connection cut short is.
    const bool refused = ec.category() == asio::error::get_ssl_category() && ec != ssl::error::stream_truncated;
    if (!refused && exchange && first_exchange) {
      throw RedisError(where + ": " + doing + ": " + ec.message() +
                           ": the server closed the connection right after the TLS handshake (does it want a client "
                           "certificate? redis.tls.cert_file)",
                       RedisError::Kind::unavailable, true);
    }
    throw RedisError(where + ": " + doing + ": " + ec.message(), RedisError::Kind::unavailable, refused);
  }

  void connect() {
    const auto timeout = options.connect_timeout;
    bool done = false;
    error_code ec;
    tcp::resolver::results_type endpoints;
    tcp::resolver resolver(io);
    resolver.async_resolve(options.address.host, std::to_string(options.address.port),
                           [&](const error_code& e, tcp::resolver::results_type r) {
                             ec = e;
                             endpoints = std::move(r);
                             done = true;
                           });
    wait(done, ec, timeout, "cannot resolve the host");
    done = false;
    asio::async_connect(stream->lowest_layer(), endpoints, [&](const error_code& e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    wait(done, ec, timeout, "cannot connect");
    stream->lowest_layer().set_option(tcp::no_delay(true), ec);
    stream->lowest_layer().set_option(asio::socket_base::keep_alive(true), ec);
    done = false;
    stream->async_handshake(ssl::stream_base::client, [&](const error_code& e) {
      ec = e;
      done = true;
    });
    wait(done, ec, timeout, "TLS handshake refused");
  }
};

TlsStream::TlsStream(const ConnectOptions& options) : impl_(std::make_unique<Impl>(options)) {
  impl_->prepare();
  impl_->connect();
}

TlsStream::~TlsStream() {
  if (impl_ && impl_->stream) {
    error_code ignored;
    impl_->stream->lowest_layer().close(ignored);
  }
}

void TlsStream::write(std::string_view bytes) {
  bool done = false;
  error_code ec;
  asio::async_write(*impl_->stream, asio::buffer(bytes.data(), bytes.size()), [&](const error_code& e, std::size_t) {
    ec = e;
    done = true;
  });
  impl_->wait(done, ec, impl_->options.command_timeout, "writing a command", true);
}

std::size_t TlsStream::read_some(char* buffer, std::size_t size) {
  bool done = false;
  error_code ec;
  std::size_t got = 0;
  impl_->stream->async_read_some(asio::buffer(buffer, size), [&](const error_code& e, std::size_t n) {
    ec = e;
    got = n;
    done = true;
  });
  impl_->wait(done, ec, impl_->options.command_timeout, "reading a reply", true);
  impl_->first_exchange = false;
  return got;
}

}  // namespace bulwark::detail::redis
