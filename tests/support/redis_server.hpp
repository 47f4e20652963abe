// A real redis-server for a test: started on a unix socket in a fresh temp
// directory (no TCP port, no persistence unless asked), stopped and removed
// when the fixture goes. Throws if it does not come up within 10 s.
#pragma once

#include <signal.h>
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
  explicit RedisServer(bool append_only = false) : append_only_(append_only) {
    char tmpl[] = "/tmp/bulwark-redis-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("RedisServer: mkdtemp failed");
    dir_ = tmpl;
    socket_ = dir_ + "/redis.sock";
    start();
  }
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
    return detail::redis::Connection({.address = address(), .connect_timeout = 1000ms, .command_timeout = 5000ms});
  }

  // SIGTERM: Redis saves its append-only file (if on) and exits.
  void stop() { end(SIGTERM); }
  // SIGKILL: gone at once, as in a crash.
  void kill_hard() { end(SIGKILL); }
  void start() {
    std::vector<std::string> args = {"redis-server", "--port", "0", "--unixsocket", socket_, "--unixsocketperm", "700",
                                      "--dir", dir_, "--save", "", "--appendonly", append_only_ ? "yes" : "no",
                                      "--daemonize", "no", "--logfile", dir_ + "/redis.log"};
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

  bool append_only_;
  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

}  // namespace bulwark::testing
