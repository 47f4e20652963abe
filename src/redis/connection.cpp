#include "redis/connection.hpp"

#include "redis/status.hpp"
#include "redis/tls_stream.hpp"

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
  if (!unix_path.empty()) return "unix:" + unix_path + "/" + std::to_string(db);
  std::string out = tls ? "rediss://" : "redis://";
  if (!username.empty()) out += username + "@";
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return out + ":" + std::to_string(port) + "/" + std::to_string(db);
}

namespace {

// %XX escapes (RFC 3986) in a URL's user or password.
std::optional<std::string> percent_decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    int value = 0;
    const char* begin = text.data() + i + 1;
    auto [ptr, ec] = std::from_chars(begin, begin + 2, value, 16);
    if (ec != std::errc() || ptr != begin + 2) return std::nullopt;
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

}  // namespace

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
  if (rest.substr(0, 8) == "redis://") {
    rest.remove_prefix(8);
  } else if (rest.substr(0, 9) == "rediss://") {
    rest.remove_prefix(9);
    a.tls = true;
  } else {
    return fail("expected redis://[user:password@]host:port/db, rediss://... (TLS) or unix:///path/to/redis.sock");
  }
  std::string_view authority = rest.substr(0, rest.find('/'));
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && !parse_int(db, 0, 1'000'000, a.db)) return fail("the database after '/' must be a number");
  }
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const auto colon = userinfo.find(':');
    auto user = percent_decoded(userinfo.substr(0, colon));
    auto password = percent_decoded(colon == std::string_view::npos ? std::string_view() : userinfo.substr(colon + 1));
    if (!user || !password) return fail("a '%' in the user or password must start an escape such as %40");
    a.username = std::move(*user);
    a.password = std::move(*password);
  }
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {  // [IPv6]:port
    const auto close = host.find(']');
    if (close == std::string_view::npos) return fail("an IPv6 host must end with ']'");
    const std::string_view after = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!after.empty() && (after.front() != ':' || !parse_int(after.substr(1), 1, 65535, a.port))) {
      return fail("the port must be 1 to 65535");
    }
  } else if (const auto colon = host.rfind(':'); colon != std::string_view::npos) {
    if (!parse_int(host.substr(colon + 1), 1, 65535, a.port)) return fail("the port must be 1 to 65535");
    host = host.substr(0, colon);
  }
  if (host.empty()) return fail("expected a host after the scheme");
  a.host = std::string(host);
  return a;
}

RedisError RedisError::from_reply(std::string reply) {
  const std::string_view word = std::string_view(reply).substr(0, reply.find(' '));
  for (std::string_view busy : {"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"}) {
    if (word == busy) return RedisError(std::move(reply), Kind::unavailable);
  }
  for (std::string_view refused : {"WRONGPASS", "NOAUTH", "NOPERM"}) {
    if (word == refused) return RedisError(std::move(reply), Kind::unavailable, true);
  }
  // "ERR AUTH <password> called without any password configured ...": a
  // password given to a Redis that has none.
  if (reply.rfind("ERR AUTH", 0) == 0) return RedisError(std::move(reply), Kind::unavailable, true);
  if (word == "OOM") return RedisError(std::move(reply), Kind::full);
  return RedisError(std::move(reply), Kind::other);
}

long long Value::as_integer() const {
  if (type == Type::integer) return integer;
  long long out = 0;
  if (type == Type::string) {
    auto [ptr, ec] = std::from_chars(str.data(), str.data() + str.size(), out);
    if (ec == std::errc() && ptr == str.data() + str.size()) return out;
  }
  throw RedisError("expected an integer reply from Redis", RedisError::Kind::other);
}

namespace {

// The master's address as the sentinels name it, tried in turn.
Address master_of(const ConnectOptions& options) {
  const SentinelOptions& s = *options.sentinel;
  std::string last_error = "no sentinel given";
  for (std::size_t i = 0; i < s.addresses.size(); ++i) {
    const auto& [host, port] = s.addresses[i];
    try {
      Connection c(sentinel_connect(options, i));
      const Value v = c.command({"SENTINEL", "get-master-addr-by-name", s.master});
      if (v.elements.size() == 2) {
        Address a = options.address;
        a.host = v.elements[0].str;
        a.port = static_cast<int>(v.elements[1].as_integer());
        return a;
      }
      last_error = "sentinel " + host + ":" + std::to_string(port) + " knows no master '" + s.master + "'";
    } catch (const RedisError& e) {
      last_error = e.what();
      if (e.login()) throw;  // the sentinels' login is wrong: say so at once
    }
  }
  throw RedisError("redis sentinel master '" + s.master + "': no sentinel named it: " + last_error,
                   RedisError::Kind::unavailable);
}

}  // namespace

ConnectOptions sentinel_connect(const ConnectOptions& options, std::size_t index) {
  const SentinelOptions& s = *options.sentinel;
  ConnectOptions ask;
  ask.address.host = s.addresses.at(index).first;
  ask.address.port = s.addresses.at(index).second;
  ask.address.tls = options.tls.enabled;
  ask.address.username = s.username;
  ask.address.password = s.password;
  ask.tls = options.tls;
  ask.connect_timeout = ask.command_timeout = options.connect_timeout;
  return ask;
}

Connection::Connection(const ConnectOptions& options) : address_(options.address), status_(options.status) {
  if (!options.sentinel) {
    open(options);
    return;
  }
  // Taken first: a switch announced while this connects makes it stale.
  follows_master_ = status_ != nullptr;
  if (follows_master_) master_epoch_ = status_->master_epoch();
  try {
    address_ = master_of(options);
  } catch (RedisError& e) {
    usable_ = false;
    raise(std::move(e));
  }
  ConnectOptions master = options;
  master.address = address_;
  master.sentinel.reset();
  open(master);
  // A sentinel may name a node that is no master any more (a failover
  // under way): then ask again, after the backoff.
  try {
    const Value role = command({"ROLE"});
    if (role.elements.empty() || role.elements[0].str != "master") {
      throw RedisError("redis " + address_.text() + ": named master by the sentinels, but it is a " +
                           (role.elements.empty() ? std::string("node of no role") : role.elements[0].str),
                       RedisError::Kind::unavailable);
    }
  } catch (RedisError& e) {
    usable_ = false;
    release();
    throw;
  }
}

void Connection::open(const ConnectOptions& options) {
  const Address& address = options.address;
  if (options.tls.enabled) {
    try {
      tls_ = std::make_unique<TlsStream>(options);
    } catch (RedisError& e) {
      usable_ = false;
      raise(std::move(e));
    }
    reader_ = redisReaderCreate();
    if (reader_ == nullptr) raise(RedisError("redis " + address.text() + ": out of memory", RedisError::Kind::unavailable));
    log_in(options);
    return;
  }
  context_ = address.unix_path.empty()
                 ? redisConnectWithTimeout(address.host.c_str(), address.port, to_timeval(options.connect_timeout))
                 : redisConnectUnixWithTimeout(address.unix_path.c_str(), to_timeval(options.connect_timeout));
  if (context_ == nullptr) {
    usable_ = false;
    raise(RedisError("redis " + address.text() + ": out of memory while connecting", RedisError::Kind::unavailable));
  }
  if (context_->err != 0) {
    const std::string why = context_->errstr;
    redisFree(context_);
    context_ = nullptr;
    usable_ = false;
    raise(RedisError("redis " + address.text() + ": cannot connect: " + why, RedisError::Kind::unavailable));
  }
  redisSetTimeout(context_, to_timeval(options.command_timeout));
  if (address.unix_path.empty()) redisEnableKeepAlive(context_);
  log_in(options);
}

// AUTH before anything else (SELECT included): "AUTH password" for the
// default user, "AUTH user password" for an ACL user.
void Connection::log_in(const ConnectOptions& options) {
  const Address& address = options.address;
  try {
    if (!address.password.empty()) {
      if (address.username.empty()) {
        command({"AUTH", address.password});
      } else {
        command({"AUTH", address.username, address.password});
      }
    }
    if (address.db != 0) command({"SELECT", std::to_string(address.db)});
  } catch (const RedisError& e) {
    usable_ = false;
    release();  // the constructor throws: no destructor runs
    const std::string who = address.username.empty() ? "the default user" : "user " + address.username;
    const std::string doing = address.password.empty() ? "without a password" : "as " + who;
    throw RedisError("redis " + address.text() + ": " + (e.login() ? "login " + doing + " refused: " : "") + e.what(),
                     e.kind(), e.login());
  }
}

Connection::~Connection() { release(); }

void Connection::release() noexcept {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
  if (reader_ != nullptr) redisReaderFree(reader_);
  reader_ = nullptr;
  tls_.reset();
}

// Every error a connection meets leaves through here, counted once.
void Connection::raise(RedisError e) {
  if (status_) status_->count(e);
  throw e;
}

void Connection::fail_io(const std::string& doing) {
  usable_ = false;
  raise(RedisError("redis " + address_.text() + ": " + doing + ": " +
                       (context_ != nullptr && context_->err != 0 ? context_->errstr : "connection lost"),
                   RedisError::Kind::unavailable));
}

bool Connection::usable() const noexcept {
  return usable_ && (!follows_master_ || status_->master_epoch() == master_epoch_);
}

void Connection::send(const std::vector<std::string>& args) {
  if (!usable_) fail_io("connection broken earlier");
  if (!usable()) {
    usable_ = false;
    raise(RedisError("redis " + address_.text() + ": the sentinels named a new master since this connection was made",
                     RedisError::Kind::unavailable));
  }
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (tls_) {
    char* formatted = nullptr;
    const int n = redisFormatCommandArgv(&formatted, static_cast<int>(args.size()), argv.data(), lens.data());
    if (n < 0) fail_io("formatting a command");
    out_.append(formatted, static_cast<std::size_t>(n));
    redisFreeCommand(formatted);
    return;
  }
  if (redisAppendCommandArgv(context_, static_cast<int>(args.size()), argv.data(), lens.data()) != REDIS_OK) {
    fail_io("sending a command");
  }
}

// Over TLS: writes what was appended, then reads until the reader has a
// whole reply.
void* Connection::tls_reply() {
  try {
    if (!out_.empty()) {
      tls_->write(out_);
      out_.clear();
    }
    char buffer[16 * 1024];
    for (;;) {
      void* reply = nullptr;
      if (redisReaderGetReply(reader_, &reply) != REDIS_OK) fail_io("reading a reply: not RESP");
      if (reply != nullptr) return reply;
      const std::size_t n = tls_->read_some(buffer, sizeof buffer);
      if (redisReaderFeed(reader_, buffer, n) != REDIS_OK) fail_io("reading a reply: not RESP");
    }
  } catch (RedisError& e) {
    if (!usable_) throw;  // from fail_io: counted there
    usable_ = false;
    raise(std::move(e));
  }
}

Value Connection::receive() {
  void* raw = nullptr;
  if (tls_) {
    raw = tls_reply();
  } else {
    int status = REDIS_OK;
    {
      const SigpipeGuard guard;  // redisGetReply writes what was appended first
      status = redisGetReply(context_, &raw);
    }
    if (status != REDIS_OK || raw == nullptr) fail_io("reading a reply");
  }
  ReplyPtr reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) {
    RedisError e = RedisError::from_reply(std::string(reply->str, reply->len));
    if (e.unavailable()) usable_ = false;  // READONLY, LOADING, NOAUTH...: a fresh connection (or master) is needed
    if (std::strncmp(e.what(), "NOSCRIPT", 8) == 0) throw e;  // not an error: eval loads the script again
    raise(std::move(e));
  }
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
    if (it == loaded_.end()) it = loaded_.emplace(&script, load(script)).first;
    std::vector<std::string> argv = {"EVALSHA", it->second, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    try {
      return command(argv);
    } catch (const RedisError& e) {
      // Redis forgot the script (it restarted): load it again, once.
      if (e.kind() != RedisError::Kind::other || std::strncmp(e.what(), "NOSCRIPT", 8) != 0 || round == 1) {
        if (e.kind() != RedisError::Kind::other) throw;
        throw RedisError(std::string("script ") + script.name + ": " + e.what(), e.kind(), e.login());
      }
      loaded_.erase(&script);
    }
  }
  throw RedisError(std::string("script ") + script.name + ": could not be loaded", RedisError::Kind::other);
}

// SCRIPT LOAD; a Redis older than 7 refuses a "#!lua flags=..." first
// line, so then the script goes without it (and without its flags).
std::string Connection::load(const Script& script) {
  try {
    return command({"SCRIPT", "LOAD", script.source}).str;
  } catch (const RedisError& e) {
    if (e.kind() != RedisError::Kind::other || script.source.rfind("#!", 0) != 0) throw;
    return command({"SCRIPT", "LOAD", script.source.substr(script.source.find('\n') + 1)}).str;
  }
}

Link::Link(ConnectOptions options, std::string part)
    : options_(std::move(options)), part_(std::move(part)), seed_(std::random_device{}()) {}

Link::~Link() = default;

Connection& Link::get() {
  if (!connection_ || !connection_->usable()) {
    connection_.reset();
    connection_ = std::make_unique<Connection>(options_);
  }
  return *connection_;
}

void Link::ok() {
  backoff_ = kFirst;
  if (options_.status) options_.status->up(part_);
}

void Link::failed(const RedisError& e) {
  if (options_.status) options_.status->down(part_, e);
  connection_.reset();
  seed_ = seed_ * 1103515245u + 12345u;  // jitter needs no better randomness
  const auto jitter = std::chrono::milliseconds((seed_ >> 8) % static_cast<unsigned>(backoff_.count() / 2 + 1));
  std::this_thread::sleep_for(backoff_ + jitter);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(1000));
}

}  // namespace bulwark::detail::redis
