// bulwark_redis_bench: bulwark's side of `make bench-redis` (the driver,
// bench/redis/compare.py, runs it next to BullMQ and Celery on the same
// redis-server and prints the table).
//
// One run: --processes worker processes (forked copies of this binary, each
// with --workers threads) and this process, a producer that runs nothing
// (redis.consume false), share one queue (queue.backend "redis", a fresh
// namespace). Once every worker process is up, this process submits --jobs
// no-op jobs, one submit() per job as a client would ("single") or with
// submit_many in chunks of 1,000 ("bulk"); the clock runs from the first
// submit until Redis holds the end of the last job. With --fail-every K, every K-th job throws on its first
// attempt and succeeds on its retry (backoff 1 ms). Prints one JSON line:
// jobs/s end to end, submit round-trip percentiles and the Redis commands
// per job as Redis counted them (INFO commandstats, scripts' own calls
// included, minus this program's polling).
//
// With --mode flow the jobs are the children of one flow (a parent of the
// same type, submitted with them in one submit()); the clock stops when the
// parent has succeeded.
//
// With --queues a,b,c the jobs go to those named queues in turn and every
// process runs all of them; with --cluster h:p,h:p,... (every master) the
// Redis is a Cluster, so each queue lives on the master of its hash slot,
// and the commands are counted on every master.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bulwark/runtime.hpp"
#include "redis/connection.hpp"
#include "redis/keys.hpp"
#include "redis/parts.hpp"
#include "redis/redis_backend.hpp"

namespace {

namespace redis = bulwark::detail::redis;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string url = "redis://127.0.0.1:6379/0";
  std::string ns;
  std::string role = "main";
  std::string mode = "single";
  long jobs = 20'000;
  unsigned processes = 1;
  unsigned workers = 2;
  unsigned prefetch = 0;  // 0: the default (= workers)
  long fail_every = 0;    // 0: none fail
  std::string ca_file;    // redis.tls.ca_file (with rediss://)
  unsigned min_replicas_ack = 0;
  std::string cluster;  // "host:port,..." of every master; empty: no Cluster
  std::string queues;   // "a,b,c": jobs go to these named queues in turn; empty: default
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at < list.size();) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    if (comma > at) out.push_back(list.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

bulwark::Registry registry() {
  bulwark::Registry r;
  r.add("noop", [](bulwark::JobContext& ctx, const nlohmann::json& payload) -> nlohmann::json {
    if (ctx.attempt() == 1 && payload.is_object() && payload.value("fail", false)) {
      throw std::runtime_error("fails once");
    }
    return nullptr;
  });
  return r;
}

bulwark::RuntimeOptions options(const Args& a) {
  bulwark::RuntimeOptions o;
  o.workers = a.workers;
  o.backend = bulwark::QueueBackend::redis;
  o.redis.url = a.url;
  o.redis.ns = a.ns;
  if (a.prefetch > 0) o.redis.prefetch = a.prefetch;
  o.redis.consume = a.role == "helper";
  o.redis.tls.ca_file = a.ca_file;
  o.redis.min_replicas_ack = a.min_replicas_ack;
  o.redis.cluster.addresses = split(a.cluster);
  for (const std::string& q : split(a.queues)) o.queues[q] = bulwark::QueueOptions{};
  o.queue_capacity = static_cast<std::size_t>(a.jobs) + 1000;
  o.limits.flow_children = std::max<std::size_t>(o.limits.flow_children, static_cast<std::size_t>(a.jobs));
  o.retention_max_finished = static_cast<std::size_t>(a.jobs) + 1000;
  o.retry.max_attempts = 2;
  o.retry.initial = std::chrono::milliseconds(1);
  o.retry.max = std::chrono::milliseconds(1);
  o.retry.jitter = 0;
  o.capture_traces = true;  // as users run it: every failure keeps its throw-site trace
  o.logging.level = "off";
  return o;
}

// Total calls of every command Redis has run (INFO commandstats).
long long commands_processed(redis::Connection& c) {
  const std::string info = c.command({"INFO", "commandstats"}).str;
  long long total = 0;
  for (std::size_t at = info.find("calls="); at != std::string::npos; at = info.find("calls=", at + 6)) {
    total += std::atoll(info.c_str() + at + 6);
  }
  return total;
}

int helper(const Args& a) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  bulwark::Runtime runtime(registry(), options(a));
  int sig = 0;
  sigwait(&set, &sig);
  runtime.shutdown(std::chrono::seconds(5));
  return 0;
}

pid_t spawn_helper(const char* self, const Args& a) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const std::string workers = std::to_string(a.workers), prefetch = std::to_string(a.prefetch),
                    jobs = std::to_string(a.jobs), acks = std::to_string(a.min_replicas_ack);
  ::execl("/proc/self/exe", self, "--role", "helper", "--url", a.url.c_str(), "--ns", a.ns.c_str(), "--workers",
          workers.c_str(), "--prefetch", prefetch.c_str(), "--jobs", jobs.c_str(), "--ca-file", a.ca_file.c_str(),
          "--min-replicas-ack", acks.c_str(), "--cluster", a.cluster.c_str(), "--queues", a.queues.c_str(),
          static_cast<char*>(nullptr));
  ::_exit(127);
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

int run_main(const char* self, const Args& a) {
  redis::ConnectOptions connect = redis::connect_options(options(a).redis);  // TLS and login as the runtime's
  connect.connect_timeout = std::chrono::seconds(2);
  connect.command_timeout = std::chrono::seconds(10);
  redis::Parts parts(connect, a.ns);
  // Where commands are counted: the one Redis, or every master.
  std::vector<std::unique_ptr<redis::Connection>> nodes;
  if (a.cluster.empty()) {
    nodes.push_back(std::make_unique<redis::Connection>(connect));
  } else {
    for (const std::string& node : split(a.cluster)) {
      redis::ConnectOptions o = connect;
      o.cluster.reset();
      o.address.host = node.substr(0, node.rfind(':'));
      o.address.port = std::stoi(node.substr(node.rfind(':') + 1));
      nodes.push_back(std::make_unique<redis::Connection>(o));
    }
  }
  const auto commands_now = [&] {
    long long n = 0;
    for (auto& c : nodes) n += commands_processed(*c);
    return n;
  };
  std::vector<std::string> queues = split(a.queues);
  if (queues.empty()) queues.push_back(std::string());
  std::vector<pid_t> helpers;
  for (unsigned i = 0; i < a.processes; ++i) helpers.push_back(spawn_helper(self, a));
  bulwark::Runtime runtime(registry(), options(a));
  // Every process registered (each heartbeats at start) before the clock runs.
  while (parts.pool("").command({"ZCARD", parts.base().processes}).as_integer() <
         static_cast<long long>(a.processes) + 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Ended and failed jobs in every queue.
  const auto ended = [&] {
    std::pair<long long, long long> n{0, 0};
    for (const std::string& q : queues) {
      const redis::Keys& k = parts.keys(q);
      const auto got = parts.pool(q).with(
          [&](redis::Connection& c) { return c.pipeline({{"ZCARD", k.done}, {"ZCARD", k.dead}}); });
      n.first += got[0].as_integer() + got[1].as_integer();
      n.second += got[1].as_integer();
    }
    return n;
  };

  const long long commands_before = commands_now();
  long long polls = 0;
  std::vector<double> submit_us;
  submit_us.reserve(static_cast<std::size_t>(a.jobs));
  const auto start = Clock::now();
  const auto spec_of = [&](long i) {
    bulwark::JobSpec spec{.type = "noop", .queue = queues[static_cast<std::size_t>(i) % queues.size()]};
    if (a.fail_every > 0 && i % a.fail_every == 0) spec.payload = {{"fail", true}};
    return spec;
  };
  if (a.mode == "flow") {
    bulwark::JobSpec parent{.type = "noop", .id = "flow-root", .queue = queues[0]};
    for (long i = 0; i < a.jobs; ++i) parent.children.push_back(spec_of(i));
    const bulwark::Submitted s = runtime.submit(std::move(parent));
    if (!s) throw std::runtime_error("submit refused: " + s.error->message);
  } else if (a.mode == "bulk") {
    for (long i = 0; i < a.jobs; i += 1000) {
      std::vector<bulwark::JobSpec> chunk;
      for (long j = i; j < std::min(a.jobs, i + 1000); ++j) chunk.push_back(spec_of(j));
      for (const bulwark::Submitted& s : runtime.submit_many(std::move(chunk))) {
        if (!s) throw std::runtime_error("submit refused: " + s.error->message);
      }
    }
  } else {
    for (long i = 0; i < a.jobs; ++i) {
      const auto t = Clock::now();
      const bulwark::Submitted s = runtime.submit(spec_of(i));
      submit_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
      if (!s) throw std::runtime_error("submit refused: " + s.error->message);
    }
  }
  const double submit_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const redis::Keys& root_keys = parts.keys(queues[0]);
  for (;;) {
    if (a.mode == "flow") {
      polls += 1;
      const redis::Value state = parts.pool(queues[0]).command({"HGET", root_keys.job("flow-root"), "state"});
      if (state.str == "succeeded" || state.str == "failed") break;
    } else {
      polls += 2 * static_cast<long long>(queues.size());
      if (ended().first >= a.jobs) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const long long commands = commands_now() - commands_before - polls - static_cast<long long>(nodes.size());
  const long long failed = ended().second;

  for (pid_t pid : helpers) ::kill(pid, SIGTERM);
  for (pid_t pid : helpers) ::waitpid(pid, nullptr, 0);
  runtime.shutdown(std::chrono::seconds(5));

  nlohmann::ordered_json out = {{"system", "bulwark"},
                                {"mode", a.mode},
                                {"processes", a.processes},
                                {"workers_per_process", a.workers},
                                {"queues", split(a.queues).size()},
                                {"cluster_masters", a.cluster.empty() ? 0 : nodes.size()},
                                {"jobs", a.jobs},
                                {"fail_every", a.fail_every},
                                {"seconds", seconds},
                                {"jobs_per_s", static_cast<double>(a.jobs) / seconds},
                                {"submit_seconds", submit_seconds},
                                {"submit_p50_us", submit_us.empty() ? nlohmann::json() : nlohmann::json(percentile(submit_us, 0.50))},
                                {"submit_p99_us", submit_us.empty() ? nlohmann::json() : nlohmann::json(percentile(submit_us, 0.99))},
                                {"redis_commands_per_job", static_cast<double>(commands) / static_cast<double>(a.jobs)},
                                {"dead", failed}};
  std::cout << out.dump() << std::endl;
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"bulwark's side of make bench-redis: N jobs through a queue shared on Redis"};
  app.add_option("--url", a.url, "Redis URL");
  app.add_option("--ns", a.ns, "namespace (default: a fresh one)");
  app.add_option("--role", a.role, "main, or helper (a process that only runs jobs)");
  app.add_option("--mode", a.mode,
                 "single (one submit per job), bulk (submit_many, 1,000 a call) or flow (the jobs are one flow's children)")
      ->check(CLI::IsMember({"single", "bulk", "flow"}));
  app.add_option("--jobs", a.jobs, "jobs to submit")->check(CLI::Range(1L, 100'000'000L));
  app.add_option("--processes", a.processes, "worker processes sharing the queue")->check(CLI::Range(1, 64));
  app.add_option("--workers", a.workers, "workers per process")->check(CLI::Range(1, 1024));
  app.add_option("--prefetch", a.prefetch, "redis.prefetch (0: the default, = workers)");
  app.add_option("--fail-every", a.fail_every, "every K-th job fails once (0: none)");
  app.add_option("--ca-file", a.ca_file, "redis.tls.ca_file, for a rediss:// URL");
  app.add_option("--min-replicas-ack", a.min_replicas_ack, "redis.min_replicas_ack (WAIT after submits and ends)");
  app.add_option("--cluster", a.cluster, "host:port of every master of a Redis Cluster (comma-separated)");
  app.add_option("--queues", a.queues, "named queues the jobs go to in turn (comma-separated)");
  CLI11_PARSE(app, argc, argv);
  if (a.ns.empty()) a.ns = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(Clock::now().time_since_epoch().count());
  try {
    return a.role == "helper" ? helper(a) : run_main(argv[0], a);
  } catch (const std::exception& e) {
    std::cerr << "bulwark_redis_bench: " << e.what() << "\n";
    return 2;
  }
}
