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
//   redis::Connection c(*redis::parse_url("unix:///tmp/r.sock"), 1s, 1s);
//   c.command({"SET", "k", "v"});
//   redis::Value v = c.eval(script, {key}, {arg});
//
// Not thread-safe: one thread uses a connection at a time. Every call blocks
// for at most the command timeout.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

struct redisContext;

namespace bulwark::detail::redis {

// Where Redis is: a TCP host and port, or a unix socket; and the database.
struct Address {
  std::string host;       // empty for a unix socket
  int port = 6379;
  std::string unix_path;  // set for a unix socket
  int db = 0;
  std::string text() const;  // for messages: "127.0.0.1:6379/0", "unix:/run/redis.sock/0"
};

// Reads "redis://host:port/db" (port and db optional) or
// "unix:///path/to/redis.sock" (with "?db=N" optional). nullopt, with the
// reason in `problem`, if the URL is not one of those.
std::optional<Address> parse_url(const std::string& url, std::string* problem = nullptr);

class RedisError : public std::runtime_error {
 public:
  RedisError(const std::string& message, bool unavailable) : std::runtime_error(message), unavailable_(unavailable) {}
  // True for a connection or I/O failure (Redis unreachable or gone).
  bool unavailable() const noexcept { return unavailable_; }

 private:
  bool unavailable_;
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
  // Connects and selects the database; throws RedisError (unavailable) if
  // that fails within `connect_timeout`.
  Connection(const Address& address, std::chrono::milliseconds connect_timeout,
             std::chrono::milliseconds command_timeout);
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

  // False after an I/O error: the connection cannot be used any more.
  bool usable() const noexcept { return usable_; }

 private:
  void send(const std::vector<std::string>& args);
  Value receive();
  [[noreturn]] void fail_io(const std::string& doing);

  redisContext* context_ = nullptr;
  Address address_;
  bool usable_ = true;
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
// not all reconnect in step). Not thread-safe: one thread owns it.
class Link {
 public:
  Link(Address address, std::chrono::milliseconds connect_timeout, std::chrono::milliseconds command_timeout);
  ~Link();

  // The connection, connecting first if there is none or it broke; throws
  // RedisError (unavailable) if that fails.
  Connection& get();
  // A round went through: the next failure waits the shortest backoff.
  void ok() noexcept { backoff_ = kFirst; }
  // Drops the connection and sleeps the backoff, which then doubles.
  void failed();

 private:
  static constexpr std::chrono::milliseconds kFirst{10};
  const Address address_;
  const std::chrono::milliseconds connect_timeout_, command_timeout_;
  std::unique_ptr<Connection> connection_;
  std::chrono::milliseconds backoff_ = kFirst;
  unsigned seed_;
};

}  // namespace bulwark::detail::redis
