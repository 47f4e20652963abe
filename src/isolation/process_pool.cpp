#include "isolation/process_pool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <thread>

#include "isolation/child_protocol.hpp"
#include "support/text.hpp"

extern char** environ;

namespace bulwark::detail {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
using std::chrono::milliseconds;

constexpr int kChildFd = 3;

std::size_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  std::size_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

std::string describe_signal(int sig) {
  const char* what = sigdescr_np(sig);
  return wire::signal_name(sig) + (what != nullptr ? std::string(" (") + what + ")" : "");
}

// Waits for the child to end; after `patience` it is killed.
int wait_for_exit(pid_t pid, milliseconds patience) {
  int status = 0;
  const auto until = Clock::now() + patience;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) return status;
    if (Clock::now() >= until) {
      ::kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return status;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
}

}  // namespace

ProcessPool::Launcher::Launcher() : thread_([this](std::stop_token stop) { loop(std::move(stop)); }) {}

ProcessPool::Launcher::~Launcher() {
  thread_.request_stop();
  thread_.join();
}

int ProcessPool::Launcher::call(const std::function<int()>& fn) {
  MutexLock lock(mutex_);
  job_ = &fn;
  done_ = false;
  cv_.notify_all();
  cv_.wait(lock, [&]() BULWARK_REQUIRES(mutex_) { return done_; });
  return result_;
}

void ProcessPool::Launcher::loop(std::stop_token stop) {
  MutexLock lock(mutex_);
  while (cv_.wait(lock, stop, [&]() BULWARK_REQUIRES(mutex_) { return job_ != nullptr; })) {
    result_ = (*job_)();
    job_ = nullptr;
    done_ = true;
    cv_.notify_all();
  }
}

ProcessPool::ProcessPool(unsigned processes, milliseconds start_timeout)
    : start_timeout_(start_timeout), children_(std::max(1u, processes)) {
  for (unsigned i = 0; i < children_.size(); ++i) children_[i].id = i;
}

ProcessPool::~ProcessPool() { close(); }

bool ProcessPool::spawn(Child& child, std::string& error) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    error = std::string("socketpair: ") + strerror(errno);
    return false;
  }
  int child_end = sv[1];
  if (child_end == kChildFd) {  // dup2 onto itself would keep close-on-exec
    child_end = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    ::close(sv[1]);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_end, kChildFd);
  // Nothing else of ours reaches the child: an inherited copy of a client
  // connection or of another child's socket would keep it open after we
  // close it.
  posix_spawn_file_actions_addclosefrom_np(&actions, kChildFd + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (strncmp(*e, kChildFdEnv, strlen(kChildFdEnv)) != 0) env_strings.emplace_back(*e);
  }
  env_strings.push_back(std::string(kChildFdEnv) + "=" + std::to_string(kChildFd));
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string name = program_invocation_name;
  char* argv[] = {name.data(), nullptr};

  pid_t pid = -1;
  const int rc = launcher_.call([&] { return posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv, envp.data()); });
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(child_end);
  if (rc != 0) {
    ::close(sv[0]);
    error = std::string("posix_spawn /proc/self/exe: ") + strerror(rc);
    return false;
  }
  child.pid = pid;
  child.fd = sv[0];
  child.ready = false;
  child.modules.clear();
  child.reader = wire::FrameReader();
  return true;
}

bool ProcessPool::await_ready(Child& child, std::string& error) {
  const auto deadline = Clock::now() + start_timeout_;
  for (;;) {
    try {
      if (auto frame = child.reader.next()) {
        if (frame->value("op", "") == "ready") {
          child.modules = wire::modules_from_json(frame->at("modules"));
          return true;
        }
        continue;
      }
    } catch (const std::exception& e) {
      error = std::string("its first message was malformed (") + e.what() + ")";
      return false;
    }
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      error = "it did not report ready within " + std::to_string(start_timeout_.count()) +
              " ms (isolation.start_timeout_ms): does main() call bulwark::run_worker_process_if_requested() "
              "before anything else?";
      return false;
    }
    pollfd p{child.fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<long long>(left, 100))) > 0 && !child.reader.fill(child.fd)) {
      error = "it ended before reporting ready: does main() call bulwark::run_worker_process_if_requested() "
              "before anything else?";
      return false;
    }
  }
}

void ProcessPool::reap(Child& child, const std::string& reason, bool died) {
  if (child.fd >= 0) ::close(child.fd);
  child.fd = -1;
  child.pid = -1;
  child.ready = false;
  child.modules.clear();
  child.reader = wire::FrameReader();
  child.last_exit = reason;
  ++ends_[reason];
  if (died) ++deaths_;
  if (closed_) return;
  // A replacement after a death is recovery work: governed.
  if (died && !may_restart(Clock::now())) {
    child.deferred = true;
    ++deferred_total_;
    return;
  }
  std::string error;
  if (spawn(child, error)) ++child.restarts;
}

bool ProcessPool::may_restart(Clock::time_point now) {
  while (!recent_restarts_.empty() && now - recent_restarts_.front() >= std::chrono::seconds(1)) {
    recent_restarts_.pop_front();
  }
  if (recent_restarts_.size() >= restart_limit_) return false;
  recent_restarts_.push_back(now);
  return true;
}

void ProcessPool::set_restart_limit(unsigned per_second) {
  MutexLock lock(mutex_);
  restart_limit_ = std::max(1u, per_second);
}

void ProcessPool::restart_deferred() {
  MutexLock lock(mutex_);
  const auto now = Clock::now();
  for (Child& ch : children_) {
    if (ch.busy || !ch.deferred) continue;
    if (closed_ || ch.pid >= 0) {
      ch.deferred = false;
      continue;
    }
    if (!may_restart(now)) continue;  // a later tick
    ch.deferred = false;
    std::string error;
    if (spawn(ch, error)) ++ch.restarts;
  }
}

std::uint64_t ProcessPool::restarts_deferred_total() const {
  MutexLock lock(mutex_);
  return deferred_total_;
}

namespace {

Failure start_failure(std::string message) {
  Failure f = make_failure(FailureKind::crash, std::move(message));
  f.type = "start";
  return f;
}

}  // namespace

void ProcessPool::release(Child& child) {
  child.busy = false;
  child.job.clear();
  free_.notify_one();
}

ProcessPool::Child* ProcessPool::acquire(const ProcessRequest& request, Failure& failure) {
  MutexLock lock(mutex_);
  const auto some_free = [&]() BULWARK_REQUIRES(mutex_) {
    return std::any_of(children_.begin(), children_.end(), [](const Child& ch) { return !ch.busy; });
  };
  if (!started_ && !closed_) {  // the first isolated job starts the whole pool
    started_ = true;
    for (Child& ch : children_) {
      std::string ignored;  // retried, and reported, when the child is needed
      if (ch.pid < 0) spawn(ch, ignored);
    }
  }
  free_.wait(lock, request.stop, [&]() BULWARK_REQUIRES(mutex_) { return closed_ || some_free(); });
  if (closed_) {
    failure = make_failure(FailureKind::shutdown, "the runtime shut down before a worker process was free");
    return nullptr;
  }
  if (!some_free()) {
    failure = make_failure(FailureKind::exception, "stop requested while waiting for a free worker process");
    failure.type = "bulwark::Stopped";
    return nullptr;
  }
  Child* c = nullptr;
  for (Child& ch : children_) {
    if (!ch.busy && (c == nullptr || (ch.ready && !c->ready))) c = &ch;
  }
  c->busy = true;
  c->job = request.id;
  // A child that died while idle (the kernel's OOM killer, kill -9) is
  // replaced before the job is given to it: the job never ran there.
  int status = 0;
  if (c->ready && waitpid(c->pid, &status, WNOHANG) == c->pid) {
    reap(*c, "idle_" + (WIFSIGNALED(status) ? wire::signal_name(WTERMSIG(status)) : std::string("exit")), true);
  }
  std::string error;
  const bool replacing = std::exchange(c->deferred, false);  // a job needs it now: fresh work before recovery
  if (c->pid < 0 && !spawn(*c, error)) {
    release(*c);
    failure = start_failure("could not start a worker process: " + error);
    return nullptr;
  }
  if (replacing) ++c->restarts;
  return c;
}

ProcessPool::End ProcessPool::exchange(Child& c, const ProcessRequest& request, ProcessReply& reply,
                                       Exchange& seen) {
  const pid_t pid = c.pid;
  const int fd = c.fd;
  // Frames in the child's stream; true once the result is in.
  const auto take_frames = [&]() -> bool {
    while (auto f = c.reader.next()) {
      const std::string op = f->value("op", "");
      if (op == "result") {
        reply.ok = f->at("ok").get<bool>();
        if (reply.ok) {
          reply.result = std::move(f->at("result"));
        } else {
          reply.failure = wire::failure_from_json(f->at("failure"), c.modules);
          for (const auto& e : f->at("cleanup_errors")) {
            reply.cleanup_errors.push_back(wire::failure_from_json(e, c.modules));
          }
        }
        return true;
      }
      if (op == "progress" && request.on_progress) {
        if (const auto p = wire::progress_from_json(*f)) request.on_progress(p->first, p->second);
      }
      if (op == "crash") seen.crash = std::move(*f);
      if (op == "stack") reply.stuck_trace = wire::translate(wire::trace_from_json(f->at("trace")), c.modules);
    }
    return false;
  };
  // Reads what is there within `wait_ms`; false at the end of the stream.
  const auto read_some = [&](int wait_ms) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, wait_ms) <= 0 || c.reader.fill(fd);
  };

  json frame = {{"op", "run"},         {"id", request.id},           {"type", request.type},
                {"attempt", request.attempt}, {"memory_limit_mb", request.memory_limit_mb},
                {"payload", request.payload != nullptr ? *request.payload : json()}};
  if (!request.traceparent.empty()) frame["traceparent"] = request.traceparent;
  if (request.fence > 0) frame["fence"] = request.fence;
  const std::size_t baseline = request.memory_limit_mb > 0 ? rss_bytes(pid) : 0;
  std::stop_callback on_stop(request.stop, [pid] { ::kill(pid, kChildStopSignal); });
  const bool has_deadline = request.hard_timeout.count() > 0;
  const auto deadline = has_deadline ? Clock::now() + request.hard_timeout : Clock::time_point::max();
  if (!wire::write_frame(fd, dump_line(frame))) return End::eof;
  for (;;) {
    int wait_ms = request.memory_limit_mb > 0 ? 10 : 100;
    if (has_deadline) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      wait_ms = static_cast<int>(std::clamp<long long>(left, 0, wait_ms));
    }
    const bool open = read_some(wait_ms);
    if (take_frames()) return End::result;
    if (!open) return End::eof;
    // A stop asked for before the child had read the run frame reached a
    // child with no job to stop: ask again until it answers (it is
    // idempotent for the job it runs).
    if (request.stop.stop_requested()) ::kill(pid, kChildStopSignal);
    if (request.memory_limit_mb > 0) {
      const std::size_t rss = rss_bytes(pid);
      if (rss > baseline + request.memory_limit_mb * 1024 * 1024) {
        ::kill(pid, SIGKILL);
        seen.grew_mb = (rss - baseline) >> 20;
        return End::memory_kill;
      }
    }
    if (Clock::now() >= deadline) {
      // Where is it? The child's handler answers with a stack frame.
      ::kill(pid, stack_dump_signal_number());
      for (const auto until = Clock::now() + milliseconds(300); !reply.stuck_trace && Clock::now() < until;) {
        const bool still_open = read_some(20);
        if (take_frames()) return End::result;  // it finished meanwhile after all
        if (!still_open) break;
      }
      ::kill(pid, SIGKILL);
      return End::timeout_kill;
    }
  }
}

Failure ProcessPool::describe_end(End end, int status, bool closing, const Child& c, const ProcessRequest& request,
                                  const ProcessReply& reply, const Exchange& seen, std::string& reason) const {
  const std::string who = "worker process " + std::to_string(reply.pid);
  Failure f;
  if (end == End::timeout_kill) {
    f = make_failure(FailureKind::timeout, "hard timeout of " + std::to_string(request.hard_timeout.count()) +
                                               " ms reached: " + who + " was killed (SIGKILL) and replaced");
    f.type = "hard_timeout";
    f.signal = "SIGKILL";
    if (reply.stuck_trace) f.trace = *reply.stuck_trace;
    reason = "hard_timeout";
  } else if (end == End::memory_kill) {
    f = make_failure(FailureKind::crash, "memory limit of " + std::to_string(request.memory_limit_mb) +
                                             " MiB exceeded: " + who + " grew by " + std::to_string(seen.grew_mb) +
                                             " MiB and was killed (SIGKILL)");
    f.type = "memory_limit";
    f.signal = "SIGKILL";
    reason = "memory_limit";
  } else if (closing) {
    f = make_failure(FailureKind::shutdown, "the runtime shut down while the job ran; " + who + " was stopped");
    reason = "shutdown";
  } else if (end == End::protocol) {
    f = make_failure(FailureKind::crash, who + " sent a malformed message: " + seen.protocol_error);
    reason = "protocol_error";
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    f = make_failure(FailureKind::crash, who + " was killed by " + describe_signal(sig) +
                                             " from outside (the kernel's OOM killer, or another process); "
                                             "no crash report");
    f.signal = wire::signal_name(sig);
    f.type = f.signal;
    reason = f.signal;
    if (seen.crash) {
      const auto addr = static_cast<std::uintptr_t>(wire::unsigned_or(*seen.crash, "addr", 0));
      f.trace = wire::translate(wire::trace_from_json(seen.crash->at("trace")), c.modules);
      f.message = who + " died from " + describe_signal(sig);
      if (sig == SIGSEGV || sig == SIGBUS) f.message += " at address " + hex(addr);
      if (seen.crash->value("overflow", false)) {
        f.message = "stack overflow: " + f.message + ", in the stack's guard region";
        reason = "stack_overflow";
      }
    }
  } else if (WIFEXITED(status)) {
    f = make_failure(FailureKind::crash, who + " exited with status " + std::to_string(WEXITSTATUS(status)) +
                                             " while running the job");
    f.type = "exit";
    reason = "exit";
  } else {
    f = make_failure(FailureKind::crash, who + " ended while running the job");
    reason = "unknown";
  }
  return f;
}

ProcessReply ProcessPool::run(const ProcessRequest& request) {
  ProcessReply reply;
  Child* c = acquire(request, reply.failure);
  if (c == nullptr) return reply;

  if (!c->ready) {
    std::string error;
    if (!await_ready(*c, error)) {
      const pid_t pid = c->pid;
      ::kill(pid, SIGKILL);
      wait_for_exit(pid, milliseconds(1000));
      MutexLock lock(mutex_);
      reap(*c, "did_not_start", true);
      release(*c);
      reply.failure = start_failure("worker process " + std::to_string(pid) + " " + error);
      return reply;
    }
    MutexLock lock(mutex_);
    c->ready = true;
  }

  reply.pid = c->pid;
  Exchange seen;
  End end = End::eof;
  try {
    end = exchange(*c, request, reply, seen);
  } catch (const std::exception& e) {
    ::kill(c->pid, SIGKILL);
    end = End::protocol;
    seen.protocol_error = e.what();
  }
  if (end == End::result) {
    MutexLock lock(mutex_);
    release(*c);
    return reply;
  }

  // The child is dead or being killed: collect what it said last (a crash
  // report comes just before the end of the stream), then its exit status.
  try {
    for (;;) {
      pollfd p{c->fd, POLLIN, 0};
      const bool more = poll(&p, 1, 2000) > 0 && c->reader.fill(c->fd);
      while (auto f = c->reader.next()) {
        if (f->value("op", "") == "crash") seen.crash = std::move(*f);
      }
      if (!more) break;
    }
  } catch (const std::exception&) {
    // A torn last frame: what it said is lost, the exit status still tells.
  }
  const int status = wait_for_exit(reply.pid, milliseconds(2000));
  MutexLock lock(mutex_);
  std::string reason;
  reply.ok = false;
  reply.failure = describe_end(end, status, closed_, *c, request, reply, seen, reason);
  reap(*c, reason, !closed_);
  release(*c);
  return reply;
}

void ProcessPool::close() {
  std::vector<pid_t> idle;
  {
    MutexLock lock(mutex_);
    if (closed_) return;
    closed_ = true;
    for (Child& c : children_) {
      if (c.pid < 0) continue;
      if (c.busy) {
        ::kill(c.pid, SIGKILL);  // its run() reaps it
      } else {
        ::close(c.fd);  // end of input: the child exits
        c.fd = -1;
        idle.push_back(c.pid);
        c.pid = -1;
        c.last_exit = "shutdown";
      }
    }
  }
  free_.notify_all();
  for (pid_t pid : idle) wait_for_exit(pid, milliseconds(2000));
}

std::vector<ProcessHealth> ProcessPool::health() const {
  std::vector<ProcessHealth> out;
  MutexLock lock(mutex_);
  for (const Child& c : children_) {
    ProcessHealth h;
    h.id = c.id;
    h.pid = c.pid > 0 ? c.pid : 0;
    h.state = closed_                 ? ProcessState::stopped
              : c.pid < 0 && !c.busy ? ProcessState::not_started
              : c.busy              ? ProcessState::busy
                                    : ProcessState::idle;
    if (c.busy && !c.job.empty()) h.job = c.job;
    h.restarts = c.restarts;
    h.last_exit = c.last_exit;
    out.push_back(std::move(h));
  }
  return out;
}

std::uint64_t ProcessPool::deaths() const {
  MutexLock lock(mutex_);
  return deaths_;
}

std::map<std::string, std::uint64_t> ProcessPool::ends_by_reason() const {
  MutexLock lock(mutex_);
  return ends_;
}

}  // namespace bulwark::detail
