// bulwark against the pools C++ users would otherwise reach for, measured side
// by side in one run. Prints a table and writes JSON (bench/results/latest.json).
//
//   bulwark_bench [--quick] [--workers N] [--out FILE] [--only SYSTEM] [--help]
//
// --only runs nothing but that system's no-failure throughput, or with
// "latency" the latency run (for perf).
//
// Every figure is the median of 5 repetitions (3 with --quick), with min and max.
// Systems compared with each other run interleaved: each repetition runs
// every system once, in an order rotated from one repetition to the next,
// after one untimed warm-up run of each, and a ratio is the median of the
// per-repetition ratios (with min and max), so drift on a shared machine
// lands on both sides of it. Every system has `--workers` threads running
// jobs and one producer that runs none; the clock stops when the last job
// has finished (its body returned or threw). Throughput and backlog runs
// each run in a fresh process (run_fresh), so no system allocates from a
// heap another one aged. Absolute numbers on a shared machine mean little;
// the paired ratios are the point.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <latch>
#include <map>
#include <sstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <blockingconcurrentqueue.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <nlohmann/json.hpp>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include "bulwark/guarded.hpp"
#include "bulwark/http_server.hpp"
#include "bulwark/isolation.hpp"
#include "bulwark/runtime.hpp"
#include "runtime/testing_hooks.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::ordered_json;
using namespace std::chrono_literals;

struct Config {
  bool quick = false;
  unsigned workers = 2;
  std::string out = "bench/results/latest.json";
  std::string only;  // profile one system's throughput
  int reps = 5;
  std::size_t jobs = 200'000;          // throughput runs
  std::size_t failing_jobs = 40'000;   // failure-cost runs
  std::size_t floor_iterations = 100'000;
};

struct Stat {
  double median = 0, min = 0, max = 0;
  ordered_json json() const { return {{"median", median}, {"min", min}, {"max", max}}; }
};

template <class F>
Stat repeat(int reps, F&& run) {
  std::vector<double> v;
  for (int i = 0; i < reps; ++i) v.push_back(run());
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

Stat stat_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

// Runs every function once per repetition, the order rotated each time,
// after one untimed warm-up call of each; returns each one's results in
// repetition order, so results of one repetition can be paired.
std::vector<std::vector<double>> interleaved(int reps, const std::vector<std::function<double()>>& runs) {
  for (const auto& run : runs) run();  // warm-up: threads, allocators, caches
  std::vector<std::vector<double>> out(runs.size());
  for (int r = 0; r < reps; ++r) {
    for (std::size_t k = 0; k < runs.size(); ++k) {
      const std::size_t which = (k + static_cast<std::size_t>(r)) % runs.size();
      out[which].push_back(runs[which]());
    }
  }
  return out;
}

// The per-repetition ratios a[i] / b[i].
Stat paired_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) r.push_back(a[i] / b[i]);
  return stat_of(std::move(r));
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// --- the job bodies ----------------------------------------------------------

std::atomic<std::uint64_t> g_done{0};

__attribute__((noinline)) void throw_at(int depth) {
  if (depth <= 1) throw std::runtime_error("bench failure");
  throw_at(depth - 1);
  asm volatile("");
}

// i-th job of a run: fails when i % 100 < fail_percent. It counts itself
// done as it leaves, returning or throwing, so a run's clock stops when the
// last job has finished, not when it started.
struct Body {
  int fail_percent = 0;
  int depth = 10;
  void operator()(std::size_t i) const {
    struct Finished {
      ~Finished() { g_done.fetch_add(1, std::memory_order_release); }
    } finished;
    if (static_cast<int>(i % 100) < fail_percent) throw_at(depth);
  }
};

// The registered handler's work, shared by bulwark's registered job and the
// asio closure that owns the same JSON payload.
nlohmann::json json_work(const Body& body, const nlohmann::json& p) {
  body(p.at("i").get<std::size_t>());
  return nlohmann::json();
}

void wait_done(std::uint64_t n) {
  while (g_done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// Whether the runtimes a run builds capture throw-site traces (each Runtime
// sets the process-wide switch from its options when it starts).
bool g_capture = true;

// --- the peers -----------------------------------------------------------------

// What people write by hand: a deque under a mutex, a condition variable, and
// a try/catch around each task.
class MutexPool {
 public:
  explicit MutexPool(unsigned n) {
    for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~MutexPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void post(std::function<void()> f) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(f));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        f = std::move(tasks_.front());
        tasks_.pop_front();
      }
      try {
        f();
      } catch (...) {
      }
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// The raw-queue ceiling: moodycamel's blocking queue, a try/catch per task.
class MoodycamelPool {
 public:
  explicit MoodycamelPool(unsigned n) {
    for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~MoodycamelPool() {
    for (std::size_t i = 0; i < threads_.size(); ++i) queue_.enqueue({});
    for (auto& t : threads_) t.join();
  }
  void post(std::function<void()> f) { queue_.enqueue(std::move(f)); }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      queue_.wait_dequeue(f);
      if (!f) return;
      try {
        f();
      } catch (...) {
      }
    }
  }
  moodycamel::BlockingConcurrentQueue<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
};

// Runs `n` jobs through one system; returns jobs per second.
using Runner = std::function<double(std::size_t n, Body body, unsigned workers)>;

double run_asio(std::size_t n, Body body, unsigned workers) {
  boost::asio::thread_pool pool(workers);
  g_done = 0;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    boost::asio::post(pool, [body, i] {
      try {  // without it a throwing handler terminates the process
        body(i);
      } catch (...) {
      }
    });
  }
  wait_done(n);
  const double s = seconds_since(start);
  pool.join();
  return static_cast<double>(n) / s;
}

// asio posting a closure that owns the payload a registered bulwark job
// carries (built the same way, in the producer) and calls the same handler
// body: what a registered job costs over the payload's own cost.
double run_asio_json(std::size_t n, Body body, unsigned workers) {
  boost::asio::thread_pool pool(workers);
  g_done = 0;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    boost::asio::post(pool, [body, p = nlohmann::json{{"i", i}}] {
      try {
        json_work(body, p);
      } catch (...) {
      }
    });
  }
  wait_done(n);
  const double s = seconds_since(start);
  pool.join();
  return static_cast<double>(n) / s;
}

// `workers` TBB worker threads run the jobs; the producer only submits
// (an arena of workers + 1 slots, one kept for it, and TBB allowed that many
// threads in all: by default it would start only cores - 1 workers). Like
// the others the producer then waits for the count (in a task_group's
// wait() it would run jobs itself).
double run_tbb(std::size_t n, Body body, unsigned workers) {
  tbb::global_control threads(tbb::global_control::max_allowed_parallelism, workers + 1);
  tbb::task_arena arena(static_cast<int>(workers) + 1, 1);
  g_done = 0;
  const auto start = Clock::now();
  arena.enqueue([&] {});  // wakes the workers before the first job
  for (std::size_t i = 0; i < n; ++i) {
    arena.enqueue([body, i] {
      try {
        body(i);
      } catch (...) {
      }
    });
  }
  wait_done(n);
  return static_cast<double>(n) / seconds_since(start);
}

template <class Pool>
double run_pool(std::size_t n, Body body, unsigned workers) {
  Pool pool(workers);
  g_done = 0;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; ++i) pool.post([body, i] { body(i); });
  wait_done(n);
  return static_cast<double>(n) / seconds_since(start);
}

bulwark::RuntimeOptions bulwark_options(unsigned workers, std::size_t n) {
  bulwark::RuntimeOptions o;
  o.workers = workers;
  o.queue_capacity = n + 1024;
  o.logging.level = "off";
  o.retry.max_attempts = 1;
  o.retention_max_finished = 10'000;
  o.capture_traces = g_capture;
  return o;
}

double run_bulwark_post(std::size_t n, Body body, unsigned workers) {
  bulwark::Runtime rt(bulwark::Registry{}, bulwark_options(workers, n));
  g_done = 0;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; ++i) rt.post([body, i] { body(i); });
  wait_done(n);
  const double s = seconds_since(start);
  rt.wait_idle(60s);
  return static_cast<double>(n) / s;
}

double run_bulwark_handler(std::size_t n, Body body, unsigned workers) {
  bulwark::Registry registry;
  registry.add("work", [body](bulwark::JobContext&, const nlohmann::json& p) { return json_work(body, p); });
  bulwark::Runtime rt(std::move(registry), bulwark_options(workers, n));
  g_done = 0;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; ++i) rt.submit({.type = "work", .payload = {{"i", i}}});
  wait_done(n);
  const double s = seconds_since(start);
  rt.wait_idle(60s);
  return static_cast<double>(n) / s;
}

double run_bulwark_unguarded(std::size_t n, Body body, unsigned workers) {
  bulwark::detail::hooks::set_unguarded(true);
  const double r = run_bulwark_post(n, body, workers);
  bulwark::detail::hooks::set_unguarded(false);
  return r;
}

struct System {
  const char* name;
  Runner run;
};

const std::vector<System>& systems() {
  static const std::vector<System> all = {
      {"bulwark_post", run_bulwark_post},
      {"bulwark_handler", run_bulwark_handler},
      {"asio_thread_pool", run_asio},
      {"asio_json_closure", run_asio_json},
      {"tbb_task_group", run_tbb},
      {"mutex_pool", run_pool<MutexPool>},
      {"moodycamel_pool", run_pool<MoodycamelPool>},
  };
  return all;
}

// ns that guarded() adds to a call of an empty function on the happy path.
__attribute__((noinline)) void empty_job() { asm volatile(""); }

double frame_cost_ns(std::size_t iterations) {
  const auto plain_start = Clock::now();
  for (std::size_t i = 0; i < iterations; ++i) empty_job();
  const double plain = seconds_since(plain_start);
  const auto guarded_start = Clock::now();
  for (std::size_t i = 0; i < iterations; ++i) {
    auto outcome = bulwark::guarded([] { empty_job(); });
    asm volatile("" : : "r"(outcome.ok()));
  }
  const double guarded = seconds_since(guarded_start);
  return (guarded - plain) * 1e9 / static_cast<double>(iterations);
}

// --- failure cost ----------------------------------------------------------

// ns per throw + catch of a std::runtime_error `depth` calls deep, one thread,
// inside a guarded frame's capture scope (as a job's throw is) or outside.
double floor_ns(int depth, std::size_t iterations, bool in_guard = true) {
  const auto start = Clock::now();
  for (std::size_t i = 0; i < iterations; ++i) {
    try {
      if (in_guard) {
        const bulwark::detail::GuardFrame frame(__builtin_frame_address(0));
        throw_at(depth);
      } else {
        throw_at(depth);
      }
    } catch (const std::exception&) {
    }
  }
  return seconds_since(start) * 1e9 / static_cast<double>(iterations);
}

// This program's path, and the directory it sits in (its helper programs are
// built beside it).
std::string self_path() {
  char self[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  return n > 0 ? std::string(self, static_cast<std::size_t>(n)) : std::string("bulwark_bench");
}

std::string own_dir() {
  std::string dir = self_path();
  const auto slash = dir.rfind('/');
  return slash == std::string::npos ? std::string(".") : dir.erase(slash);
}

// The one number a command prints; throws if it fails or prints none.
double number_from(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("cannot start " + cmd);
  double x = -1;
  const bool got = std::fscanf(p, "%lf", &x) == 1;
  if (::pclose(p) != 0 || !got) throw std::runtime_error(cmd + " failed");
  return x;
}

// The same throw in a program that does not link bulwark: bulwark_throw_baseline,
// built beside this program. Its ns per throw, or -1 if it cannot be run.
double baseline_throw_ns(int depth, std::size_t iterations) {
  try {
    return number_from(own_dir() + "/bulwark_throw_baseline " + std::to_string(depth) + " " + std::to_string(iterations));
  } catch (const std::exception&) {
    return -1;
  }
}

// ns per failed job on `workers` workers, every job failing at `depth`.
double bulwark_failure_ns(std::size_t n, int depth, unsigned workers) {
  return 1e9 / run_bulwark_post(n, Body{100, depth}, workers) * workers;
}

// --- the Go peer -------------------------------------------------------------

// go_peer (bench/go/peer.go) is built beside this program when Go is
// installed; without it the Go figures are left out, saying why.
bool go_peer_built() { return ::access((own_dir() + "/go_peer").c_str(), X_OK) == 0; }

// Jobs per second of Go's defer/recover pool, every job panicking `depth`
// calls deep; `stack` is what the recover keeps: none, callers, debug.
double go_peer_rate(const std::string& stack, int depth, unsigned workers, std::size_t n) {
  const std::string cmd = own_dir() + "/go_peer -stack " + stack + " -depth " + std::to_string(depth) +
                          " -workers " + std::to_string(workers) + " -jobs " + std::to_string(n);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("cannot start " + cmd);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (::pclose(p) != 0) throw std::runtime_error(cmd + " failed");
  return nlohmann::json::parse(out).at("jobs_per_s").get<double>();
}

// Failing jobs (every one throws or panics at depth 1, 10, 50) on 1 and 2
// workers: bulwark with throw-site capture against Go's pool keeping no
// stack, runtime.Callers, or debug.Stack(); each (depth, workers) cell runs
// the four interleaved. Go's debug.Stack() runs get a quarter of the jobs
// (it is 10-70 µs a job).
ordered_json go_peer(const Config& cfg) {
  if (!go_peer_built()) return {{"skipped", "go_peer not built (Go not installed when the bench was configured)"}};
  const std::vector<std::string> stacks = {"none", "callers", "debug"};
  const std::size_t n = cfg.failing_jobs;
  ordered_json out;
  out["what"] = "failing jobs per second; bulwark captures the throw-site trace, Go keeps none, "
                "runtime.Callers or debug.Stack() in its recover";
  for (int depth : {1, 10, 50}) {
    ordered_json at_depth;
    std::map<std::string, std::vector<double>> one, two;  // per system, per repetition
    for (unsigned workers : {1U, 2U}) {
      std::vector<std::function<double()>> runs;
      runs.push_back([=] { return run_bulwark_post(n, Body{100, depth}, workers); });
      for (const std::string& s : stacks) {
        runs.push_back([=] { return go_peer_rate(s, depth, workers, s == "debug" ? n / 4 : n); });
      }
      const auto got = interleaved(cfg.reps, runs);
      auto& into = workers == 1 ? one : two;
      into["bulwark"] = got[0];
      for (std::size_t k = 0; k < stacks.size(); ++k) into["go_" + stacks[k]] = got[k + 1];
    }
    for (const auto& [name, rates] : one) {
      at_depth[name] = {{"one_worker_jobs_per_s", stat_of(rates).json()},
                        {"two_workers_jobs_per_s", stat_of(two[name]).json()},
                        {"us_per_job_one_worker", 1e6 / stat_of(rates).median},
                        {"scaling_2_over_1", stat_of(two[name]).median / stat_of(rates).median}};
    }
    at_depth["bulwark_over_go_debug_stack_paired"] = {{"one_worker", paired_ratio(one["bulwark"], one["go_debug"]).json()},
                                                      {"two_workers", paired_ratio(two["bulwark"], two["go_debug"]).json()}};
    at_depth["bulwark_over_go_callers_paired"] = {{"one_worker", paired_ratio(one["bulwark"], one["go_callers"]).json()},
                                                  {"two_workers", paired_ratio(two["bulwark"], two["go_callers"]).json()}};
    out[std::to_string(depth)] = at_depth;
  }
  return out;
}

// --- HTTP ----------------------------------------------------------------------

// What wrk reports for one run.
struct WrkRun {
  double requests_per_s = 0;
  double p50_ms = 0, p99_ms = 0;
  long errors = 0;  // non-2xx answers and socket errors
};

// "1.02ms" / "816.17us" / "1.20s" in ms.
double wrk_ms(const std::string& v) {
  const double x = std::stod(v);
  if (v.ends_with("us")) return x / 1000;
  if (v.ends_with("ms")) return x;
  if (v.ends_with("s")) return x * 1000;
  return x;
}

// wrk, one thread, `connections` keep-alive connections for `seconds`, with
// `script` (a Lua file) when not empty. Throws when wrk fails.
WrkRun run_wrk(const std::string& url, const std::string& script, int connections, int seconds) {
  std::string cmd = "wrk -t1 -c" + std::to_string(connections) + " -d" + std::to_string(seconds) + "s --latency ";
  if (!script.empty()) cmd += "-s " + script + " ";
  cmd += url + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("cannot start " + cmd);
  WrkRun run;
  char buf[512];
  std::string all;
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    const std::string line = buf;
    all += line;
    std::istringstream in(line);
    std::string first, second;
    in >> first >> second;
    if (first == "Requests/sec:") run.requests_per_s = std::stod(second);
    if (first == "50%") run.p50_ms = wrk_ms(second);
    if (first == "99%") run.p99_ms = wrk_ms(second);
    if (first == "Non-2xx") run.errors += std::stol(line.substr(line.rfind(' ') + 1));
    if (first == "Socket") run.errors += 1;
  }
  if (::pclose(p) != 0 || run.requests_per_s <= 0) throw std::runtime_error(cmd + " failed:\n" + all);
  return run;
}

// One run against a fresh in-process server (the Runtime and HttpServer of
// `bulwark serve`, an echo handler, `workers` workers) with `io_threads`
// I/O threads (0 = the default, one per core).
WrkRun http_run(unsigned io_threads, bool post, unsigned workers, int seconds, const std::string& script) {
  bulwark::Registry registry;
  registry.add("echo", [](bulwark::JobContext&, const nlohmann::json& p) { return p; });
  bulwark::RuntimeOptions options = bulwark_options(workers, 100'000);
  options.server.listen = "127.0.0.1:0";
  options.server.io_threads = io_threads;
  bulwark::Runtime rt(std::move(registry), options);
  bulwark::HttpServer server(rt, options.server);
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  const WrkRun run = run_wrk(base + (post ? "/v1/jobs" : "/healthz"), post ? script : "", 64, seconds);
  server.stop();
  rt.shutdown();
  return run;
}

// A connection to 127.0.0.1:port that has asked for the event stream; -1 if
// it cannot. `small_buffer`: a 4 KiB receive buffer.
int open_event_stream(std::uint16_t port, bool small_buffer) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  if (small_buffer) {
    int size = 4096;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const char request[] = "GET /v1/events HTTP/1.1\r\nHost: bench\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof request - 1)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Registered jobs per second through submit_many (1,000 at a time) while the
// event stream has no reader (`mode` 0: nothing is recorded), a reader that
// keeps up (1), or a client that stopped reading (2: this program started
// again with --stalled-client, which asks for the stream and then reads
// nothing, so the kernel's buffers fill and the server cuts it off; spawned,
// not forked, so the runtime's pages are not copied on write meanwhile).
double events_rate(int mode, std::size_t n, unsigned workers) {
  bulwark::Registry registry;
  registry.add("work", [](bulwark::JobContext&, const nlohmann::json& p) { return json_work(Body{}, p); });
  bulwark::RuntimeOptions options = bulwark_options(workers, n);
  options.server.listen = "127.0.0.1:0";
  options.server.read_timeout = 500ms;
  bulwark::Runtime rt(std::move(registry), options);
  bulwark::HttpServer server(rt, options.server);
  std::jthread reader;
  pid_t stalled = -1;
  if (mode == 1) {
    const int fd = open_event_stream(server.port(), false);
    if (fd < 0) throw std::runtime_error("cannot open the event stream");
    reader = std::jthread([fd] {
      char buf[65536];
      while (::recv(fd, buf, sizeof buf, 0) > 0) {
      }
      ::close(fd);
    });
  } else if (mode == 2) {
    const std::string self = self_path(), port = std::to_string(server.port());
    char* const argv[] = {const_cast<char*>(self.c_str()), const_cast<char*>("--stalled-client"),
                          const_cast<char*>(port.c_str()), nullptr};
    if (::posix_spawn(&stalled, self.c_str(), nullptr, nullptr, argv, environ) != 0) {
      throw std::runtime_error("cannot start a stalled client");
    }
    std::this_thread::sleep_for(50ms);  // it connects
  }
  if (mode != 0) {  // the stream has started recording
    const auto until = Clock::now() + 5s;
    while (!rt.events_after(0, 0).newest && Clock::now() < until) {
      rt.submit({.type = "work", .payload = {{"i", 0}}});
      std::this_thread::sleep_for(1ms);
    }
  }
  rt.wait_idle(30s);
  g_done = 0;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; i += 1000) {
    std::vector<bulwark::JobSpec> specs;
    for (std::size_t k = i; k < std::min(n, i + 1000); ++k) specs.push_back({.type = "work", .payload = {{"i", k}}});
    rt.submit_many(std::move(specs));
  }
  wait_done(n);
  const double rate = static_cast<double>(n) / seconds_since(start);
  if (stalled > 0) {
    ::kill(stalled, SIGKILL);
    ::waitpid(stalled, nullptr, 0);
  }
  server.stop();
  rt.shutdown();
  return rate;
}

// POST /v1/jobs (an echo job) and GET /healthz at 64 connections, the server
// with one I/O thread against the default (one per core), interleaved.
ordered_json http(const Config& cfg, unsigned workers) {
  if (std::system("command -v wrk >/dev/null 2>&1") != 0) return {{"skipped", "wrk not installed"}};
  const std::string script = "/tmp/bulwark_bench_post_" + std::to_string(::getpid()) + ".lua";
  std::ofstream(script) << "wrk.method = \"POST\"\n"
                           "wrk.body = '{\"type\":\"echo\",\"payload\":{\"msg\":\"hello\",\"n\":1}}'\n"
                           "wrk.headers[\"Content-Type\"] = \"application/json\"\n";
  const int seconds = cfg.quick ? 1 : 3;
  const unsigned many = bulwark::ServerOptions{}.effective_io_threads();
  ordered_json out = {{"connections", 64}, {"seconds_per_run", seconds}, {"client", "wrk -t1"},
                      {"default_io_threads", many}};
  for (const bool post : {true, false}) {
    if (!post && cfg.quick) break;
    std::vector<WrkRun> one, def;
    const auto runs = interleaved(cfg.reps, {[&] {
                                               one.push_back(http_run(1, post, workers, seconds, script));
                                               return one.back().requests_per_s;
                                             },
                                             [&] {
                                               def.push_back(http_run(0, post, workers, seconds, script));
                                               return def.back().requests_per_s;
                                             }});
    const auto side = [](const std::vector<WrkRun>& r, const std::vector<double>& rates) {
      std::vector<double> p50, p99;
      long errors = 0;
      for (std::size_t i = 1; i < r.size(); ++i) {  // [0] is the warm-up
        p50.push_back(r[i].p50_ms);
        p99.push_back(r[i].p99_ms);
        errors += r[i].errors;
      }
      return ordered_json{{"requests_per_s", stat_of(rates).json()}, {"p50_ms", stat_of(p50).json()},
                          {"p99_ms", stat_of(p99).json()}, {"errors", errors}};
    };
    out[post ? "post_jobs" : "get_healthz"] = {{"io_threads_1", side(one, runs[0])},
                                              {"io_threads_default", side(def, runs[1])},
                                              {"default_over_one_paired", paired_ratio(runs[1], runs[0]).json()}};
  }
  std::remove(script.c_str());
  // The event stream's cost to the runtime: no reader, a reader, a stalled one.
  const std::size_t n = cfg.quick ? 20'000 : 100'000;
  const auto ev = interleaved(cfg.reps, {[&] { return events_rate(0, n, workers); },
                                        [&] { return events_rate(1, n, workers); },
                                        [&] { return events_rate(2, n, workers); }});
  out["events"] = {{"jobs", n},
                   {"jobs_per_s_no_reader", stat_of(ev[0]).json()},
                   {"jobs_per_s_one_reader", stat_of(ev[1]).json()},
                   {"jobs_per_s_stalled_reader", stat_of(ev[2]).json()},
                   {"one_reader_over_none_paired", paired_ratio(ev[1], ev[0]).json()},
                   {"stalled_reader_over_none_paired", paired_ratio(ev[2], ev[0]).json()}};
  return out;
}

// --- latency -----------------------------------------------------------------

ordered_json latency(std::size_t n, double rate, unsigned workers) {
  bulwark::Runtime rt(bulwark::Registry{}, bulwark_options(workers, n));
  std::vector<std::int64_t> waits(n);
  g_done = 0;
  const auto interval = std::chrono::duration<double>(1.0 / rate);
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    // Paced by sleeping, not spinning: a spinning producer would hold one of
    // the cores the workers need, and what it measured moved with the load.
    std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(i)));
    const auto enqueued = Clock::now();
    rt.post([&waits, i, enqueued] {
      waits[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - enqueued).count();
      g_done.fetch_add(1, std::memory_order_relaxed);
    });
  }
  wait_done(n);
  std::sort(waits.begin(), waits.end());
  const auto at = [&](double q) { return static_cast<double>(waits[static_cast<std::size_t>(q * (n - 1))]) / 1000.0; };
  return {{"rate_per_s", rate}, {"p50_us", at(0.5)}, {"p99_us", at(0.99)}, {"p999_us", at(0.999)}};
}

// --- the recovery governor under a failure storm ----------------------------

// Fresh jobs' latency (submit to start) at a steady rate while a storm of
// failing jobs retries on the same workers, with the recovery governor on
// (the defaults, evaluated every 100 ms) or off (retries up to
// recovery.max_concurrent = the worker count, the most a fixed cap would
// allow). The storm: `storm` jobs of priority 5 that spin 1 ms and throw, 6
// attempts each, 1 ms backoff; the fresh jobs: priority 9, `fresh` of them
// at `rate` per second, started once every storm job has had its first
// attempt (from then on the storm is retries, what the governor limits).
ordered_json governor_storm(bool adaptive, std::size_t storm, std::size_t fresh, double rate, unsigned workers) {
  bulwark::Registry registry;
  std::vector<std::int64_t> waits(fresh, -1);
  std::atomic<std::size_t> fresh_done{0}, storm_started{0};
  registry.add("storm", [&](bulwark::JobContext& ctx, const nlohmann::json&) -> nlohmann::json {
    if (ctx.attempt() == 1) storm_started.fetch_add(1, std::memory_order_relaxed);
    const auto until = Clock::now() + 1ms;
    while (Clock::now() < until) {
    }
    throw std::runtime_error("storm");
  });
  registry.add("fresh", [&](bulwark::JobContext&, const nlohmann::json& p) -> nlohmann::json {
    const auto i = p.at("i").get<std::size_t>();
    waits[i] = Clock::now().time_since_epoch().count() - p.at("at").get<std::int64_t>();
    fresh_done.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  });
  auto o = bulwark_options(workers, storm + fresh);
  o.retry.max_attempts = 6;
  o.retry.initial = 1ms;
  o.retry.max = 1ms;
  o.retry.jitter = 0;
  o.max_concurrent_retries = workers;
  o.recovery.adaptive = adaptive;
  o.recovery.adjust_every = 100ms;
  o.retention_max_dead = storm + 16;
  bulwark::Runtime rt(std::move(registry), o);
  for (std::size_t i = 0; i < storm; ++i) rt.submit({.type = "storm", .priority = 5});
  // Wait for every first attempt to have started: from then on the storm is
  // retries only, the work the governor limits.
  while (storm_started.load() < storm) std::this_thread::sleep_for(1ms);
  const auto interval = std::chrono::duration<double>(1.0 / rate);
  const auto start = Clock::now();
  for (std::size_t i = 0; i < fresh; ++i) {
    std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(i)));
    rt.submit({.type = "fresh", .payload = {{"i", i}, {"at", Clock::now().time_since_epoch().count()}}, .priority = 9});
  }
  while (fresh_done.load() < fresh) std::this_thread::sleep_for(1ms);
  const double storm_left = static_cast<double>(rt.counters().queue_depth);
  rt.wait_idle(120s);
  const auto h = rt.health();
  std::sort(waits.begin(), waits.end());
  const auto at = [&](double q) { return static_cast<double>(waits[static_cast<std::size_t>(q * (fresh - 1))]) / 1000.0; };
  return {{"p50_us", at(0.5)},
          {"p99_us", at(0.99)},
          {"p999_us", at(0.999)},
          {"recovery_limit_at_end", h.recovery.limit},
          {"lowered", h.recovery.lowered},
          {"raised", h.recovery.raised},
          {"storm_jobs_waiting_when_fresh_ended", storm_left}};
}

// Governor on and off, interleaved per repetition; p99 side by side.
ordered_json governor(const Config& cfg, unsigned workers) {
  // The fresh stream lasts seconds, so the governor's first evaluations (the
  // storm at full limit) are a small part of it.
  const std::size_t storm = cfg.quick ? 800 : 2'000;
  const std::size_t fresh = cfg.quick ? 1'000 : 2'000;
  std::vector<double> on_p50, on_p99, off_p50, off_p99;
  for (int r = 0; r < cfg.reps; ++r) {
    for (bool adaptive : {r % 2 == 0, r % 2 != 0}) {  // alternate which goes first
      const ordered_json g = governor_storm(adaptive, storm, fresh, 500, workers);
      (adaptive ? on_p50 : off_p50).push_back(g["p50_us"]);
      (adaptive ? on_p99 : off_p99).push_back(g["p99_us"]);
    }
  }
  return {{"what", "fresh jobs' queue wait (submit to start, µs) at 500/s during a storm of failing jobs retrying; "
                   "governor on (defaults) vs off (fixed cap = workers)"},
          {"storm_jobs", storm},
          {"fresh_jobs", fresh},
          {"on", {{"p50_us", stat_of(on_p50).json()}, {"p99_us", stat_of(on_p99).json()}}},
          {"off", {{"p50_us", stat_of(off_p50).json()}, {"p99_us", stat_of(off_p99).json()}}},
          {"p99_off_over_on_paired", paired_ratio(off_p99, on_p99).json()}};
}

// --- supervision -------------------------------------------------------------

// ms from a hard timeout to the replacement worker starting the next job, and
// from the no-heartbeat deadline to the stuck trace being on the record.
ordered_json supervision(int reps) {
  std::vector<double> replace_ms, detect_ms;
  for (int r = 0; r < reps; ++r) {
    bulwark::Registry registry;
    std::atomic<std::int64_t> hang_start{0}, probe_start{0};
    registry.add("hang", [&](bulwark::JobContext&, const nlohmann::json&) {
      hang_start = Clock::now().time_since_epoch().count();
      const auto until = Clock::now() + 400ms;
      while (Clock::now() < until) {
      }
      return nlohmann::json();
    }, {.hard_timeout = 50ms});
    registry.add("probe", [&](bulwark::JobContext&, const nlohmann::json&) {
      probe_start = Clock::now().time_since_epoch().count();
      return nlohmann::json();
    });
    registry.add("stuck", [&](bulwark::JobContext&, const nlohmann::json&) {
      hang_start = Clock::now().time_since_epoch().count();
      const auto until = Clock::now() + 200ms;
      while (Clock::now() < until) {
      }
      return nlohmann::json();
    });
    auto o = bulwark_options(1, 100);
    o.supervisor.tick = 10ms;
    o.supervisor.stuck_after = 50ms;
    o.supervisor.max_abandoned_threads = 16;
    bulwark::Runtime rt(std::move(registry), o);
    rt.submit({.type = "hang"});
    rt.submit({.type = "probe"});
    rt.wait_idle(10s);
    replace_ms.push_back(static_cast<double>(probe_start - hang_start) / 1e6 - 50.0);

    auto s = rt.submit({.type = "stuck"});
    while (!rt.get(s.id)->stuck_trace) std::this_thread::sleep_for(100us);
    detect_ms.push_back(static_cast<double>(Clock::now().time_since_epoch().count() - hang_start) / 1e6 - 50.0);
    rt.wait_idle(10s);
  }
  const auto stat = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return Stat{v[v.size() / 2], v.front(), v.back()}.json();
  };
  return {{"tick_ms", 10}, {"hard_timeout_to_replacement_running_ms", stat(replace_ms)},
          {"stuck_detection_after_deadline_ms", stat(detect_ms)}};
}

// --- process isolation -------------------------------------------------------

// The job types of the isolation runs; the children (this program started
// again) must register the same ones.
bulwark::Registry isolation_registry() {
  bulwark::Registry r;
  r.add("echo_thread", [](bulwark::JobContext&, const nlohmann::json& p) { return p; });
  r.add("echo_process", [](bulwark::JobContext&, const nlohmann::json& p) { return p; },
        {.isolation = bulwark::Isolation::process});
  return r;
}

// Microseconds per job, one at a time (submit, wait for the end, repeat), on
// a worker thread and in a child process; and jobs per second with both
// workers busy.
ordered_json isolation(std::size_t n, int reps) {
  const auto one_at_a_time = [&](const char* type) {
    return repeat(reps, [&] {
      auto o = bulwark_options(1, n);
      o.isolation.processes = 1;
      bulwark::Runtime rt(isolation_registry(), o);
      rt.submit({.type = type, .payload = {{"warm", true}}});
      rt.wait_idle(60s);
      const auto start = Clock::now();
      for (std::size_t i = 0; i < n; ++i) {
        rt.submit({.type = type, .payload = {{"i", i}}});
        rt.wait_idle(60s);
      }
      return seconds_since(start) * 1e6 / static_cast<double>(n);
    });
  };
  const auto throughput = [&](const char* type) {
    return repeat(reps, [&] {
      auto o = bulwark_options(2, n * 10);
      o.isolation.processes = 2;
      bulwark::Runtime rt(isolation_registry(), o);
      rt.submit({.type = type});
      rt.wait_idle(60s);
      const auto start = Clock::now();
      for (std::size_t i = 0; i < n * 10; ++i) rt.submit({.type = type, .payload = {{"i", i}}});
      rt.wait_idle(120s);
      return static_cast<double>(n * 10) / seconds_since(start);
    });
  };
  const Stat thread_us = one_at_a_time("echo_thread");
  const Stat process_us = one_at_a_time("echo_process");
  const Stat thread_rate = throughput("echo_thread");
  const Stat process_rate = throughput("echo_process");
  return {{"one_at_a_time_us_thread", thread_us.json()},
          {"one_at_a_time_us_process", process_us.json()},
          {"round_trip_cost_us", process_us.median - thread_us.median},
          {"jobs_per_s_thread", thread_rate.json()},
          {"jobs_per_s_process", process_rate.json()}};
}

// --- backlog -----------------------------------------------------------------

// Holds every worker of a pool until released: `workers` jobs that wait.
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard lock(mutex);
      open = true;
    }
    cv.notify_all();
  }
};

// Jobs per second drained from a backlog of `n` (queued while the workers
// were held), from release to the last one finished: registered jobs (a
// JSON payload, a record reachable by id) or posted closures.
double drain_rate(std::size_t n, unsigned workers, bool registered) {
  bulwark::Registry registry;
  registry.add("work", [](bulwark::JobContext&, const nlohmann::json& p) { return json_work(Body{}, p); });
  bulwark::Runtime rt(std::move(registry), bulwark_options(workers, n));
  Gate gate;
  for (unsigned i = 0; i < workers; ++i) rt.post([&] { gate.wait(); });
  for (std::size_t i = 0; i < n; ++i) {
    if (registered) {
      rt.submit({.type = "work", .payload = {{"i", i}}});
    } else {
      rt.post([i] { Body{}(i); });
    }
  }
  g_done = 0;
  const auto start = Clock::now();
  gate.release();
  wait_done(n);
  return static_cast<double>(n) / seconds_since(start);
}

// ns per enqueue of `m` more jobs with `n` already queued (workers held):
// a bulwark post and an asio post of the same closure.
double enqueue_ns_bulwark(std::size_t n, std::size_t m, unsigned workers) {
  bulwark::Runtime rt(bulwark::Registry{}, bulwark_options(workers, n + m));
  Gate gate;
  for (unsigned i = 0; i < workers; ++i) rt.post([&] { gate.wait(); });
  for (std::size_t i = 0; i < n; ++i) rt.post([] {});
  const auto start = Clock::now();
  for (std::size_t i = 0; i < m; ++i) rt.post([] {});
  const double ns = seconds_since(start) * 1e9 / static_cast<double>(m);
  gate.release();
  rt.wait_idle(120s);
  return ns;
}

double enqueue_ns_asio(std::size_t n, std::size_t m, unsigned workers) {
  boost::asio::thread_pool pool(workers);
  Gate gate;
  for (unsigned i = 0; i < workers; ++i) boost::asio::post(pool, [&] { gate.wait(); });
  for (std::size_t i = 0; i < n; ++i) boost::asio::post(pool, [] {});
  const auto start = Clock::now();
  for (std::size_t i = 0; i < m; ++i) boost::asio::post(pool, [] {});
  const double ns = seconds_since(start) * 1e9 / static_cast<double>(m);
  gate.release();
  pool.join();
  return ns;
}

// --- memory ------------------------------------------------------------------

long rss_kb() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// Resident bytes per queued job, `n` queued behind a held worker: posted
// closures or registered jobs with a small JSON payload. Run in a fresh
// process: a heap with room left by earlier runs would hide the growth.
double bytes_per_queued(std::size_t n, bool registered) {
  bulwark::Registry registry;
  Gate gate;
  registry.add("noop", [](bulwark::JobContext&, const nlohmann::json&) { return nlohmann::json(); });
  bulwark::Runtime rt(std::move(registry), bulwark_options(1, n));
  rt.post([&] { gate.wait(); });
  std::this_thread::sleep_for(20ms);
  const long before = rss_kb();
  for (std::size_t i = 0; i < n; ++i) {
    if (registered) {
      rt.submit({.type = "noop", .payload = {{"i", i}}});
    } else {
      rt.post([] {});
    }
  }
  const long after = rss_kb();
  gate.release();
  rt.wait_idle(120s);
  return static_cast<double>(after - before) * 1024.0 / static_cast<double>(n);
}

// --- fresh processes -----------------------------------------------------------

// The measurements a child runs (bulwark_bench --run NAME N FAIL WORKERS):
// a system's throughput with FAIL % failing, or a backlog figure for N.
double run_named(const std::string& name, std::size_t n, int fail_percent, unsigned workers) {
  for (const System& sys : systems()) {
    if (sys.name == name) return sys.run(n, Body{fail_percent, 10}, workers);
  }
  if (name == "drain_registered") return drain_rate(n, workers, true);
  if (name == "drain_posts") return drain_rate(n, workers, false);
  if (name == "enqueue_bulwark") return enqueue_ns_bulwark(n, n / 10, workers);
  if (name == "enqueue_asio") return enqueue_ns_asio(n, n / 10, workers);
  if (name == "memory_posts") return bytes_per_queued(n, false);
  if (name == "memory_handlers") return bytes_per_queued(n, true);
  throw std::invalid_argument("--run: unknown measurement '" + name + "'");
}

// One run in a fresh process (this program again, with --run): every run
// starts with a new process's allocator, threads and caches, so no system
// inherits a heap another one left fragmented (in one process, a system
// that runs after a million-job backlog allocates from what that left).
// The child first does an untimed run of a tenth of the size.
double run_fresh(const std::string& name, std::size_t n, int fail_percent, unsigned workers) {
  return number_from(self_path() + " --run " + name + " " + std::to_string(n) + " " + std::to_string(fail_percent) +
                     " " + std::to_string(workers));
}

ordered_json backlog(const Config& cfg, unsigned workers) {
  ordered_json out;
  const std::vector<std::size_t> sizes =
      cfg.quick ? std::vector<std::size_t>{1'000, 10'000, 100'000} : std::vector<std::size_t>{1'000, 100'000, 1'000'000};
  std::vector<std::function<double()>> runs;
  for (const bool registered : {true, false}) {
    for (std::size_t n : sizes) {
      runs.push_back([=] { return run_fresh(registered ? "drain_registered" : "drain_posts", n, 0, workers); });
    }
  }
  const auto rates = interleaved(cfg.reps, runs);
  const std::size_t k_posts = sizes.size();
  ordered_json drain, drain_posts;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    drain[std::to_string(sizes[k])] = stat_of(rates[k]).json();
    drain_posts[std::to_string(sizes[k])] = stat_of(rates[k_posts + k]).json();
  }
  out["drain_jobs_per_s_by_backlog"] = drain;
  out["drain_largest_over_smallest_paired"] = paired_ratio(rates[k_posts - 1], rates[0]).json();
  out["drain_posts_per_s_by_backlog"] = drain_posts;
  out["drain_posts_largest_over_smallest_paired"] = paired_ratio(rates.back(), rates[k_posts]).json();
  const std::size_t queued = sizes.back();
  const auto enq = interleaved(cfg.reps, {[&] { return run_fresh("enqueue_bulwark", queued, 0, workers); },
                                         [&] { return run_fresh("enqueue_asio", queued, 0, workers); }});
  out["enqueue_with_queued"] = queued;
  out["enqueue_count"] = queued / 10;
  out["enqueue_ns_bulwark_post"] = stat_of(enq[0]).json();
  out["enqueue_ns_asio_post"] = stat_of(enq[1]).json();
  out["enqueue_bulwark_over_asio_paired"] = paired_ratio(enq[0], enq[1]).json();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (auto code = bulwark::run_worker_process_if_requested(isolation_registry())) return *code;
  if (argc == 3 && std::string(argv[1]) == "--stalled-client") {  // for events_rate()
    const int fd = open_event_stream(static_cast<std::uint16_t>(std::stoi(argv[2])), true);
    ::sleep(120);  // reads nothing; killed when the run is over
    return fd >= 0 ? 0 : 1;
  }
  if (argc == 6 && std::string(argv[1]) == "--run") {  // one measurement, for run_fresh()
    const std::string name = argv[2];
    const auto n = static_cast<std::size_t>(std::stoull(argv[3]));
    const int fail = std::stoi(argv[4]);
    const auto workers = static_cast<unsigned>(std::stoi(argv[5]));
    // A warm-up, except before a memory figure (it would leave room in the heap).
    if (!name.starts_with("memory")) run_named(name, std::max<std::size_t>(n / 10, 100), fail, workers);
    std::cout << run_named(name, n, fail, workers) << "\n";
    return 0;
  }
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      cfg.quick = true;
    } else if (a == "--workers" && i + 1 < argc) {
      cfg.workers = static_cast<unsigned>(std::stoi(argv[++i]));
    } else if (a == "--out" && i + 1 < argc) {
      cfg.out = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      cfg.only = argv[++i];
    } else if (a == "--help" || a == "-h") {
      std::cout << "usage: bulwark_bench [--quick] [--workers N] [--out FILE] [--only SYSTEM]\n"
                   "  --quick      smaller counts (under a minute)\n"
                   "  --workers N  threads running jobs in every system (default 2); one producer each\n"
                   "  --out FILE   where the JSON goes (default bench/results/latest.json)\n"
                   "  --only S     only S's no-failure throughput (bulwark_post, bulwark_handler,\n"
                   "               asio_thread_pool, asio_json_closure, tbb_task_group, mutex_pool,\n"
                   "               moodycamel_pool),\n"
                   "               or one section: 'latency', 'drain' (registered jobs from a backlog),\n"
                   "               'http' (wrk against the server), 'go' (the Go peer's failing jobs),\n"
                   "               'governor' (fresh jobs' latency under a failure storm, governor on/off)\n";
      return 0;
    } else {
      std::cerr << "usage: bulwark_bench [--quick] [--workers N] [--out FILE] [--only SYSTEM] [--help]\n";
      return 2;
    }
  }
  if (cfg.quick) {  // a smoke run for CI: three repetitions, smaller counts
    cfg.reps = 3;
    cfg.jobs = 50'000;
    cfg.failing_jobs = 10'000;
    cfg.floor_iterations = 20'000;
  }
  const unsigned w = cfg.workers;
  if (cfg.only == "latency") {
    std::cout << latency(4'000, 2'000, w).dump() << "\n";
    return 0;
  }
  if (cfg.only == "drain") {
    for (std::size_t n : {1'000UL, 100'000UL, 1'000'000UL}) {
      std::cout << "drain " << n << ": registered " << drain_rate(n, w, true) << " jobs/s, posts "
                << drain_rate(n, w, false) << " jobs/s\n";
    }
    return 0;
  }
  if (cfg.only == "governor") {
    std::cout << governor(cfg, w).dump(2) << "\n";
    return 0;
  }
  if (cfg.only == "http" || cfg.only == "go") {
    std::cout << (cfg.only == "http" ? http(cfg, w) : go_peer(cfg)).dump(2) << "\n";
    return 0;
  }
  if (!cfg.only.empty()) {
    const auto it = std::find_if(systems().begin(), systems().end(), [&](const System& s) { return s.name == cfg.only; });
    if (it == systems().end()) {
      std::cerr << "--only: unknown system '" << cfg.only << "'\n";
      return 2;
    }
    const Stat s = repeat(cfg.reps, [&] { return it->run(cfg.jobs * 5, Body{0, 10}, w); });
    std::cout << it->name << ": " << s.median << " jobs/s (min " << s.min << ", max " << s.max << ")\n";
    return 0;
  }
  ordered_json results;
  results["machine"] = {{"cores", std::thread::hardware_concurrency()}, {"workers", w}, {"producers", 1},
                        {"quick", cfg.quick}, {"repetitions", cfg.reps}};
  const auto log = [](const std::string& s) { std::cerr << s << std::endl; };

  // 1 and 4: throughput against failure rate, every system, interleaved;
  // at 0 % failing also the paired ratios the goals name.
  ordered_json throughput;
  ordered_json paired;
  for (int rate : {0, 1, 10, 50, 100}) {
    std::vector<std::function<double()>> runs;
    for (const System& sys : systems()) runs.push_back([&, rate] { return run_fresh(sys.name, cfg.jobs, rate, w); });
    const auto got = interleaved(cfg.reps, runs);
    std::map<std::string, const std::vector<double>*> by_name;
    for (std::size_t k = 0; k < systems().size(); ++k) {
      const System& sys = systems()[k];
      by_name[sys.name] = &got[k];
      const Stat s = stat_of(got[k]);
      throughput[std::to_string(rate)][sys.name] = s.json();
      log("throughput " + std::to_string(rate) + "% failing, " + sys.name + ": " + std::to_string(s.median) + " jobs/s");
    }
    if (rate == 0) {
      std::vector<double> best;  // per repetition, the better of oneTBB and the mutex pool
      for (int r = 0; r < cfg.reps; ++r) {
        best.push_back(std::max((*by_name["tbb_task_group"])[static_cast<std::size_t>(r)],
                                (*by_name["mutex_pool"])[static_cast<std::size_t>(r)]));
      }
      paired["post_vs_asio"] = paired_ratio(*by_name["bulwark_post"], *by_name["asio_thread_pool"]).json();
      paired["post_vs_best_of_tbb_and_mutex_pool"] = paired_ratio(*by_name["bulwark_post"], best).json();
      paired["handler_vs_asio"] = paired_ratio(*by_name["bulwark_handler"], *by_name["asio_thread_pool"]).json();
      paired["handler_vs_asio_json_closure"] =
          paired_ratio(*by_name["bulwark_handler"], *by_name["asio_json_closure"]).json();
      paired["post_vs_moodycamel_ceiling"] =
          paired_ratio(*by_name["bulwark_post"], *by_name["moodycamel_pool"]).json();
    }
  }
  results["throughput_jobs_per_s_by_failure_percent"] = throughput;

  // The same at 0 % failing with every system in this one process, one
  // after another, sharing a heap the earlier runs have aged: how much the
  // allocator's state moves the figures (not the ones the goals use).
  {
    std::vector<std::function<double()>> runs;
    for (const System& sys : systems()) runs.push_back([&] { return sys.run(cfg.jobs, Body{0, 10}, w); });
    const auto got = interleaved(cfg.reps, runs);
    std::map<std::string, const std::vector<double>*> by_name;
    ordered_json same;
    for (std::size_t k = 0; k < systems().size(); ++k) {
      by_name[systems()[k].name] = &got[k];
      same[systems()[k].name] = stat_of(got[k]).json();
    }
    same["post_vs_asio_paired"] = paired_ratio(*by_name["bulwark_post"], *by_name["asio_thread_pool"]).json();
    same["handler_vs_asio_json_closure_paired"] =
        paired_ratio(*by_name["bulwark_handler"], *by_name["asio_json_closure"]).json();
    results["throughput_same_process_no_failures"] = same;
    log("same process: " + same.dump());
  }

  // 2: the guard's happy-path cost. Whole-runtime throughput with and
  // without the frame, in adjacent pairs so that drift on a shared machine
  // hits both sides alike; the figure is the median of the pairs' ratios.
  // And the frame alone, on one thread: a guarded call against a plain one.
  std::vector<double> pair_cost;
  std::vector<double> guarded_rates, unguarded_rates;
  for (int i = 0; i < cfg.reps * 2 + 1; ++i) {
    // ABBA: which side runs first alternates, so neither always gets the
    // warmer machine.
    double g = 0, u = 0;
    if (i % 2 == 0) {
      g = run_bulwark_post(cfg.jobs, Body{0, 10}, w);
      u = run_bulwark_unguarded(cfg.jobs, Body{0, 10}, w);
    } else {
      u = run_bulwark_unguarded(cfg.jobs, Body{0, 10}, w);
      g = run_bulwark_post(cfg.jobs, Body{0, 10}, w);
    }
    guarded_rates.push_back(g);
    unguarded_rates.push_back(u);
    pair_cost.push_back((u / g - 1.0) * 100.0);
  }
  const Stat cost = stat_of(pair_cost);
  const Stat frame = repeat(cfg.reps, [&] { return frame_cost_ns(cfg.floor_iterations * 10); });
  const double job_ns = 1e9 / stat_of(guarded_rates).median * w;  // worker time per job
  results["guard"] = {{"guarded_jobs_per_s", stat_of(guarded_rates).json()},
                      {"unguarded_jobs_per_s", stat_of(unguarded_rates).json()},
                      {"cost_percent_paired", cost.json()},
                      {"cost_percent", cost.median},
                      {"frame_ns", frame.json()},
                      {"frame_share_of_job_percent", frame.median / job_ns * 100.0}};
  log("guard cost: " + std::to_string(cost.median) + " % (paired runs, min " + std::to_string(cost.min) + ", max " +
      std::to_string(cost.max) + "); the frame alone " + std::to_string(frame.median) + " ns per call");

  // 3: failure cost at depths 1, 10, 50, capture on and off, broken down.
  // A succeeding job measured the same way (one worker, one producer) says
  // how much of a failed job's cost is the queueing every job pays.
  ordered_json failure;
  const Stat job_ok = repeat(cfg.reps, [&] { return 1e9 / run_bulwark_post(cfg.failing_jobs, Body{0, 10}, 1); });
  failure["succeeding_job_ns"] = job_ok.json();
  log("succeeding job on one worker: " + std::to_string(job_ok.median) + " ns");
  for (int depth : {1, 10, 50}) {
    // Capture as jobs get it: inside a guarded frame, the walk ending there.
    const auto throw_ns = [&](bulwark::TraceCapture mode) {
      return [&, mode] {
        bulwark::set_throw_trace_capture(mode);
        const double ns = floor_ns(depth, cfg.floor_iterations);
        bulwark::set_throw_trace_capture(bulwark::TraceCapture::guarded);
        return ns;
      };
    };
    const auto throws = interleaved(cfg.reps, {throw_ns(bulwark::TraceCapture::off),
                                               throw_ns(bulwark::TraceCapture::guarded)});
    const Stat floor = stat_of(throws[0]);
    const Stat with_capture = stat_of(throws[1]);
    // The runtime sets the process-wide switch from its options when it
    // starts: capture off is a runtime built with capture_traces false.
    const auto failing_job_ns = [&](bool capture) {
      return [&, capture] {
        g_capture = capture;
        const double ns = bulwark_failure_ns(cfg.failing_jobs, depth, 1);
        g_capture = true;
        return ns;
      };
    };
    const auto jobs = interleaved(cfg.reps, {failing_job_ns(true), failing_job_ns(false)});
    const Stat job_on = stat_of(jobs[0]);
    const Stat job_off = stat_of(jobs[1]);
    bulwark::set_throw_trace_capture(bulwark::TraceCapture::guarded);
    failure[std::to_string(depth)] = {
        {"floor_ns", floor.json()},
        {"floor_plus_capture_ns", with_capture.json()},
        {"capture_ns", with_capture.median - floor.median},
        {"bulwark_job_capture_on_ns", job_on.json()},
        {"bulwark_job_capture_off_ns", job_off.json()},
        {"bookkeeping_capture_off_ns", job_off.median - floor.median},
        {"bookkeeping_capture_on_ns", job_on.median - with_capture.median},
        {"failure_over_success_capture_off_ns", job_off.median - job_ok.median},
        {"failure_over_success_capture_on_ns", job_on.median - job_ok.median}};
    log("failure depth " + std::to_string(depth) + ": floor " + std::to_string(floor.median) + " ns, capture " +
        std::to_string(with_capture.median - floor.median) + " ns, job off " + std::to_string(job_off.median) +
        " ns, job on " + std::to_string(job_on.median) + " ns");
  }
  results["failure_cost"] = failure;

  // A throw outside any job, no Runtime running, in the default capture
  // mode, against the same throw in a program without bulwark (paired).
  {
    const std::size_t iterations = cfg.floor_iterations * 2;
    const auto runs = interleaved(cfg.reps, {[&] { return floor_ns(10, iterations, false); },
                                            [&] { return baseline_throw_ns(10, iterations); }});
    if (!runs[1].empty() && runs[1].front() > 0) {
      const Stat over = paired_ratio(runs[0], runs[1]);
      results["throw_outside_jobs"] = {{"depth", 10},
                                       {"with_bulwark_ns", stat_of(runs[0]).json()},
                                       {"without_bulwark_ns", stat_of(runs[1]).json()},
                                       {"overhead_percent_paired", {{"median", (over.median - 1) * 100},
                                                                    {"min", (over.min - 1) * 100},
                                                                    {"max", (over.max - 1) * 100}}}};
      log("throw outside jobs, depth 10: " + std::to_string(stat_of(runs[0]).median) + " ns with bulwark, " +
          std::to_string(stat_of(runs[1]).median) + " ns without (" + std::to_string((over.median - 1) * 100) +
          " % over, paired)");
    }
  }

  // 5: scaling of failures.
  const auto scaling = interleaved(cfg.reps, {[&] { return run_bulwark_post(cfg.failing_jobs, Body{100, 10}, 1); },
                                              [&] { return run_bulwark_post(cfg.failing_jobs, Body{100, 10}, 2); }});
  const Stat scale_ratio = paired_ratio(scaling[1], scaling[0]);
  results["failure_scaling"] = {{"one_worker_jobs_per_s", stat_of(scaling[0]).json()},
                                {"two_workers_jobs_per_s", stat_of(scaling[1]).json()},
                                {"ratio_paired", scale_ratio.json()},
                                {"ratio", scale_ratio.median}};
  log("failure scaling 2/1 workers (paired): " + std::to_string(scale_ratio.median) + " (min " +
      std::to_string(scale_ratio.min) + ", max " + std::to_string(scale_ratio.max) + ")");

  // The seed's own pattern: Go's defer/recover pool, same failing jobs.
  results["go_peer"] = go_peer(cfg);
  log("go peer: " + results["go_peer"].dump());

  // 6: latency, enqueue to start, at a steady 2,000 jobs/s (workers idle
  // between jobs: what one job waits in a quiet pool); median of the
  // repetitions' percentiles, with min and max.
  {
    std::vector<double> p50, p99, p999;
    for (int r = 0; r < cfg.reps; ++r) {
      const ordered_json l = latency(cfg.quick ? 1'000 : 4'000, 2'000, w);
      p50.push_back(l["p50_us"]);
      p99.push_back(l["p99_us"]);
      p999.push_back(l["p999_us"]);
    }
    results["latency"] = {{"rate_per_s", 2'000},
                          {"p50_us", stat_of(p50).json()},
                          {"p99_us", stat_of(p99).json()},
                          {"p999_us", stat_of(p999).json()}};
  }
  log("latency: " + results["latency"].dump());

  // The recovery governor: fresh-job latency under a failure storm, on vs off.
  results["governor"] = governor(cfg, w);
  log("governor: " + results["governor"].dump());

  // HTTP: the submit route and a probe, one I/O thread against the default.
  results["http"] = http(cfg, w);
  log("http: " + results["http"].dump());

  // 7: supervision.
  results["supervision"] = supervision(cfg.reps);
  log("supervision: " + results["supervision"].dump());

  // Process isolation: what a round trip to a child costs.
  results["isolation"] = isolation(cfg.quick ? 500 : 2'000, cfg.reps);
  log("isolation: " + results["isolation"].dump());

  // 8: memory per queued job.
  {
    const std::size_t n = cfg.quick ? 100'000 : 1'000'000;
    results["memory"] = {{"bytes_per_queued_post", run_fresh("memory_posts", n, 0, w)},
                         {"bytes_per_queued_handler_job", run_fresh("memory_handlers", n, 0, w)},
                         {"jobs_queued", n}};
  }
  log("memory: " + results["memory"].dump());

  // Drain rate against the backlog, and the cost of an enqueue behind a
  // large one.
  results["backlog"] = backlog(cfg, w);
  log("backlog: " + results["backlog"].dump());

  // Ratios the issue asks for.
  const auto med = [&](const char* sys) { return throughput["0"][sys]["median"].get<double>(); };
  const double best_peer = std::max(med("tbb_task_group"), med("mutex_pool"));
  // Medians of per-repetition ratios (min and max in "ratios_paired"); the
  // ratio of medians, kept for comparison, in "ratios_of_medians".
  results["ratios_paired"] = paired;
  results["ratios_of_medians"] = {
      {"post_vs_asio", med("bulwark_post") / med("asio_thread_pool")},
      {"post_vs_best_of_tbb_and_mutex_pool", med("bulwark_post") / best_peer},
      {"handler_vs_asio", med("bulwark_handler") / med("asio_thread_pool")},
      {"handler_vs_asio_json_closure", med("bulwark_handler") / med("asio_json_closure")}};
  results["ratios"] = {
      {"post_vs_asio", paired["post_vs_asio"]["median"]},
      {"post_vs_best_of_tbb_and_mutex_pool", paired["post_vs_best_of_tbb_and_mutex_pool"]["median"]},
      {"handler_vs_asio", paired["handler_vs_asio"]["median"]},
      {"handler_vs_asio_json_closure", paired["handler_vs_asio_json_closure"]["median"]},
      {"post_vs_moodycamel_ceiling", paired["post_vs_moodycamel_ceiling"]["median"]},
      {"guard_cost_percent", results["guard"]["cost_percent"]},
      {"failure_scaling_2_over_1", results["failure_scaling"]["ratio"]},
      {"isolated_round_trip_us", results["isolation"]["round_trip_cost_us"]},
  };
  std::ofstream(cfg.out) << results.dump(2) << "\n";
  // Plain columns for bench/plot.sh (gnuplot reads no JSON).
  const std::string base = cfg.out.substr(0, cfg.out.rfind('.'));
  {
    std::ofstream dat(base + ".throughput.dat");
    dat << "failure_percent";
    for (const System& sys : systems()) dat << ' ' << sys.name;
    dat << '\n';
    for (int rate : {0, 1, 10, 50, 100}) {
      dat << rate;
      for (const System& sys : systems()) {
        dat << ' ' << throughput[std::to_string(rate)][sys.name]["median"].get<double>();
      }
      dat << '\n';
    }
  }
  {
    std::ofstream dat(base + ".failure.dat");
    dat << "# depth floor_ns capture_ns bookkeeping_ns(capture on)\n";
    for (int depth : {1, 10, 50}) {
      const auto& f = failure[std::to_string(depth)];
      dat << depth << ' ' << f["floor_ns"]["median"].get<double>() << ' ' << f["capture_ns"].get<double>() << ' '
          << f["bookkeeping_capture_on_ns"].get<double>() << '\n';
    }
  }
  if (results["go_peer"].contains("10")) {
    std::ofstream dat(base + ".go.dat");
    dat << "depth bulwark_capture go_no_stack go_runtime_Callers go_debug_Stack\n";
    for (int depth : {1, 10, 50}) {
      const auto& d = results["go_peer"][std::to_string(depth)];
      dat << depth;
      for (const char* sys : {"bulwark", "go_none", "go_callers", "go_debug"}) {
        dat << ' ' << d[sys]["us_per_job_one_worker"].get<double>();
      }
      dat << '\n';
    }
  }
  if (results["http"].contains("post_jobs")) {
    std::ofstream dat(base + ".http.dat");
    dat << "route io_threads_1 io_threads_default\n";
    for (const char* route : {"post_jobs", "get_healthz"}) {
      if (!results["http"].contains(route)) continue;
      const auto& r = results["http"][route];
      dat << route << ' ' << r["io_threads_1"]["requests_per_s"]["median"].get<double>() << ' '
          << r["io_threads_default"]["requests_per_s"]["median"].get<double>() << '\n';
    }
  }
  std::cout << results["ratios"].dump(2) << "\n";
  return 0;
}
