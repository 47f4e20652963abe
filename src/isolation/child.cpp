// The child worker process: runs one job at a time on its main thread and
// reports each result, or, from a signal handler, how it died.
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <new>
#include <thread>

#include "bulwark/detail/task.hpp"
#include "bulwark/guarded.hpp"
#include "bulwark/isolation.hpp"
#include "core/context_access.hpp"
#include "isolation/child.hpp"
#include "isolation/child_protocol.hpp"
#include "isolation/wire.hpp"
#include "support/text.hpp"
#include "core/task_access.hpp"

namespace bulwark {

using detail::AltStack;
using detail::dump_line;
using detail::kFatalSignals;
using detail::SignalBuffer;
using detail::stack_dump_signal_number;
using detail::TaskAccess;
namespace {

using nlohmann::json;
namespace wire = detail::wire;

// Set at load time: this process was started as a worker process. Cleared
// by run_worker_process_if_requested(); a Runtime started while it is still
// set means main() skipped the call.
const bool g_started_as_worker = std::getenv(kChildFdEnv) != nullptr;
bool g_hook_ran = false;

int g_fd = -1;
volatile sig_atomic_t g_in_job = 0;
std::uintptr_t g_stack_lo = 0;  // lowest address the main thread's stack may reach

detail::Mutex g_stop_mutex;
std::stop_source* g_stop BULWARK_GUARDED_BY(g_stop_mutex) = nullptr;  // the running job's

// A task with no record: the child only needs its id and type for JobContext.
class ChildTask final : public detail::Task {
 public:
  void run(JobContext&) override {}
  // The parent keeps the record: progress goes to it as a frame, at most
  // every 100 ms (and always at 1).
  void report_progress(const JobContext&, double fraction, std::string_view note) override {
    const auto now = std::chrono::steady_clock::now();
    if (fraction < 1.0 && now - last_sent_ < std::chrono::milliseconds(100)) return;
    last_sent_ = now;
    const std::string frame = dump_line(json{{"op", "progress"}, {"fraction", fraction}, {"note", std::string(note)}});
    // The stack-dump handler writes frames of its own: not in the middle of this one.
    sigset_t dump, saved;
    sigemptyset(&dump);
    sigaddset(&dump, stack_dump_signal_number());
    pthread_sigmask(SIG_BLOCK, &dump, &saved);
    wire::write_frame(g_fd, frame);
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  }

 private:
  std::chrono::steady_clock::time_point last_sent_{};
};

bool looks_like_overflow(std::uintptr_t addr, std::uintptr_t sp) {
  if (addr < 4096) return false;
  const std::uintptr_t window = 64 * 1024;
  if (g_stack_lo != 0 && addr + 1024 * 1024 >= g_stack_lo && addr < g_stack_lo + window) return true;
  return addr + window >= sp && addr <= sp + window;
}

std::uintptr_t stack_pointer(void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
#if defined(__x86_64__)
  return static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
#elif defined(__aarch64__)
  return static_cast<std::uintptr_t>(uc->uc_mcontext.sp);
#else
  (void)uc;
  return 0;
#endif
}

void add_trace(SignalBuffer& b, const RawTrace& t) {
  b.add("{\"frames\":[");
  for (std::uint32_t i = 0; i < t.size; ++i) {
    if (i > 0) b.add(",");
    b.add_unsigned(t.frames[i]);
  }
  b.add("],\"truncated\":");
  b.add(t.truncated ? "true" : "false");
  b.add("}");
}

// Fatal signals: tell the parent where, then die from the same signal.
extern "C" void on_crash(int sig, siginfo_t* info, void* context) {
  if (g_in_job != 0) {
    const RawTrace t = capture_stack(2);  // skip this handler and the signal return frame
    const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    SignalBuffer b;
    b.add("{\"op\":\"crash\",\"signal\":");
    b.add_dec(sig);
    b.add(",\"code\":");
    b.add_dec(info->si_code);
    b.add(",\"addr\":");
    b.add_unsigned(addr);
    b.add(",\"overflow\":");
    b.add(sig == SIGSEGV && looks_like_overflow(addr, stack_pointer(context)) ? "true" : "false");
    b.add(",\"trace\":");
    add_trace(b, t);
    b.add("}");
    wire::write_frame_raw(g_fd, b);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

// The parent asks where a job is before killing it at its hard timeout.
extern "C" void on_dump(int) {
  const int saved = errno;
  if (g_in_job != 0) {
    SignalBuffer b;
    b.add("{\"op\":\"stack\",\"trace\":");
    add_trace(b, capture_stack(2));
    b.add("}");
    wire::write_frame_raw(g_fd, b);
  }
  errno = saved;
}

void install_handlers() {
  static AltStack* alt_stack = new AltStack();  // for the life of the process
  (void)alt_stack;

  struct sigaction sa {};
  sa.sa_sigaction = on_crash;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  for (int sig : kFatalSignals) sigaction(sig, &sa, nullptr);

  struct sigaction dump {};
  dump.sa_handler = on_dump;
  sigemptyset(&dump.sa_mask);
  dump.sa_flags = SA_RESTART | SA_ONSTACK;
  sigaction(stack_dump_signal_number(), &dump, nullptr);

  // A terminal's Ctrl-C goes to the whole process group: the parent decides
  // when its children end (it closes their sockets, or kills them).
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_PDEATHSIG, SIGKILL);

  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr = nullptr;
    std::size_t size = 0;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) g_stack_lo = reinterpret_cast<std::uintptr_t>(addr);
    pthread_attr_destroy(&attr);
  }
}

// Cancellation: the parent sends SIGUSR1; this thread turns it into a stop
// request on the running job's token.
void start_stop_watcher() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kChildStopSignal);
  sigaddset(&set, stack_dump_signal_number());
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // the watcher inherits both blocked
  std::thread([] {
    sigset_t wait_set;
    sigemptyset(&wait_set);
    sigaddset(&wait_set, kChildStopSignal);
    for (;;) {
      int sig = 0;
      if (sigwait(&wait_set, &sig) != 0) continue;
      detail::MutexLock lock(g_stop_mutex);
      if (g_stop != nullptr) g_stop->request_stop();
    }
  }).detach();
  sigset_t dump_only;
  sigemptyset(&dump_only);
  sigaddset(&dump_only, stack_dump_signal_number());
  pthread_sigmask(SIG_UNBLOCK, &dump_only, nullptr);  // dumps go to the main thread, which runs the jobs
}

[[maybe_unused]] std::size_t virtual_bytes() {  // unused under sanitizers
  std::ifstream in("/proc/self/statm");
  std::size_t pages = 0;
  in >> pages;
  return pages * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// Bounds the address space for one job. Not under ASan/TSan, whose shadow
// memory needs huge reservations; the parent's RSS watch still applies.
struct MemoryLimit {
  explicit MemoryLimit(std::size_t mb) {
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    if (mb == 0) return;
    const rlimit limit{virtual_bytes() + mb * 1024 * 1024, RLIM_INFINITY};
    active = setrlimit(RLIMIT_AS, &limit) == 0;
#else
    (void)mb;
#endif
  }
  ~MemoryLimit() {
    if (!active) return;
    const rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
    setrlimit(RLIMIT_AS, &unlimited);
  }
  bool active = false;
};

json run_one(const Registry& registry, const json& request) {
  const auto type = request.at("type").get<std::string>();
  const Registry::Entry* entry = registry.find(type);
  if (entry == nullptr) {
    const Failure f = make_failure(FailureKind::exception,
                                   "job type '" + type + "' is not registered in the worker process: main() must "
                                   "pass the same Registry to bulwark::run_worker_process_if_requested()");
    return {{"op", "result"}, {"ok", false}, {"failure", wire::failure_to_json(f)}, {"cleanup_errors", json::array()}};
  }
  ChildTask task;
  TaskAccess::spec(task).id = request.at("id").get<std::string>();
  TaskAccess::spec(task).type = type;
  const json& payload = request.at("payload");
  const std::size_t limit_mb = request.value("memory_limit_mb", std::size_t{0});
  std::stop_source stop;
  {
    detail::MutexLock lock(g_stop_mutex);
    g_stop = &stop;
  }
  // The attempt's span came from the parent: the context it sent has it as its parent id.
  std::string span_id;
  if (auto trace = TraceContext::parse(request.value("traceparent", std::string()))) {
    span_id = trace->parent_id;
    TaskAccess::spec(task).trace = std::make_shared<const TraceContext>(std::move(*trace));
  }
  // The parent's fencing token; the child cannot learn of a lost lease
  // (the parent stops it instead), so its lease_valid() stays true.
  const auto fence = request.value("fence", std::uint64_t{0});
  TaskAccess::record_unlocked(task).fence = fence;
  JobContext ctx = detail::ContextAccess::make(task, stop.get_token(), request.at("attempt").get<int>(), 0, fence, span_id);
  json result;
  Outcome<void> outcome(std::monostate{});
  std::vector<Failure> cleanup_errors;
  {
    MemoryLimit limit(limit_mb);
    g_in_job = 1;
    outcome = guarded([&] { result = entry->handler(ctx, payload); });
    cleanup_errors = detail::ContextAccess::run_cleanups(ctx, !outcome.ok());
    g_in_job = 0;
  }
  {
    detail::MutexLock lock(g_stop_mutex);
    g_stop = nullptr;
  }
  json errors = json::array();
  for (const Failure& f : cleanup_errors) errors.push_back(wire::failure_to_json(f));
  if (outcome.ok() && cleanup_errors.empty()) return {{"op", "result"}, {"ok", true}, {"result", std::move(result)}};
  Failure failure;
  if (!outcome.ok()) {
    failure = std::move(outcome.failure());
  } else {
    failure = std::move(cleanup_errors.front());
    errors.erase(errors.begin());
  }
  if (limit_mb > 0 && failure.type == "std::bad_alloc") {
    failure.kind = FailureKind::crash;
    failure.message = "memory limit of " + std::to_string(limit_mb) + " MiB exceeded (std::bad_alloc)";
  }
  return {{"op", "result"}, {"ok", false}, {"failure", wire::failure_to_json(failure)}, {"cleanup_errors", errors}};
}

int child_main(const Registry& registry, int fd) {
  g_fd = fd;
  install_handlers();
  start_stop_watcher();
  if (!wire::write_frame(
          fd, dump_line(json{{"op", "ready"}, {"pid", getpid()}, {"modules", wire::to_json(wire::loaded_modules())}}))) {
    return 0;
  }
  wire::FrameReader reader;
  for (;;) {
    std::optional<json> request;
    try {
      request = wire::read_frame_blocking(fd, reader);
    } catch (const std::exception&) {
      return kChildExitBadFrame;  // the parent sent garbage: nothing sensible to answer
    }
    if (!request) return 0;  // the parent closed the connection
    if (request->value("op", "") != "run") continue;
    json reply;
    try {
      reply = run_one(registry, *request);
      std::string text = dump_line(reply);
      if (!wire::write_frame(fd, text)) return 0;
    } catch (const std::exception& e) {
      const Failure f = make_failure(FailureKind::exception, std::string("worker process: ") + e.what());
      json fallback = {{"op", "result"}, {"ok", false}, {"failure", wire::failure_to_json(f)},
                       {"cleanup_errors", json::array()}};
      if (!wire::write_frame(fd, dump_line(fallback))) return 0;
    }
  }
}

}  // namespace

namespace detail {
void refuse_runtime_in_worker_process() {
  if (!g_started_as_worker || g_hook_ran) return;
  static const char kMessage[] =
      "bulwark: this process was started as a worker process (BULWARK_WORKER_FD is set), but main() did not call "
      "bulwark::run_worker_process_if_requested() before starting a Runtime; see README, \"Process isolation\"\n";
  (void)!write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  _exit(kChildExitNoHook);
}
}  // namespace detail

std::optional<int> run_worker_process_if_requested(const Registry& registry) {
  g_hook_ran = true;
  const char* value = std::getenv(kChildFdEnv);
  if (value == nullptr) return std::nullopt;
  char* end = nullptr;
  const long fd = std::strtol(value, &end, 10);
  unsetenv(kChildFdEnv);  // nothing this process starts is a worker
  if (end == value || *end != '\0' || fd < 0) return kChildExitBadFd;
  return child_main(registry, static_cast<int>(fd));
}

}  // namespace bulwark
