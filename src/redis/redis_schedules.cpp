#include "redis/redis_schedules.hpp"

namespace bulwark::detail::redis {

std::optional<long long> RedisScheduleStore::last_run(const std::string& name) {
  const Value v = pool_.command({"HGET", keys_.schedules_last, name});
  if (v.str.empty()) return std::nullopt;
  try {
    return std::stoll(v.str);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Only ever forward: processes writing the same time, or a slower one an
// older time, leave the latest.
void RedisScheduleStore::set_last_run(const std::string& name, long long ms) {
  static const Script kForward{"schedule_last", R"lua(
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
)lua"};
  pool_.eval(kForward, {keys_.schedules_last}, {name, std::to_string(ms)});
}

std::map<std::string, std::string> RedisScheduleStore::added() {
  const Value v = pool_.command({"HGETALL", keys_.schedules_added});
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i + 1 < v.elements.size(); i += 2) out[v.elements[i].str] = v.elements[i + 1].str;
  return out;
}

void RedisScheduleStore::add(const std::string& name, const std::string& json) {
  pool_.command({"HSET", keys_.schedules_added, name, json});
}

bool RedisScheduleStore::remove(const std::string& name) {
  return pool_.command({"HDEL", keys_.schedules_added, name}).as_integer() > 0;
}

}  // namespace bulwark::detail::redis
