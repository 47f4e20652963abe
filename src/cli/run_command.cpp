#include "cli/run_command.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <climits>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <blockingconcurrentqueue.h>

#include "support/text.hpp"
#include "builtin_workers.hpp"
#include "bulwark/json_input.hpp"
#include "bulwark/runtime.hpp"

namespace bulwark::cli {
namespace {

using nlohmann::ordered_json;

std::atomic<int> g_interrupts{0};
extern "C" void on_interrupt(int) { g_interrupts.fetch_add(1); }
bool interrupted() { return g_interrupts.load() > 0; }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked poll returns so the reader can stop
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

// Reads lines from a descriptor, waiting in poll() with a short timeout so
// that SIGINT/SIGTERM stop it even while the writer of a pipe is idle (a
// blocked std::istream read would only return when the writer closed).
class LineReader {
 public:
  LineReader(int fd, std::size_t max_line) : fd_(fd), max_line_(max_line) {}

  enum class Result { line, too_long, end, error, interrupted };

  Result next(std::string& line) {
    line.clear();
    bool skipping = false;  // past max_line: drop bytes up to the newline
    for (;;) {
      if (const auto nl = buffer_.find('\n', scanned_); nl != std::string::npos) {
        const std::size_t n = nl - start_of_line_;
        if (!skipping && n <= max_line_) line.assign(buffer_, start_of_line_, n);
        consume(nl + 1);
        return skipping || n > max_line_ ? Result::too_long : Result::line;
      }
      scanned_ = buffer_.size();
      if (buffer_.size() - start_of_line_ > max_line_) {  // no newline within the limit
        skipping = true;
        consume(buffer_.size());
      }
      if (eof_) {
        const std::size_t n = buffer_.size() - start_of_line_;
        if (n == 0 && !skipping) return Result::end;
        if (!skipping) line.assign(buffer_, start_of_line_, n);
        consume(buffer_.size());
        return skipping ? Result::too_long : Result::line;
      }
      if (interrupted()) return Result::interrupted;
      pollfd p{fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, 100);
      if (ready < 0 && errno != EINTR) return Result::error;
      if (ready <= 0) continue;
      char chunk[64 << 10];
      const ssize_t got = ::read(fd_, chunk, sizeof chunk);
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return Result::error;
      }
      if (got == 0) eof_ = true;
      compact();
      buffer_.append(chunk, static_cast<std::size_t>(got));
    }
  }

 private:
  // Marks bytes before `upto` as used; they are dropped at the next read,
  // not per line (erasing per line would move the buffer once per line).
  void consume(std::size_t upto) {
    start_of_line_ = upto;
    scanned_ = upto;
  }

  void compact() {
    buffer_.erase(0, start_of_line_);
    scanned_ -= start_of_line_;
    start_of_line_ = 0;
  }

  const int fd_;
  const std::size_t max_line_;
  std::string buffer_;
  std::size_t start_of_line_ = 0;
  std::size_t scanned_ = 0;
  bool eof_ = false;
};

// One line of output: a finished job, or a line that never became one.
struct Output {
  std::uint64_t line = 0;
  std::optional<JobRecord> record;
  std::string rejection;
  JobId duplicate_of{};  // a unique job in its window answered the line
};

// Renders and writes output lines on its own thread (symbolizing traces is
// slow the first time and must not hold up the workers), keeps the counts
// for the summary and draws the progress line. Writes go to a descriptor
// through poll(), so a reader that stopped reading cannot hold the process
// forever once it was interrupted twice.
class Writer {
 public:
  Writer(int fd, bool progress) : fd_(fd), progress_(progress) {
    struct stat st {};
    stream_like_ = ::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    thread_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
  }

  void push(Output o) { queue_.enqueue(std::move(o)); }

  // Writes what is queued, then stops. Returns false if the output failed.
  bool close() {
    thread_.request_stop();
    thread_.join();
    return ok_;
  }

  std::uint64_t written() const { return written_.load(); }

  struct Counts {
    std::uint64_t succeeded = 0, failed = 0, cancelled = 0, rejected = 0, retries = 0, duplicates = 0;
    std::map<std::string, std::uint64_t> failures;  // by error type (or kind)
  };
  const Counts& counts() const { return counts_; }  // after close()

 private:
  void render(const Output& o) {
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
    } else if (!o.duplicate_of.empty()) {
      ++counts_.duplicates;
      line["id"] = o.duplicate_of;
      line["state"] = "duplicate";
    } else {
      ++counts_.rejected;
      line["state"] = "rejected";
      line["error"] = {{"kind", "invalid"}, {"message", o.rejection}};
    }
    pending_ += detail::dump_line(line);
    pending_ += '\n';
    ++pending_lines_;
  }

  // Writes pending_ out. Gives up (and fails) after a second interrupt while
  // the reader on the other side takes nothing. A pipe or socket is written
  // only when poll() says it has room, at most PIPE_BUF at a time, so the
  // write itself never blocks and the interrupt is seen.
  void flush() {
    std::size_t done = 0;
    while (ok_ && done < pending_.size()) {
      std::size_t chunk = pending_.size() - done;
      if (stream_like_) {
        pollfd p{fd_, POLLOUT, 0};
        if (::poll(&p, 1, 100) <= 0) {
          if (g_interrupts.load() > 1) ok_ = false;
          continue;
        }
        chunk = std::min<std::size_t>(chunk, PIPE_BUF);
      }
      const ssize_t n = ::write(fd_, pending_.data() + done, chunk);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno != EINTR && errno != EAGAIN) {
        ok_ = false;
        break;
      }
      if (g_interrupts.load() > 1) {
        ok_ = false;
        break;
      }
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 100);
    }
    pending_.clear();
    written_.fetch_add(pending_lines_);
    pending_lines_ = 0;
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
    constexpr std::size_t kBatchBytes = 64 << 10;
    while (!stop.stop_requested()) {
      if (queue_.wait_dequeue_timed(o, std::chrono::milliseconds(100))) {
        render(o);
        while (pending_.size() < kBatchBytes && queue_.try_dequeue(o)) render(o);
      }
      if (!pending_.empty()) flush();
      if (progress_ && std::chrono::steady_clock::now() - last_draw > std::chrono::milliseconds(200)) {
        draw_progress(false);
        last_draw = std::chrono::steady_clock::now();
      }
    }
    while (queue_.try_dequeue(o)) {
      render(o);
      if (pending_.size() >= kBatchBytes) flush();
    }
    flush();
    if (progress_) draw_progress(true);
  }

  const int fd_;
  const bool progress_;
  bool stream_like_ = false;  // a pipe or socket: a write could block
  moodycamel::BlockingConcurrentQueue<Output> queue_;
  std::atomic<std::uint64_t> written_{0};
  // Owned by the writer thread until close():
  Counts counts_;
  std::string pending_;
  std::uint64_t pending_lines_ = 0;
  bool ok_ = true;
  std::jthread thread_;
};

// Matches each job's end with the line it came from. In memory, a job can
// finish before submit() returns its id to the reader, so whichever of the
// two arrives first waits for the other. With a shared queue the reader
// names every job before submitting it (expect), ends of other jobs in the
// queue are not ours, and only expected ids are read back from Redis.
class LineBook {
 public:
  LineBook(Writer& writer, bool shared) : writer_(writer), shared_(shared) {}

  void expect(const JobId& id, std::uint64_t line) {
    std::lock_guard lock(mutex_);
    lines_.emplace(id, line);
  }

  // A line whose submit was refused after expect().
  void withdraw(const JobId& id) {
    std::lock_guard lock(mutex_);
    lines_.erase(id);
  }

  bool expects(const JobId& id) {
    std::lock_guard lock(mutex_);
    return lines_.count(id) > 0;
  }

  void submitted(const JobId& id, std::uint64_t line) {
    if (shared_) return;  // expected already
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
      if (!shared_) early_.emplace(record.id, record);
      return;
    }
    Output o{it->second, record, {}};
    lines_.erase(it);
    lock.unlock();
    writer_.push(std::move(o));
  }

  // Lines submitted whose end has not arrived yet.
  std::size_t outstanding() {
    std::lock_guard lock(mutex_);
    return lines_.size();
  }

 private:
  Writer& writer_;
  const bool shared_;
  std::mutex mutex_;
  std::unordered_map<JobId, std::uint64_t> lines_;  // guarded by mutex_
  std::unordered_map<JobId, JobRecord> early_;      // guarded by mutex_; memory only
};

// Closes a descriptor we opened (not standard input or output).
struct OwnedFd {
  int fd = -1;
  ~OwnedFd() {
    if (fd > 2) ::close(fd);
  }
};

}  // namespace

int run_command(const RunArgs& args) {
  std::optional<LoadedConfig> loaded = load(args.config);
  if (!loaded) return 2;
  RuntimeOptions options = std::move(loaded->options);

  OwnedFd input{STDIN_FILENO};
  if (args.input != "-") {
    input.fd = ::open(args.input.c_str(), O_RDONLY | O_CLOEXEC);
    if (input.fd < 0) {
      std::cerr << "bulwark: cannot open input '" << args.input << "': " << std::strerror(errno) << "\n";
      return 2;
    }
  }
  OwnedFd output{STDOUT_FILENO};
  if (args.output != "-") {
    output.fd = ::open(args.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (output.fd < 0) {
      std::cerr << "bulwark: cannot open output '" << args.output << "': " << std::strerror(errno) << "\n";
      return 2;
    }
  }

  Writer writer(output.fd, args.progress && ::isatty(STDERR_FILENO) == 1);
  const bool shared = options.backend == QueueBackend::redis;
  LineBook book(writer, shared);
  if (shared) {
    // Other processes on the queue run some of our lines: their ends come
    // from Redis.
    options.on_finished_anywhere = [&book](const JobRecord& r) { book.finished(r); };
    options.finished_filter = [&book](const JobId& id) { return book.expects(id); };
  } else {
    options.on_finished = [&book](const JobRecord& r) { book.finished(r); };
  }
  // Lines without an id get one naming this run and the line, so the end
  // can be recognised whichever process writes it.
  const std::string run_tag = "run-" + detail::random_tag(6) + "-";

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
  const InputLimits& limits = options.limits;
  LineReader reader(input.fd, limits.line_bytes);
  std::string text;
  std::uint64_t line_no = 0;
  std::uint64_t lines = 0;
  const auto reject = [&](std::string message) {
    writer.push(Output{line_no, std::nullopt, "line " + std::to_string(line_no) + ": " + std::move(message)});
  };
  // Lines taken but not yet written out: jobs in flight plus rendered
  // results waiting for the output. Reading pauses at limits.pending_output,
  // so a slow or stalled reader of the output bounds our memory.
  const auto wait_for_output_room = [&] {
    while (lines - writer.written() >= limits.pending_output && !interrupted()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  LineReader::Result got = LineReader::Result::end;
  while (!interrupted()) {
    wait_for_output_room();
    got = reader.next(text);
    if (got != LineReader::Result::line && got != LineReader::Result::too_long) break;
    ++line_no;
    if (got == LineReader::Result::too_long) {
      ++lines;
      reject("longer than " + std::to_string(limits.line_bytes) + " bytes (limits.line_bytes)");
      continue;
    }
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines are not jobs
    ++lines;
    JobSpec spec;
    try {
      spec = JobSpec::from_json(parse_json(text, limits.json_depth), limits.id_length);
    } catch (const InputError& e) {
      reject(std::string("not valid JSON: ") + e.what());
      continue;
    } catch (const SpecError& e) {
      reject(e.what());
      continue;
    }
    if (shared) {
      if (spec.id.empty()) spec.id = run_tag + std::to_string(line_no);
      book.expect(spec.id, line_no);
    }
    bool warned = false;
    for (;;) {
      Submitted s = runtime->submit(spec);
      if (s && s.duplicate) {  // no job of this line: the unique job's id says which one stands for it
        if (shared) book.withdraw(spec.id);
        writer.push(Output{line_no, std::nullopt, {}, s.id});
        break;
      }
      if (s) {
        book.submitted(s.id, line_no);
        break;
      }
      const SubmitError::Code code = s.error->code;
      const bool wait = code == SubmitError::Code::queue_full || code == SubmitError::Code::backend_unavailable ||
                        code == SubmitError::Code::backend_full;
      if (!wait || interrupted()) {
        if (shared) book.withdraw(spec.id);
        reject(s.error->message);
        break;
      }
      if (code != SubmitError::Code::queue_full && !warned) {
        std::cerr << "bulwark: " << s.error->message << "; waiting for it (interrupt to stop)\n";
        warned = true;
      }
      // Backpressure: let the workers catch up, or Redis come back.
      std::this_thread::sleep_for(std::chrono::milliseconds(code == SubmitError::Code::queue_full ? 1 : 100));
    }
  }
  const bool read_error = got == LineReader::Result::error;
  if (shared) {
    // Other clients' jobs in the queue are not ours to wait for.
    while (!interrupted() && book.outstanding() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } else {
    while (!interrupted() && !runtime->wait_idle(std::chrono::milliseconds(100))) {
    }
  }
  if (interrupted()) std::cerr << "\nbulwark: interrupted, shutting down\n";
  runtime->shutdown();
  std::size_t left = 0;  // shared queue: lines still waiting there, for other processes
  if (shared) {
    const auto settle = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    while (book.outstanding() > 0 && std::chrono::steady_clock::now() < settle) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // ends of the last jobs that ran here
    }
    left = book.outstanding();
  }
  const RuntimeStats stats = runtime->stats();
  runtime.reset();
  const bool output_ok = writer.close();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const Writer::Counts& c = writer.counts();
  std::fprintf(stderr,
               "bulwark run: %llu lines in %.2f s: %llu succeeded, %llu failed, %llu rejected, %llu cancelled; "
               "%llu retries%s\n",
               static_cast<unsigned long long>(lines), secs, static_cast<unsigned long long>(c.succeeded),
               static_cast<unsigned long long>(c.failed), static_cast<unsigned long long>(c.rejected),
               static_cast<unsigned long long>(c.cancelled), static_cast<unsigned long long>(c.retries),
               c.duplicates == 0 ? "" : ("; " + std::to_string(c.duplicates) + " duplicates").c_str());
  for (const auto& [type, n] : c.failures) {
    std::fprintf(stderr, "  failed with %s: %llu\n", type.c_str(), static_cast<unsigned long long>(n));
  }
  if (left > 0) {
    std::fprintf(stderr, "  %zu lines left in the shared queue, unfinished (other processes on it may run them)\n",
                 left);
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
  return c.failed + c.rejected + c.cancelled + left == 0 ? 0 : 1;
}

}  // namespace bulwark::cli
