// Internal: one connection to Redis through hiredis, for the redis backend.
//
// A Connection runs commands and Lua scripts synchronously; replies come
// back as owned Values, so hiredis stays out of every header. A failed
// connection or I/O error throws RedisError with unavailable() true (the
// connection is then broken: make a new one, after a backoff); an error
// reply throws RedisError with unavailable() false (a bug or bad data, not
// an outage). Scripts are sent by SHA1 (EVALSHA) and loaded on first use or
// when Redis lost them (NOSCRIPT, after a restart).
//
//   redis::Connection c({.address = *redis::parse_url("unix:///tmp/r.sock")});
//   c.command({"SET", "k", "v"});
//   redis::Value v = c.eval(script, {key}, {arg});
//
// Not thread-safe: one thread uses a connection at a time. Every call blocks
// for at most the command timeout.
//
// An error answer that says the connection cannot be used now (READONLY
// after a failover, LOADING, NOAUTH, ...) marks it unusable, so its owner
// makes a new one.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bulwark/backend_error.hpp"

struct redisContext;
struct redisReader;

namespace bulwark::detail::redis {

// Where Redis is: a TCP host and port, or a unix socket; the database; and
// what the URL said of the login and TLS.
struct Address {
  std::string host;       // empty for a unix socket; an IPv6 address without brackets
  int port = 6379;
  std::string unix_path;  // set for a unix socket
  int db = 0;
  bool tls = false;       // rediss://
  std::string username;   // empty: the default user
  std::string password;   // empty: no AUTH
  // For messages: "redis://app@127.0.0.1:6379/0", "rediss://…",
  // "unix:/run/redis.sock/0". Never the password.
  std::string text() const;
};

// Reads "redis[s]://[user[:password]@]host[:port][/db]" (user and
// password percent-decoded; an IPv6 host in brackets) or
// "unix:///path/to/redis.sock" (with "?db=N" optional). nullopt, with the
// reason in `problem`, if the URL is not one of those. The reason never
// quotes the URL (it may hold a password).
std::optional<Address> parse_url(const std::string& url, std::string* problem = nullptr);

// TLS for a connection (redis.tls.*, or rediss://).
struct TlsOptions {
  bool enabled = false;
  std::string ca_file;      // empty: the system's certificate authorities
  std::string cert_file;    // a client certificate, with key_file
  std::string key_file;
  std::string server_name;  // SNI and the name verified; empty: the host
  bool verify = true;       // the server's certificate and name
};

class Status;
class TlsStream;

// Redis Sentinel: where the sentinels are, the master's name, their login.
struct SentinelOptions {
  std::string master;
  std::vector<std::pair<std::string, int>> addresses;  // host, port
  std::string username;
  std::string password;
};

// Redis Cluster: some nodes to ask for the slot map, and the key whose
// slot's master a connection goes to (the namespace's hash tag, "{ns}").
struct ClusterOptions {
  std::vector<std::pair<std::string, int>> addresses;  // host, port
  std::string key;
};

// The Redis Cluster hash slot of `key` (CRC16 of the key, or of the part
// between the first '{' and the next '}' when that part is not empty,
// modulo 16384).
int key_slot(std::string_view key) noexcept;

// Everything a connection needs: where (or which sentinels or cluster nodes to ask), who,
// TLS, how long to wait, and where to count its errors (null: nowhere).
struct ConnectOptions {
  Address address;  // with sentinel: the master's is asked for; db, login and TLS still come from here
  std::optional<SentinelOptions> sentinel;
  std::optional<ClusterOptions> cluster;  // not with sentinel
  TlsOptions tls;
  std::chrono::milliseconds connect_timeout{1'000};
  std::chrono::milliseconds command_timeout{1'000};
  std::shared_ptr<Status> status;
};

// How to reach the sentinel options.sentinel->addresses[index]: its own
// login, the data connection's TLS, the connect timeout for both timeouts,
// no status.
ConnectOptions sentinel_connect(const ConnectOptions& options, std::size_t index);

// A Redis error, classified once (classify): unavailable (the connection
// failed or timed out, or Redis answered LOADING, BUSY, MASTERDOWN,
// READONLY, TRYAGAIN, CLUSTERDOWN, MOVED, ASK: retry on a fresh connection), full (OOM
// under maxmemory), other (any other error answer). login() marks the
// unavailable errors that are about the login (WRONGPASS, NOAUTH, NOPERM):
// waiting does not mend them.
class RedisError : public BackendError {
 public:
  RedisError(const std::string& message, Kind kind, bool login = false, bool moved = false)
      : BackendError(message, kind), login_(login), moved_(moved) {}
  // An error answer from Redis, classified by its first word.
  static RedisError from_reply(std::string reply);
  // True for a connection or I/O failure (Redis unreachable or gone), or an
  // answer that says this connection cannot be used now.
  bool unavailable() const noexcept { return kind() == Kind::unavailable; }
  bool login() const noexcept { return login_; }
  // A cluster's MOVED answer (unavailable): the slot has another master
  // now; a new connection goes there, no backoff needed.
  bool moved() const noexcept { return moved_; }

 private:
  bool login_;
  bool moved_;
};

// A reply. Integers, strings, statuses and arrays of them (error replies
// are thrown, never returned).
struct Value {
  enum class Type { nil, integer, string, status, array };
  Type type = Type::nil;
  long long integer = 0;
  std::string str;  // string and status
  std::vector<Value> elements;

  bool is_nil() const noexcept { return type == Type::nil; }
  // The integer, or a string holding one; throws RedisError otherwise.
  long long as_integer() const;
};

// A Lua script. Scripts are constants that live as long as the program.
struct Script {
  const char* name;  // for messages
  std::string source;
};

class Connection {
 public:
  // Connects, logs in (AUTH, when there is a password) and selects the
  // database; throws RedisError (unavailable; login() if Redis refused the
  // login) if that fails within the connect timeout. With Sentinel it asks
  // the sentinels for the master first, and checks (ROLE) that the node it
  // reached is the master. With Cluster it asks the node a MOVED named
  // last, then the configured nodes, for the slot map (CLUSTER SLOTS) and
  // connects to the master of its key's slot. There a MOVED answer makes
  // the connection unusable (the next one goes where MOVED said); an ASK
  // answer (the slot is migrating and the key left already) is followed:
  // the command runs once on the node named, after ASKING.
  explicit Connection(const ConnectOptions& options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Value command(const std::vector<std::string>& args);
  // Sends all commands, then reads all replies (one round trip).
  std::vector<Value> pipeline(const std::vector<std::vector<std::string>>& commands);
  Value eval(const Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args);

  // Pub/sub: after command({"SUBSCRIBE", channel}), the next message
  // (["message", channel, payload]); blocks up to the command timeout.
  Value next_message() { return receive(); }

  // False after an I/O error, or (with Sentinel) once the sentinels named a
  // new master after this connection was made: it cannot be used any more.
  bool usable() const noexcept;

 private:
  void open(const ConnectOptions& options);
  // The command `argv` on the node an ASK named, after ASKING.
  Value asked(const std::vector<std::string>& argv, const std::string& where);
  void log_in(const ConnectOptions& options);
  void release() noexcept;
  void* tls_reply();
  std::string load(const Script& script);
  [[noreturn]] void raise(RedisError e);
  void send(const std::vector<std::string>& args);
  Value receive();
  [[noreturn]] void fail_io(const std::string& doing);

  // Plain TCP or a unix socket: hiredis's context does the I/O. TLS: the
  // stream does, commands are formatted into out_ and replies read by
  // hiredis's reader.
  redisContext* context_ = nullptr;
  std::unique_ptr<TlsStream> tls_;
  redisReader* reader_ = nullptr;
  std::string out_;
  Address address_;
  std::shared_ptr<Status> status_;
  bool usable_ = true;
  std::uint64_t master_epoch_ = 0;  // with Sentinel: the Status's master epoch when made
  bool follows_master_ = false;     // made through the sentinels
  // With Cluster: how to reach another node (for ASK), and the script that
  // eval() is running (loaded there first).
  std::unique_ptr<ConnectOptions> node_;
  const Script* evaluating_ = nullptr;
  std::unordered_map<const Script*, std::string> loaded_;  // SHA1 of each script loaded here
};

// How long a blocking read (XREAD ... BLOCK) may wait in Redis: well
// inside the command timeout, so the reply comes before the client gives up
// and a stop request is seen within one read.
inline long long blocking_read_ms(std::chrono::milliseconds command_timeout) {
  return std::max<long long>(1, std::min<long long>(200, command_timeout.count() / 2));
}

// The connection of one thread's loop (a feeder, an acker, a follower): made
// when needed, dropped after an error, and the backoff before the next try
// (10 ms doubling to 1 s, plus up to half again of jitter, so processes do
// not all reconnect in step). Each round's outcome goes to the options'
// Status under the loop's name, which logs a change of state once. Not
// thread-safe: one thread owns it.
class Link {
 public:
  Link(ConnectOptions options, std::string part);
  ~Link();

  // The connection, connecting first if there is none or it broke; throws
  // RedisError (unavailable) if that fails.
  Connection& get();
  // A round went through: the next failure waits the shortest backoff.
  void ok();
  // A round failed with `e`: drops the connection and sleeps the backoff,
  // which then doubles.
  void failed(const RedisError& e);

 private:
  static constexpr std::chrono::milliseconds kFirst{10};
  const ConnectOptions options_;
  const std::string part_;
  std::unique_ptr<Connection> connection_;
  std::chrono::milliseconds backoff_ = kFirst;
  unsigned seed_;
};

}  // namespace bulwark::detail::redis
