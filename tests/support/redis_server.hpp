// A real redis-server for a test: started on a unix socket in a fresh temp
// directory (no persistence unless asked), stopped and removed when the
// fixture goes. Throws if it does not come up within 10 s. With Options it
// also listens on a TCP port of 127.0.0.1 and takes extra arguments (a
// password, TLS, maxmemory); the fixture's own connections use the unix
// socket and `admin_password`.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "redis/connection.hpp"

extern char** environ;

namespace bulwark::testing {

class RedisServer {
 public:
  struct Options {
    bool append_only = false;
    bool tcp = false;                 // also listen on a free port of 127.0.0.1 (port())
    std::vector<std::string> args{};  // more redis-server arguments
    std::string admin_password{};     // the fixture's AUTH (requirepass)
    bool cluster = false;             // a cluster node: its bus port (port() + 10000) is free too
  };

  explicit RedisServer(bool append_only = false) : RedisServer(Options{.append_only = append_only}) {}
  explicit RedisServer(Options options) : options_(std::move(options)) {
    char tmpl[] = "/tmp/bulwark-redis-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("RedisServer: mkdtemp failed");
    dir_ = tmpl;
    socket_ = dir_ + "/redis.sock";
    if (options_.tcp || options_.cluster) port_ = options_.cluster ? free_cluster_port() : free_port();
    start();
  }
  // The TCP port (Options::tcp), else 0.
  int port() const noexcept { return port_; }
  const std::string& dir() const noexcept { return dir_; }
  ~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::string url() const { return "unix://" + socket_; }
  detail::redis::Address address() const { return *detail::redis::parse_url(url()); }

  // A connection with short timeouts.
  detail::redis::Connection connect() const {
    using namespace std::chrono_literals;
    detail::redis::ConnectOptions o;
    o.address = address();
    o.address.password = options_.admin_password;
    o.command_timeout = 5000ms;
    return detail::redis::Connection(o);
  }

  // SIGTERM: Redis saves its append-only file (if on) and exits.
  void stop() { end(SIGTERM); }
  // SIGKILL: gone at once, as in a crash.
  void kill_hard() { end(SIGKILL); }
  void start() {
    std::vector<std::string> args = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                      "--unixsocket", socket_, "--unixsocketperm", "700", "--dir", dir_, "--save", "",
                                      "--appendonly", options_.append_only ? "yes" : "no", "--daemonize", "no",
                                      "--logfile", dir_ + "/redis.log"};
    args.insert(args.end(), options_.args.begin(), options_.args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawnp(&pid_, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("RedisServer: cannot start redis-server (is it installed?)");
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      try {
        connect().command({"PING"});
        return;
      } catch (const detail::redis::RedisError&) {
        if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("RedisServer: no answer within 10 s");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

 private:
  void end(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // A port nothing listens on now (the kernel's pick, given back).
 public:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("RedisServer: no free port");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }
  // A free port P whose cluster bus port P + 10000 is free too (and below
  // 65536).
  static int free_cluster_port() {
    for (int tries = 0; tries < 1000; ++tries) {
      const int p = free_port();
      if (p > 55535) continue;
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<std::uint16_t>(p + 10000));
      const bool bus_free = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      if (fd >= 0) ::close(fd);
      if (bus_free) return p;
    }
    throw std::runtime_error("RedisServer: no free port for a cluster node");
  }

 private:

  Options options_;
  int port_ = 0;
  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

}  // namespace bulwark::testing
