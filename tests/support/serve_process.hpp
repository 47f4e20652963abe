// `bulwark serve` as a child process of a test: its standard output on a
// pipe (read_line), its standard error in a file (stderr_text). Killed with
// SIGKILL when the fixture goes, unless it exited already.
#pragma once

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <chrono>

namespace bulwark::testing {

struct ServeProcess {
  pid_t pid = -1;
  int out = -1;
  std::string err_path;

  explicit ServeProcess(const std::string& config, std::string stderr_file = "/tmp/bulwark_serve_test.err")
      : err_path(std::move(stderr_file)) {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(pipe_fds[1], STDOUT_FILENO);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, STDERR_FILENO);
      ::close(pipe_fds[0]);
      ::execl(BULWARK_BINARY, BULWARK_BINARY, "serve", "--config", config.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(pipe_fds[1]);
    out = pipe_fds[0];
  }
  ~ServeProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    ::close(out);
  }
  std::string read_line() {
    std::string line;
    char c;
    while (::read(out, &c, 1) == 1 && c != '\n') line += c;
    return line;
  }
  // Its exit status once it exits; -1 if a signal ended it, -2 if it was
  // still running after `limit` (then it is killed: a test fails, not hangs).
  int wait_exit(std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        pid = -1;
        return -2;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string stderr_text() const {
    std::ifstream in(err_path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // The port from the first line ("listening on http://127.0.0.1:PORT").
  std::uint16_t port_from_banner() {
    const std::string first = read_line();
    INFO("its standard error: " << stderr_text());
    REQUIRE(first.find("listening on http://127.0.0.1:") != std::string::npos);
    return static_cast<std::uint16_t>(std::stoi(first.substr(first.rfind(':') + 1)));
  }
};

}  // namespace bulwark::testing
