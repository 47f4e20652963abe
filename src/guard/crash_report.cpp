#include "guard/crash_report.hpp"

#include <fcntl.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "bulwark/trace.hpp"
#include "support/signals.hpp"

namespace bulwark::detail {
namespace {


__attribute__((tls_model("initial-exec"))) thread_local const char* tls_job_id = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local const char* tls_job_type = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local unsigned tls_worker = 0;

struct sigaction g_previous[65];
std::atomic<int> g_log_fd{-1};
std::atomic<bool> g_reporting{false};

void emit(const SignalBuffer& b) {
  (void)!write(STDERR_FILENO, b.data, b.size);
  const int fd = g_log_fd.load(std::memory_order_relaxed);
  if (fd >= 0) (void)!write(fd, b.data, b.size);
}

extern "C" void on_fatal_signal(int sig, siginfo_t* info, void*) {
  if (!g_reporting.exchange(true)) {
    const RawTrace trace = capture_stack(2);  // skip this handler and the signal return frame
    SignalBuffer b;
    b.add("bulwark: FATAL SIG");
    if (const char* name = sigabbrev_np(sig)) b.add(name);
    const char* job = tls_job_id;
    if (job != nullptr) {
      b.add(" in job ");
      b.add(job);
      b.add(" (type ");
      b.add(tls_job_type);
      b.add(") on worker thread ");
      b.add_dec(tls_worker);
    } else {
      b.add(" outside any job");
    }
    if (sig == SIGSEGV || sig == SIGBUS) {
      b.add(", fault address ");
      b.add_hex(reinterpret_cast<std::uintptr_t>(info->si_addr));
    }
    // Only a job's own crash is one that isolation would have contained; a
    // crash outside any job is bulwark's (or the host program's) bug.
    b.add(job != nullptr ? ". The process dies now; isolation \"process\" for this type would have survived it. "
                            "Stack, innermost first:\n"
                          : ". The process dies now; process isolation would not have helped (the crash is not in "
                            "a job). Stack, innermost first:\n");
    for (std::uint32_t i = 0; i < trace.size; ++i) {
      b.add("  #");
      b.add_dec(i);
      b.add(" ");
      b.add_hex(trace.frames[i]);
      b.add("\n");
    }
    emit(b);
#if !defined(__SANITIZE_THREAD__)  // TSan rightly flags what follows, and ends the process with its own report
    // Names need memory and locks, which a crashed process may not have: an
    // alarm ends the attempt if it hangs.
    alarm(5);
    try {
      const auto frames = symbolize(trace);
      SignalBuffer named;
      named.add("bulwark: the same stack, with names:\n");
      for (std::size_t i = 0; i < frames.size(); ++i) {
        named.add("  #");
        named.add_dec(static_cast<long long>(i));
        named.add(" ");
        named.add(frames[i].function.empty() ? "??" : frames[i].function.c_str());
        if (!frames[i].file.empty()) {
          named.add(" at ");
          named.add(frames[i].file.c_str());
          named.add(":");
          named.add_dec(frames[i].line);
        }
        named.add("\n");
      }
      emit(named);
    } catch (...) {
    }
#endif
  }
  // Let whatever was there before (the default: death by this signal) act.
  sigaction(sig, &g_previous[sig], nullptr);
  raise(sig);
}

}  // namespace

void install_crash_reporter(const std::string& log_file) {
  static std::once_flag once;
  if (!log_file.empty() && g_log_fd.load() < 0) {
    g_log_fd.store(open(log_file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  }
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fatal_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    for (int sig : kFatalSignals) sigaction(sig, &sa, &g_previous[sig]);
  });
}

void set_crash_context(const char* job_id, const char* job_type, unsigned worker) noexcept {
  tls_job_id = job_id;
  tls_job_type = job_type;
  tls_worker = worker;
}

}  // namespace bulwark::detail
