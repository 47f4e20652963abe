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
  if (word == "MOVED") return RedisError(std::move(reply), Kind::unavailable, false, true);
  for (std::string_view busy : {"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "ASK"}) {
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

// "host:port" (an IPv6 host without brackets, as Redis writes it).
std::pair<std::string, int> split_node(const std::string& node) {
  const auto colon = node.rfind(':');
  if (colon == std::string::npos) return {node, 6379};
  int port = 0;
  const char* end = node.data() + node.size();
  auto [ptr, ec] = std::from_chars(node.data() + colon + 1, end, port);
  if (ec != std::errc() || ptr != end) port = 0;
  return {node.substr(0, colon), port};
}

// A connection to one cluster node, for the slot map or an ASK: the data
// login and TLS, no database, no cluster.
ConnectOptions node_options(const ConnectOptions& options, const std::string& host, int port) {
  ConnectOptions o = options;
  o.address.host = host;
  o.address.port = port;
  o.address.db = 0;
  o.cluster.reset();
  o.sentinel.reset();
  return o;
}

// The master of `slot` as CLUSTER SLOTS names it: asked first of the node a
// MOVED named last, then of each configured node in turn.
Address owner_of(const ConnectOptions& options, int slot) {
  std::vector<std::pair<std::string, int>> ask;
  if (options.status) {
    if (const std::string moved = options.status->moved_to(slot); !moved.empty()) ask.push_back(split_node(moved));
  }
  ask.insert(ask.end(), options.cluster->addresses.begin(), options.cluster->addresses.end());
  std::string last_error = "no cluster node given";
  for (const auto& [host, port] : ask) {
    const std::string node = host + ":" + std::to_string(port);
    try {
      ConnectOptions o = node_options(options, host, port);
      o.status = nullptr;  // counted once, below, if no node answers
      o.command_timeout = options.connect_timeout;
      Connection c(o);
      const Value ranges = c.command({"CLUSTER", "SLOTS"});
      last_error = "node " + node + " names no master for slot " + std::to_string(slot);
      for (const Value& range : ranges.elements) {
        // [start, end, [host, port, id, ...] of the master, replicas...]
        if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
        if (slot < range.elements[0].as_integer() || slot > range.elements[1].as_integer()) continue;
        Address a = options.address;
        a.host = range.elements[2].elements[0].str.empty() ? host : range.elements[2].elements[0].str;
        a.port = static_cast<int>(range.elements[2].elements[1].as_integer());
        a.db = 0;
        return a;
      }
    } catch (const RedisError& e) {
      last_error = e.what();
      if (e.login()) throw;  // the login is wrong everywhere: say so at once
    }
  }
  throw RedisError("redis cluster slot " + std::to_string(slot) + ": no node named its master: " + last_error,
                   RedisError::Kind::unavailable);
}

// An ASK answer while following a cluster: "ASK <slot> <host:port>".
struct Asked {
  std::string where;
};

}  // namespace

int key_slot(std::string_view key) noexcept {
  if (const auto open = key.find('{'); open != std::string_view::npos) {
    if (const auto close = key.find('}', open + 1); close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  // CRC16-CCITT (XModem), as Redis Cluster hashes keys.
  std::uint16_t crc = 0;
  for (const char ch : key) {
    crc ^= static_cast<std::uint16_t>(static_cast<unsigned char>(ch) << 8);
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021) : static_cast<std::uint16_t>(crc << 1);
  }
  return crc & 16383;
}

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
  if (options.cluster) {
    try {
      address_ = owner_of(options, key_slot(options.cluster->key));
    } catch (RedisError& e) {
      usable_ = false;
      raise(std::move(e));
    }
    node_ = std::make_unique<ConnectOptions>(node_options(options, address_.host, address_.port));
    open(*node_);
    return;
  }
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
    const std::string_view text(reply->str, reply->len);
    if (node_ && text.rfind("ASK ", 0) == 0) throw Asked{std::string(text.substr(text.rfind(' ') + 1))};
    RedisError e = RedisError::from_reply(std::string(text));
    if (node_ && text.rfind("MOVED ", 0) == 0 && status_) {  // "MOVED <slot> <host:port>": asked first next time
      const std::string_view rest = text.substr(6);
      int slot = -1;
      std::from_chars(rest.data(), rest.data() + rest.size(), slot);
      if (slot >= 0) status_->moved(slot, std::string(rest.substr(rest.rfind(' ') + 1)));
    }
    if (e.unavailable()) usable_ = false;  // READONLY, LOADING, NOAUTH...: a fresh connection (or master) is needed
    if (std::strncmp(e.what(), "NOSCRIPT", 8) == 0) throw e;  // not an error: eval loads the script again
    raise(std::move(e));
  }
  return convert(reply.get());
}

Value Connection::command(const std::vector<std::string>& args) {
  send(args);
  try {
    return receive();
  } catch (const Asked& a) {
    return asked(args, a.where);
  }
}

// A slot migrating: the key is on the node named already. A connection of
// its own runs the one command there (ASK is rare: only while a slot
// moves), after ASKING, which lets that node answer for a slot it is
// still importing; a script is loaded there first.
Value Connection::asked(const std::vector<std::string>& argv, const std::string& where) {
  const auto [host, port] = split_node(where);
  Connection there(node_options(*node_, host, port));
  if (evaluating_ != nullptr && !argv.empty() && argv[0] == "EVALSHA") there.load(*evaluating_);
  there.command({"ASKING"});
  return there.command(argv);
}

std::vector<Value> Connection::pipeline(const std::vector<std::vector<std::string>>& commands) {
  for (const auto& c : commands) send(c);
  std::vector<Value> out;
  out.reserve(commands.size());
  std::optional<RedisError> first_error;
  std::vector<std::pair<std::size_t, std::string>> asks;  // followed once every reply here is read
  for (std::size_t i = 0; i < commands.size(); ++i) {
    try {
      out.push_back(receive());
    } catch (const Asked& a) {
      asks.emplace_back(i, a.where);
      out.emplace_back();
    } catch (const RedisError& e) {
      if (e.unavailable()) throw;
      if (!first_error) first_error = e;  // read every reply before throwing, so the connection stays in step
      out.emplace_back();
    }
  }
  for (const auto& [i, where] : asks) out[i] = asked(commands[i], where);
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
      evaluating_ = &script;
      Value v = command(argv);
      evaluating_ = nullptr;
      return v;
    } catch (const RedisError& e) {
      evaluating_ = nullptr;
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
  connection_.reset();
  if (options_.cluster && e.moved()) {
    // The slot moved on (a reshard, a failover): not this loop's failure.
    // The next connection goes where MOVED said after the shortest wait
    // (nodes' maps may lag a moment: no tight loop between two of them).
    backoff_ = kFirst;
    std::this_thread::sleep_for(kFirst);
    return;
  }
  if (options_.status) options_.status->down(part_, e);
  seed_ = seed_ * 1103515245u + 12345u;  // jitter needs no better randomness
  const auto jitter = std::chrono::milliseconds((seed_ >> 8) % static_cast<unsigned>(backoff_.count() / 2 + 1));
  std::this_thread::sleep_for(backoff_ + jitter);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(1000));
}

}  // namespace bulwark::detail::redis
