#include "redis/connection.hpp"

#include <hiredis/hiredis.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <random>
#include <thread>

namespace bulwark::detail::redis {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

bool parse_int(std::string_view text, int lo, int hi, int& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && !text.empty() && out >= lo && out <= hi;
}

Value convert(const redisReply* r) {
  Value v;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      v.type = Value::Type::integer;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      v.type = Value::Type::string;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = Value::Type::status;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = Value::Type::array;
      v.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) v.elements.push_back(convert(r->element[i]));
      break;
    default: break;  // nil
  }
  return v;
}

// hiredis writes with write(2): to a server that went away, that raises
// SIGPIPE, whose default ends the process. While this lives, SIGPIPE is
// blocked on the calling thread; one raised meanwhile is consumed, and the
// write fails with EPIPE instead. The program's own disposition is untouched.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{};
        while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

}  // namespace

std::string Address::text() const {
  return (unix_path.empty() ? host + ":" + std::to_string(port) : "unix:" + unix_path) + "/" + std::to_string(db);
}

std::optional<Address> parse_url(const std::string& url, std::string* problem) {
  const auto fail = [&](std::string why) -> std::optional<Address> {
    if (problem != nullptr) *problem = std::move(why);
    return std::nullopt;
  };
  Address a;
  std::string_view rest(url);
  if (rest.substr(0, 7) == "unix://") {
    rest.remove_prefix(7);
    if (const auto q = rest.find('?'); q != std::string_view::npos) {
      const std::string_view query = rest.substr(q + 1);
      rest = rest.substr(0, q);
      if (query.substr(0, 3) != "db=" || !parse_int(query.substr(3), 0, 1'000'000, a.db)) {
        return fail("expected unix:///path/to/redis.sock or unix:///path?db=N");
      }
    }
    if (rest.empty() || rest.front() != '/') return fail("expected an absolute socket path after unix://");
    a.unix_path = std::string(rest);
    return a;
  }
  if (rest.substr(0, 8) != "redis://") return fail("expected redis://host:port/db or unix:///path/to/redis.sock");
  rest.remove_prefix(8);
  std::string_view hostport = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && !parse_int(db, 0, 1'000'000, a.db)) return fail("the database after '/' must be a number");
  }
  if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos && hostport.find(']') == std::string_view::npos) {
    if (!parse_int(hostport.substr(colon + 1), 1, 65535, a.port)) return fail("the port must be 1 to 65535");
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) return fail("expected a host after redis://");
  a.host = std::string(hostport);
  return a;
}

long long Value::as_integer() const {
  if (type == Type::integer) return integer;
  long long out = 0;
  if (type == Type::string) {
    auto [ptr, ec] = std::from_chars(str.data(), str.data() + str.size(), out);
    if (ec == std::errc() && ptr == str.data() + str.size()) return out;
  }
  throw RedisError("expected an integer reply from Redis", false);
}

Connection::Connection(const Address& address, std::chrono::milliseconds connect_timeout,
                       std::chrono::milliseconds command_timeout)
    : address_(address) {
  context_ = address.unix_path.empty()
                 ? redisConnectWithTimeout(address.host.c_str(), address.port, to_timeval(connect_timeout))
                 : redisConnectUnixWithTimeout(address.unix_path.c_str(), to_timeval(connect_timeout));
  if (context_ == nullptr) throw RedisError("redis " + address.text() + ": out of memory while connecting", true);
  if (context_->err != 0) {
    const std::string why = context_->errstr;
    redisFree(context_);
    context_ = nullptr;
    throw RedisError("redis " + address.text() + ": cannot connect: " + why, true);
  }
  redisSetTimeout(context_, to_timeval(command_timeout));
  if (address.unix_path.empty()) redisEnableKeepAlive(context_);
  if (address.db != 0) command({"SELECT", std::to_string(address.db)});
}

Connection::~Connection() {
  if (context_ != nullptr) redisFree(context_);
}

void Connection::fail_io(const std::string& doing) {
  usable_ = false;
  throw RedisError("redis " + address_.text() + ": " + doing + ": " +
                       (context_ != nullptr && context_->err != 0 ? context_->errstr : "connection lost"),
                   true);
}

void Connection::send(const std::vector<std::string>& args) {
  if (!usable_) fail_io("connection broken earlier");
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(context_, static_cast<int>(args.size()), argv.data(), lens.data()) != REDIS_OK) {
    fail_io("sending a command");
  }
}

Value Connection::receive() {
  void* raw = nullptr;
  int status = REDIS_OK;
  {
    const SigpipeGuard guard;  // redisGetReply writes what was appended first
    status = redisGetReply(context_, &raw);
  }
  if (status != REDIS_OK || raw == nullptr) fail_io("reading a reply");
  ReplyPtr reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) throw RedisError(std::string(reply->str, reply->len), false);
  return convert(reply.get());
}

Value Connection::command(const std::vector<std::string>& args) {
  send(args);
  return receive();
}

std::vector<Value> Connection::pipeline(const std::vector<std::vector<std::string>>& commands) {
  for (const auto& c : commands) send(c);
  std::vector<Value> out;
  out.reserve(commands.size());
  std::optional<RedisError> first_error;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    try {
      out.push_back(receive());
    } catch (const RedisError& e) {
      if (e.unavailable()) throw;
      if (!first_error) first_error = e;  // read every reply before throwing, so the connection stays in step
      out.emplace_back();
    }
  }
  if (first_error) throw *first_error;
  return out;
}

Value Connection::eval(const Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args) {
  for (int round = 0; round < 2; ++round) {
    auto it = loaded_.find(&script);
    if (it == loaded_.end()) {
      const Value sha = command({"SCRIPT", "LOAD", script.source});
      it = loaded_.emplace(&script, sha.str).first;
    }
    std::vector<std::string> argv = {"EVALSHA", it->second, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    try {
      return command(argv);
    } catch (const RedisError& e) {
      // Redis forgot the script (it restarted): load it again, once.
      if (e.unavailable() || std::strncmp(e.what(), "NOSCRIPT", 8) != 0 || round == 1) {
        if (e.unavailable()) throw;
        throw RedisError(std::string("script ") + script.name + ": " + e.what(), false);
      }
      loaded_.erase(&script);
    }
  }
  throw RedisError(std::string("script ") + script.name + ": could not be loaded", false);
}

Link::Link(Address address, std::chrono::milliseconds connect_timeout, std::chrono::milliseconds command_timeout)
    : address_(std::move(address)),
      connect_timeout_(connect_timeout),
      command_timeout_(command_timeout),
      seed_(std::random_device{}()) {}

Link::~Link() = default;

Connection& Link::get() {
  if (!connection_ || !connection_->usable()) {
    connection_.reset();
    connection_ = std::make_unique<Connection>(address_, connect_timeout_, command_timeout_);
  }
  return *connection_;
}

void Link::failed() {
  connection_.reset();
  seed_ = seed_ * 1103515245u + 12345u;  // jitter needs no better randomness
  const auto jitter = std::chrono::milliseconds((seed_ >> 8) % static_cast<unsigned>(backoff_.count() / 2 + 1));
  std::this_thread::sleep_for(backoff_ + jitter);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(1000));
}

}  // namespace bulwark::detail::redis
