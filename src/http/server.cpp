// The Beast side of the HTTP API: accepting, reading with limits and
// timeouts, the recover middleware, writing. Routing and bodies are in api.cpp.
#include "bulwark/http_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "bulwark/guarded.hpp"
#include "http/api.hpp"

namespace bulwark {
namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

tcp::endpoint parse_listen(const std::string& listen) {
  // Checked here too: an embedding program's ServerOptions never went through the config reader.
  if (auto problem = listen_problem(listen)) throw ConfigError("server.listen: " + *problem);
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host == "localhost" || host.empty()) host = "127.0.0.1";
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  beast::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec) throw ConfigError("server.listen: '" + host + "' is not an IP address (or localhost)");
  return {address, static_cast<unsigned short>(std::stoul(listen.substr(colon + 1)))};
}

}  // namespace

class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  Impl(Runtime& runtime, ServerOptions options)
      : runtime_(runtime), options_(std::move(options)), api_(runtime, options_) {
    ioc_.emplace();
    // The acceptor and the two timers share one strand: with several I/O
    // threads, accepting again, the timers' handlers and stop()'s close
    // would otherwise touch the acceptor from two threads at once.
    const auto strand = net::make_strand(*ioc_);
    acceptor_.emplace(strand);
    sampler_.emplace(strand);
    backoff_.emplace(strand);
  }
  ~Impl() {
    if (reserve_fd_ >= 0) ::close(reserve_fd_);
  }

  void start();
  void stop();
  std::uint16_t port() const noexcept { return port_; }
  http::Api& api() { return api_; }

  class Session;

 private:
  void accept();
  void sample();
  void out_of_descriptors(const beast::error_code& ec);
  void check_descriptor_limit();

  Runtime& runtime_;
  const ServerOptions options_;
  http::Api api_;
  // Held in optionals so stop() can destroy them, and with them the pending
  // handlers that keep sessions (and so this object) alive.
  std::optional<net::io_context> ioc_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<net::steady_timer> sampler_;
  std::optional<net::steady_timer> backoff_;  // accepting again after EMFILE/ENFILE
  // Kept open so that, out of descriptors, one can be freed to accept a
  // waiting connection, answer it 503 and close it (else it would sit in
  // the backlog and accept() would fail again at once). Used on the
  // acceptor's handler only.
  int reserve_fd_ = -1;
  std::chrono::steady_clock::time_point last_descriptor_log_{};
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<unsigned> connections_{0};
  std::mutex sessions_mutex_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;  // guarded by sessions_mutex_
  std::once_flag stopped_;
};

class HttpServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Impl> server, tcp::socket socket, bool over_limit)
      : server_(std::move(server)), stream_(std::move(socket)), over_limit_(over_limit) {}

  ~Session() {
    server_->connections_.fetch_sub(1);
    std::lock_guard lock(server_->sessions_mutex_);
    server_->sessions_.erase(this);
  }

  void start() {
    {
      std::lock_guard lock(server_->sessions_mutex_);
      server_->sessions_[this] = weak_from_this();
    }
    if (over_limit_) {
      server_->api_.server_counters().refused_max_connections.fetch_add(1);
      server_->runtime_.report_failure("http", make_failure(FailureKind::invalid,
                                                            "connection refused: server.max_connections (" +
                                                                std::to_string(server_->options_.max_connections) +
                                                                ") reached"));
      send(http::error_response(503, "too_many_connections", "the server has too many open connections"),
           11, false);
      return;
    }
    read_next();
  }

  // Closes the connection if it is waiting for a new request; one in the
  // middle of a request finishes it first (keep-alive is then refused).
  void close_if_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->waiting_idle_) return;
      beast::error_code ignored;
      self->stream_.socket().close(ignored);
      if (self->timer_) self->timer_->cancel();
    });
  }

 private:
  void read_next() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_->options_.max_header_bytes));
    parser_->body_limit(server_->options_.max_body_bytes);
    if (server_->stopping_.load()) return close();
    if (buffer_.size() > 0) return read_rest();  // a pipelined request is already here
    // Waiting for the first byte of a request: the idle timeout applies.
    waiting_idle_ = true;
    stream_.expires_after(requests_ == 0 ? server_->options_.read_timeout : server_->options_.idle_timeout);
    bhttp::async_read_some(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            self->waiting_idle_ = false;
                            if (ec) return self->on_read_error(ec);
                            if (self->parser_->is_done()) return self->respond();
                            self->read_rest();
                          });
  }

  // The rest of the request must arrive within read_timeout: a client that
  // trickles bytes is dropped.
  void read_rest() {
    stream_.expires_after(server_->options_.read_timeout);
    bhttp::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->on_read_error(ec);
      self->respond();
    });
  }

  void on_read_error(beast::error_code ec) {
    route_ = http::RouteId::unknown;  // refused before any route: counted as unknown
    request_start_ = std::chrono::steady_clock::now();
    const unsigned version = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
    if (ec == bhttp::error::body_limit) {
      log_limit("request body over server.max_body_bytes (" + std::to_string(server_->options_.max_body_bytes) + ")");
      return send(http::error_response(413, "payload_too_large",
                                       "the request body is larger than " +
                                           std::to_string(server_->options_.max_body_bytes) + " bytes"),
                  version, false);
    }
    if (ec == bhttp::error::header_limit) {
      log_limit("request header over server.max_header_bytes");
      return send(http::error_response(431, "header_too_large", "the request header is too large"), version, false);
    }
    if (ec == beast::error::timeout) {
      if (waiting_idle_ || (parser_ && !parser_->got_some())) return close();  // an idle keep-alive connection
      log_limit("client dropped: no complete request within server.read_timeout_ms (" +
                std::to_string(server_->options_.read_timeout.count()) + " ms)");
      return close();
    }
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::operation_aborted ||
        ec == net::error::connection_reset || ec == net::error::bad_descriptor) {
      return close();
    }
    // Anything else is a request Beast could not parse.
    return send(http::error_response(400, "bad_request", "malformed HTTP request: " + ec.message()), version,
                false);
  }

  void log_limit(const std::string& what) {
    server_->runtime_.report_failure("http", make_failure(FailureKind::invalid, what));
  }

  void respond() {
    ++requests_;
    request_start_ = std::chrono::steady_clock::now();
    auto& req = parser_->get();
    http::Request request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    request.content_type = std::string(req[bhttp::field::content_type]);
    request.authorization = std::string(req[bhttp::field::authorization]);
    request.last_event_id = std::string(req["Last-Event-ID"]);
    request.origin = std::string(req[bhttp::field::origin]);
    request.host = std::string(req[bhttp::field::host]);
    request.traceparent = std::string(req["traceparent"]);
    request.tracestate = std::string(req["tracestate"]);
    request.body = std::move(req.body());
    route_ = server_->api_.route_of(request);
    // The recover middleware: whatever a handler throws becomes a 500.
    auto outcome = guarded([&] { return server_->api_.handle(request); });
    http::Response response;
    if (outcome.ok()) {
      response = std::move(outcome.value());
    } else {
      server_->runtime_.report_failure("http " + request.method + " handler failed", outcome.failure());
      response = http::error_response(500, "internal_error", "the server failed to handle this request; it is logged");
    }
    const bool keep_alive = req.keep_alive() && !server_->stopping_.load();
    if (response.events) {
      count_request(200);
      return start_stream(*response.events, req.version());
    }
    if (response.wait) return wait_for_job(*response.wait, req.version(), keep_alive, 2);
    send(std::move(response), req.version(), keep_alive, request.method == "HEAD");
  }

  // GET /v1/jobs/{id}?wait_ms=: looks at the job again after `delay_ms`
  // (doubling up to 100 ms) until it has ended or the wait is over; a
  // stopping server answers at once with the job as it is.
  void wait_for_job(http::JobWait wait, unsigned version, bool keep_alive, int delay_ms) {
    const bool final = server_->stopping_.load() || std::chrono::steady_clock::now() >= wait.deadline;
    if (auto answer = server_->api_.job_answer(wait.id, final)) return send(std::move(*answer), version, keep_alive);
    if (!timer_) timer_.emplace(stream_.get_executor());
    timer_->expires_at(std::min(wait.deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms)));
    timer_->async_wait([self = shared_from_this(), wait = std::move(wait), version, keep_alive, delay_ms](
                           beast::error_code) mutable {
      self->wait_for_job(std::move(wait), version, keep_alive, std::min(delay_ms * 2, 100));
    });
  }

  // GET /v1/events: the header, then the events as they come (looked for
  // every 20 ms, at once while there are more), a comment every 15 s when
  // there are none, until the client goes, the server stops, a write takes
  // longer than server.read_timeout_ms, or the client falls so far behind
  // that the events it had not been sent are gone (then a last "dropped"
  // event). A client's buffers are the chunk being written and a socket
  // send buffer cut to kStreamSendBuffer, so one that stops reading stalls
  // a write soon.
  static constexpr int kStreamSendBuffer = 64 * 1024;
  void start_stream(http::EventStream stream, unsigned version) {
    beast::error_code ignored;
    stream_.socket().set_option(net::socket_base::send_buffer_size(kStreamSendBuffer), ignored);
    events_after_ = stream.after;
    events_.emplace(std::move(stream));
    auto head = std::make_shared<std::string>(
        std::string(version == 10 ? "HTTP/1.0" : "HTTP/1.1") +
        " 200 OK\r\nServer: bulwark\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n");
    write_stream(std::move(head), false, true, true);
  }

  void poll_stream(bool first) {
    waiting_idle_ = false;
    if (server_->stopping_.load()) return close();
    http::StreamChunk chunk = server_->api_.events_chunk(*events_, events_after_, first);
    events_after_ = chunk.next_after;
    const auto now = std::chrono::steady_clock::now();
    if (chunk.text.empty() && now - last_write_ >= std::chrono::seconds(15)) chunk.text = ": keep-alive\n\n";
    if (chunk.text.empty()) return wait_stream();
    write_stream(std::make_shared<std::string>(std::move(chunk.text)), chunk.fell_behind, chunk.more);
  }

  // Writes `text`; then closes (`last`), looks for more at once
  // (`again_now`; `first`: the header was just written) or waits.
  void write_stream(std::shared_ptr<std::string> text, bool last, bool again_now, bool first = false) {
    stream_.expires_after(server_->options_.read_timeout);
    net::async_write(stream_, net::buffer(*text),
                     [self = shared_from_this(), text, last, again_now, first](beast::error_code ec, std::size_t) {
                       if (ec || last) return self->close();
                       self->last_write_ = std::chrono::steady_clock::now();
                       if (again_now) return self->poll_stream(first);
                       self->wait_stream();
                     });
  }

  void wait_stream() {
    if (!timer_) timer_.emplace(stream_.get_executor());
    timer_->expires_after(std::chrono::milliseconds(20));
    waiting_idle_ = true;  // a stopping server may close it now
    timer_->async_wait([self = shared_from_this()](beast::error_code) {
      if (!self->stream_.socket().is_open()) return;
      self->poll_stream(false);
    });
  }

  // `head`: the answer to a HEAD request: the headers of the GET answer,
  // with its Content-Length, and no body.
  void send(http::Response response, unsigned version, bool keep_alive, bool head = false) {
    count_request(response.status);
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(response.status), version);
    res->set(bhttp::field::server, "bulwark");
    res->set(bhttp::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) res->set(name, value);
    res->keep_alive(keep_alive);
    if (head) {
      res->content_length(response.body.size());
    } else {
      res->body() = std::move(response.body);
      res->prepare_payload();
    }
    stream_.expires_after(server_->options_.read_timeout);
    bhttp::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
      if (ec || !res->keep_alive()) return self->close();
      self->read_next();
    });
  }

  void count_request(int status) {
    server_->api_.server_counters().requests.record(route_, status, std::chrono::steady_clock::now() - request_start_);
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  std::shared_ptr<Impl> server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  const bool over_limit_;
  bool waiting_idle_ = false;  // used on the session's strand only
  unsigned requests_ = 0;
  http::RouteId route_ = http::RouteId::unknown;  // of the request being answered
  std::chrono::steady_clock::time_point request_start_ = std::chrono::steady_clock::now();
  // Waits and event streams (on the session's strand only):
  std::optional<net::steady_timer> timer_;
  std::optional<http::EventStream> events_;
  std::uint64_t events_after_ = 0;
  std::chrono::steady_clock::time_point last_write_ = std::chrono::steady_clock::now();
};

void HttpServer::Impl::start() {
  const tcp::endpoint endpoint = parse_listen(options_.listen);
  beast::error_code ec;
  acceptor_->open(endpoint.protocol(), ec);
  if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(endpoint, ec);
  if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw ConfigError("server.listen: cannot listen on " + options_.listen + ": " + ec.message());
  port_ = acceptor_->local_endpoint().port();
  if (!endpoint.address().is_loopback() && options_.auth_token.empty()) {
    runtime_.report_warning("server.listen is " + options_.listen +
                            ", beyond loopback, and server.auth_token is not set: anyone who can reach this port can "
                            "submit and cancel jobs and read their payloads");
  } else if (!endpoint.address().is_loopback() && !options_.auth_reads) {
    runtime_.report_warning("server.listen is " + options_.listen +
                            ", beyond loopback, and server.auth_reads is false: anyone who can reach this port can "
                            "read job payloads, results and traces");
  }
  check_descriptor_limit();
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  accept();
  sample();
  for (unsigned i = 0, n = options_.effective_io_threads(); i < n; ++i) threads_.emplace_back([this] { ioc_->run(); });
}

void HttpServer::Impl::accept() {
  acceptor_->async_accept(net::make_strand(*ioc_), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || self->stopping_.load()) return;
      self->api_.server_counters().accept_errors.fetch_add(1);
      if (ec == net::error::no_descriptors || ec.value() == ENFILE || ec == net::error::no_buffer_space ||
          ec == net::error::no_memory) {
        return self->out_of_descriptors(ec);
      }
      return self->accept();  // a connection that failed before we took it: keep serving others
    }
    const bool over = self->connections_.fetch_add(1) >= self->options_.max_connections;
    std::make_shared<Session>(self, std::move(socket), over)->start();
    self->accept();
  });
}

// Out of descriptors, accept() fails at once for as long as a connection
// waits in the backlog: retrying at once spins a core. Instead the reserve
// descriptor is given up to take that connection, answer it 503 and close
// it, and accepting resumes after a pause, while open connections are
// served as usual.
void HttpServer::Impl::out_of_descriptors(const beast::error_code& ec) {
  const int listen_fd = acceptor_->native_handle();
  if (reserve_fd_ >= 0) {
    ::close(reserve_fd_);
    reserve_fd_ = -1;
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        static const std::string kBusy = [] {
          const std::string body = http::error_response(503, "out_of_descriptors",
                                                        "the server has no file descriptors left; retry later")
                                       .body;
          return "HTTP/1.1 503 Service Unavailable\r\nServer: bulwark\r\nContent-Type: application/json\r\n"
                 "Connection: close\r\nRetry-After: 1\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n\r\n" + body;
        }();
        [[maybe_unused]] const auto sent = ::send(fd, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
        api_.server_counters().refused_no_descriptors.fetch_add(1);
      }
    }
    reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_descriptor_log_ > std::chrono::seconds(10)) {
    last_descriptor_log_ = now;
    runtime_.report_warning("http: out of file descriptors (" + ec.message() + ") with " +
                            std::to_string(connections_.load()) +
                            " connections open: new connections get 503 until some close; raise the limit "
                            "(ulimit -n) or lower server.max_connections (logged at most every 10 s)");
  }
  backoff_->expires_after(std::chrono::milliseconds(50));
  backoff_->async_wait([self = shared_from_this()](beast::error_code wait_ec) {
    if (!wait_ec && !self->stopping_.load()) self->accept();
  });
}

// Each connection takes a descriptor: warn at start when the process may
// not open server.max_connections of them (after raising the soft limit as
// far as the hard one allows).
void HttpServer::Impl::check_descriptor_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const rlim_t wanted = static_cast<rlim_t>(options_.max_connections) + 64;  // logs, children, the runtime
  if (lim.rlim_cur < wanted && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = std::min(wanted, lim.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < wanted) {
    runtime_.report_warning("http: server.max_connections is " + std::to_string(options_.max_connections) +
                            " but this process may open only " + std::to_string(lim.rlim_cur) +
                            " file descriptors (RLIMIT_NOFILE); past that, connections get 503 "
                            "(out_of_descriptors). Raise ulimit -n or lower server.max_connections");
  }
}

void HttpServer::Impl::sample() {
  api_.sample();
  sampler_->expires_after(std::chrono::seconds(1));
  sampler_->async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec && !self->stopping_.load()) self->sample();
  });
}

void HttpServer::Impl::stop() {
  std::call_once(stopped_, [&] {
    stopping_.store(true);
    net::post(acceptor_->get_executor(), [self = shared_from_this()] {
      beast::error_code ignored;
      self->acceptor_->close(ignored);
      self->sampler_->cancel();
      self->backoff_->cancel();
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (connections_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::vector<std::shared_ptr<Session>> live;
      {
        std::lock_guard lock(sessions_mutex_);
        for (auto& [ptr, weak] : sessions_) {
          if (auto s = weak.lock()) live.push_back(std::move(s));
        }
      }
      for (auto& s : live) s->close_if_idle();
      live.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ioc_->stop();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    sampler_.reset();
    backoff_.reset();
    acceptor_.reset();
    ioc_.reset();
  });
}

HttpServer::HttpServer(Runtime& runtime, ServerOptions options)
    : impl_(std::make_shared<Impl>(runtime, std::move(options))) {
  impl_->start();
}

HttpServer::~HttpServer() { stop(); }

std::uint16_t HttpServer::port() const noexcept { return impl_->port(); }

void HttpServer::set_draining(bool draining) noexcept { impl_->api().set_draining(draining); }

void HttpServer::add_get_route(const std::string& path, std::function<std::string()> body) {
  impl_->api().add_route("GET", path, [body = std::move(body)](const http::Request&) {
    http::Response r;
    r.body = body();
    return r;
  });
}

void HttpServer::stop() { impl_->stop(); }

}  // namespace bulwark
