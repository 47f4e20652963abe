#include "cli/run_command.hpp"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <blockingconcurrentqueue.h>

#include "builtin_workers.hpp"
#include "cli/options.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark::cli {
namespace {

using nlohmann::ordered_json;

constexpr std::size_t kMaxLineBytes = 1 << 20;

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted.store(true); }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read returns so the reader can stop
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

// One line of output: a finished job, or a line that never became one.
struct Output {
  std::uint64_t line = 0;
  std::optional<JobRecord> record;
  std::string rejection;
};

// Renders and writes output lines on its own thread (symbolizing traces is
// slow the first time and must not hold up the workers), keeps the counts
// for the summary and draws the progress line.
class Writer {
 public:
  Writer(std::ostream& out, bool progress) : out_(out), progress_(progress) {
    thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
  }

  void push(Output o) { queue_.enqueue(std::move(o)); }

  // Writes what is queued, then stops. Returns false if the output failed.
  bool close() {
    thread_.request_stop();
    thread_.join();
    out_.flush();
    return static_cast<bool>(out_);
  }

  std::uint64_t written() const { return written_.load(); }

  struct Counts {
    std::uint64_t succeeded = 0, failed = 0, cancelled = 0, rejected = 0, retries = 0;
    std::map<std::string, std::uint64_t> failures;  // by error type (or kind)
  };
  const Counts& counts() const { return counts_; }  // after close()

 private:
  void write(const Output& o) {
    ordered_json line = {{"line", o.line}};
    if (o.record) {
      const JobRecord& r = *o.record;
      ordered_json rendered = to_json(r, true, false);
      for (auto& [key, value] : rendered.items()) line[key] = std::move(value);
      switch (r.state) {
        case JobState::succeeded: ++counts_.succeeded; break;
        case JobState::cancelled: ++counts_.cancelled; break;
        default: ++counts_.failed; break;
      }
      if (r.attempts > 1) counts_.retries += static_cast<std::uint64_t>(r.attempts - 1);
      if (r.state == JobState::failed && r.error) {
        ++counts_.failures[r.error->kind == FailureKind::exception ? r.error->type
                                                                     : std::string(to_string(r.error->kind))];
      }
    } else {
      ++counts_.rejected;
      line["state"] = "rejected";
      line["error"] = {{"kind", "invalid"}, {"message", o.rejection}};
    }
    out_ << line.dump(-1, ' ', false, ordered_json::error_handler_t::replace) << '\n';
    written_.fetch_add(1);
  }

  void draw_progress(bool final) {
    std::fprintf(stderr, "\r\033[Kbulwark run: %llu done (%llu ok, %llu failed, %llu rejected)%s",
                 static_cast<unsigned long long>(written_.load()),
                 static_cast<unsigned long long>(counts_.succeeded),
                 static_cast<unsigned long long>(counts_.failed + counts_.cancelled),
                 static_cast<unsigned long long>(counts_.rejected), final ? "\n" : "");
  }

  void run(std::stop_token stop) {
    Output o;
    auto last_draw = std::chrono::steady_clock::now();
    while (!stop.stop_requested()) {
      if (queue_.wait_dequeue_timed(o, std::chrono::milliseconds(100))) write(o);
      if (progress_ && std::chrono::steady_clock::now() - last_draw > std::chrono::milliseconds(200)) {
        out_.flush();
        draw_progress(false);
        last_draw = std::chrono::steady_clock::now();
      }
    }
    while (queue_.try_dequeue(o)) write(o);
    if (progress_) draw_progress(true);
  }

  std::ostream& out_;
  const bool progress_;
  moodycamel::BlockingConcurrentQueue<Output> queue_;
  std::atomic<std::uint64_t> written_{0};
  Counts counts_;  // owned by the writer thread until close()
  std::jthread thread_;
};

// Jobs can finish before submit() returns their id to the reader, so the
// line of a job is matched with its record whichever arrives first.
class LineBook {
 public:
  explicit LineBook(Writer& writer) : writer_(writer) {}

  void submitted(const JobId& id, std::uint64_t line) {
    std::unique_lock lock(mutex_);
    if (auto it = early_.find(id); it != early_.end()) {
      Output o{line, std::move(it->second), {}};
      early_.erase(it);
      lock.unlock();
      writer_.push(std::move(o));
      return;
    }
    lines_.emplace(id, line);
  }

  void finished(const JobRecord& record) {
    std::unique_lock lock(mutex_);
    auto it = lines_.find(record.id);
    if (it == lines_.end()) {
      early_.emplace(record.id, record);
      return;
    }
    Output o{it->second, record, {}};
    lines_.erase(it);
    lock.unlock();
    writer_.push(std::move(o));
  }

 private:
  Writer& writer_;
  std::mutex mutex_;
  std::unordered_map<JobId, std::uint64_t> lines_;  // guarded by mutex_
  std::unordered_map<JobId, JobRecord> early_;      // guarded by mutex_
};

std::string parse_error_text(const nlohmann::json::parse_error& e) {
  std::string what = e.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." -> "parse error at ..."
  if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
  return what;
}

// Reads the next line into `line`; lines longer than kMaxLineBytes are
// skipped up to their end and reported through `too_long`.
bool next_line(std::istream& in, std::vector<char>& buffer, std::string& line, bool& too_long) {
  too_long = false;
  in.getline(buffer.data(), static_cast<std::streamsize>(buffer.size()));
  const auto n = in.gcount();
  if (in.bad()) return false;
  if (in.fail() && !in.eof()) {  // the buffer filled before the newline
    in.clear();
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    too_long = true;
    return true;
  }
  if (n == 0 && in.eof()) return false;
  line.assign(buffer.data(), static_cast<std::size_t>(in.eof() ? n : n - 1));
  if (in.eof()) in.clear(std::ios::eofbit);
  return true;
}

}  // namespace

int run_command(const RunArgs& args) {
  std::optional<RuntimeOptions> loaded = load_options(args.config, args.workers);
  if (!loaded) return 2;
  RuntimeOptions options = std::move(*loaded);

  std::ifstream input_file;
  std::istream* in = &std::cin;
  if (args.input != "-") {
    input_file.open(args.input);
    if (!input_file) {
      std::cerr << "bulwark: cannot open input '" << args.input << "'\n";
      return 2;
    }
    in = &input_file;
  }
  std::ofstream output_file;
  std::ostream* out = &std::cout;
  if (args.output != "-") {
    output_file.open(args.output, std::ios::trunc);
    if (!output_file) {
      std::cerr << "bulwark: cannot open output '" << args.output << "'\n";
      return 2;
    }
    out = &output_file;
  }
  std::ios::sync_with_stdio(false);

  Writer writer(*out, args.progress && ::isatty(STDERR_FILENO) == 1);
  LineBook book(writer);
  options.on_finished = [&book](const JobRecord& r) { book.finished(r); };

  Registry registry;
  workers::register_builtin(registry);
  std::unique_ptr<Runtime> runtime;
  try {
    runtime = std::make_unique<Runtime>(std::move(registry), options);
  } catch (const ConfigError& e) {
    writer.close();
    std::cerr << "bulwark: configuration error: " << e.what() << "\n";
    return 2;
  }
  install_signal_handlers();

  const auto start = std::chrono::steady_clock::now();
  std::vector<char> buffer(kMaxLineBytes + 1);
  std::string text;
  bool too_long = false;
  std::uint64_t line_no = 0;
  std::uint64_t lines = 0;
  const auto reject = [&](std::string message) {
    writer.push(Output{line_no, std::nullopt, "line " + std::to_string(line_no) + ": " + std::move(message)});
  };
  while (!g_interrupted.load() && next_line(*in, buffer, text, too_long)) {
    ++line_no;
    if (too_long) {
      ++lines;
      reject("longer than " + std::to_string(kMaxLineBytes) + " bytes");
      continue;
    }
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines are not jobs
    ++lines;
    JobSpec spec;
    try {
      spec = JobSpec::from_json(nlohmann::json::parse(text));
    } catch (const nlohmann::json::parse_error& e) {
      reject("not valid JSON: " + parse_error_text(e));
      continue;
    } catch (const SpecError& e) {
      reject(e.what());
      continue;
    }
    for (;;) {
      Submitted s = runtime->submit(spec);
      if (s) {
        book.submitted(s.id, line_no);
        break;
      }
      if (s.error->code != SubmitError::Code::queue_full || g_interrupted.load()) {
        reject(s.error->message);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // backpressure: let the workers catch up
    }
  }
  const bool read_error = in->bad();
  while (!g_interrupted.load() && !runtime->wait_idle(std::chrono::milliseconds(100))) {
  }
  if (g_interrupted.load()) std::cerr << "\nbulwark: interrupted, shutting down\n";
  runtime->shutdown();
  const RuntimeStats stats = runtime->stats();
  runtime.reset();
  const bool output_ok = writer.close();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const Writer::Counts& c = writer.counts();
  std::fprintf(stderr,
               "bulwark run: %llu lines in %.2f s: %llu succeeded, %llu failed, %llu rejected, %llu cancelled; "
               "%llu retries\n",
               static_cast<unsigned long long>(lines), secs, static_cast<unsigned long long>(c.succeeded),
               static_cast<unsigned long long>(c.failed), static_cast<unsigned long long>(c.rejected),
               static_cast<unsigned long long>(c.cancelled), static_cast<unsigned long long>(c.retries));
  for (const auto& [type, n] : c.failures) {
    std::fprintf(stderr, "  failed with %s: %llu\n", type.c_str(), static_cast<unsigned long long>(n));
  }
  if (stats.hard_timeouts + stats.soft_timeouts + stats.stuck_reports + stats.replacements + stats.breaker_opened >
      0) {
    std::fprintf(stderr,
                 "  supervisor: %llu hard timeouts, %llu soft timeouts, %llu stuck reports, %llu worker "
                 "replacements, circuit breakers opened %llu times (%llu job starts put off)\n",
                 static_cast<unsigned long long>(stats.hard_timeouts),
                 static_cast<unsigned long long>(stats.soft_timeouts),
                 static_cast<unsigned long long>(stats.stuck_reports),
                 static_cast<unsigned long long>(stats.replacements),
                 static_cast<unsigned long long>(stats.breaker_opened),
                 static_cast<unsigned long long>(stats.breaker_deferred));
  }
  if (read_error) {
    std::cerr << "bulwark: error reading input '" << args.input << "'\n";
    return 2;
  }
  if (!output_ok) {
    std::cerr << "bulwark: error writing output '" << args.output << "'\n";
    return 2;
  }
  return c.failed + c.rejected + c.cancelled == 0 ? 0 : 1;
}

}  // namespace bulwark::cli
