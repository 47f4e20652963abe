#include "redis/scripts.hpp"

namespace bulwark::detail::redis {

namespace {

// Shared by every script: the ready order, retention trimming and fencing.
const std::string kPrelude = R"lua(
local function ready_score(priority, retry, seq)
  return (9 - tonumber(priority)) * 35184372088832 + (retry and 17592186044416 or 0) + tonumber(seq)
end
local function forget(zset, ids, job_prefix, index)
  for _, id in ipairs(ids) do
    local state = redis.call('HGET', job_prefix .. id, 'state')
    if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
      redis.call('DEL', job_prefix .. id)
      redis.call('ZREM', index, id)
    end
    redis.call('ZREM', zset, id)
  end
end
-- Retention: entries finished before `cutoff` ms (at most 1000 a call), then
-- the oldest beyond `keep`.
local function trim(zset, keep, cutoff, job_prefix, index)
  forget(zset, redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000), job_prefix, index)
  local excess = redis.call('ZCARD', zset) - keep
  if excess > 0 then forget(zset, redis.call('ZRANGE', zset, 0, excess - 1), job_prefix, index) end
end
-- Every end goes on the ended stream, for whoever follows ends.
local function ended(stream, id, state)
  redis.call('XADD', stream, 'MAXLEN', '~', 100000, '*', 'id', id, 'state', state)
end
local function holds(key, owner, attempt)
  local f = redis.call('HMGET', key, 'owner', 'attempts', 'state')
  return f[1] == owner and f[2] == attempt and f[3] == 'running'
end
)lua";

}  // namespace

const Script kEnqueue{"enqueue", kPrelude + R"lua(
local capacity, prefix = tonumber(ARGV[1]), ARGV[2]
local waiting = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local out = {}
for i = 3, #ARGV, 8 do
  local id, priority, due, now = ARGV[i], ARGV[i + 3], tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local key = prefix .. id
  if redis.call('EXISTS', key) == 1 then
    table.insert(out, -1)
  elseif waiting >= capacity then
    table.insert(out, -2)
  else
    local seq = redis.call('INCR', KEYS[4])
    local delayed = due > now
    redis.call('HSET', key, 'id', id, 'type', ARGV[i + 1], 'payload', ARGV[i + 2], 'priority', priority,
      'max_attempts', ARGV[i + 4], 'timeout_ms', ARGV[i + 5], 'seq', seq, 'created_ms', now, 'attempts', 0,
      'state', delayed and 'scheduled' or 'queued', 'retry', '0')
    redis.call('ZADD', KEYS[3], seq, id)
    if delayed then
      redis.call('ZADD', KEYS[2], due, id)
    else
      redis.call('ZADD', KEYS[1], ready_score(priority, false, seq), id)
    end
    waiting = waiting + 1
    table.insert(out, seq)
  end
end
return out
)lua"};

const Script kFetch{"fetch", kPrelude + R"lua(
local out = {}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
local deadline = tonumber(ARGV[2]) + tonumber(ARGV[3])
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = ARGV[5] .. id
  local f = redis.call('HMGET', key, 'state', 'type', 'payload', 'priority', 'max_attempts', 'timeout_ms', 'seq',
                       'retry', 'created_ms', 'attempts', 'started_ms')
  if f[1] == 'queued' then
    local attempts = tonumber(f[10]) + 1
    if f[11] then
      redis.call('HSET', key, 'state', 'running', 'owner', ARGV[4], 'retry', '0', 'attempts', attempts)
    else
      redis.call('HSET', key, 'state', 'running', 'owner', ARGV[4], 'retry', '0', 'attempts', attempts,
                 'started_ms', ARGV[2])
    end
    redis.call('ZADD', KEYS[2], deadline, id)
    table.insert(out, {id, f[2], f[3], f[4], f[5], f[6], tostring(attempts), f[7], f[8], f[9]})
  end
end
return out
)lua"};

const Script kAck{"ack", kPrelude + R"lua(
local owner, now, prefix = ARGV[1], ARGV[2], ARGV[7]
local out = {}
local ended_done, ended_dead = false, false
for i = 8, #ARGV, 6 do
  local id, attempt, how, state, outcome, due = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                                               ARGV[i + 5]
  local key = prefix .. id
  if not holds(key, owner, attempt) then
    table.insert(out, 0)
  elseif how == 'retry' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', key, 'state', 'scheduled', 'outcome', outcome, 'retry', '1')
    redis.call('ZADD', KEYS[6], due, id)
    table.insert(out, 1)
  else
    local dead = state == 'failed'
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', key, 'state', state, 'outcome', outcome, 'finished_ms', now)
    redis.call('ZADD', dead and KEYS[3] or KEYS[2], now, id)
    ended(KEYS[5], id, state)
    if dead then ended_dead = true else ended_done = true end
    table.insert(out, 1)
  end
end
if ended_done then trim(KEYS[2], tonumber(ARGV[3]), ARGV[5], prefix, KEYS[4]) end
if ended_dead then trim(KEYS[3], tonumber(ARGV[4]), ARGV[6], prefix, KEYS[4]) end
return out
)lua"};

const Script kExtend{"extend", kPrelude + R"lua(
if not holds(KEYS[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
)lua"};

const Script kPromote{"promote", kPrelude + R"lua(
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  local key = ARGV[3] .. id
  local f = redis.call('HMGET', key, 'priority', 'seq', 'retry', 'state')
  redis.call('ZREM', KEYS[1], id)
  if f[4] == 'scheduled' then
    redis.call('HSET', key, 'state', 'queued')
    redis.call('ZADD', KEYS[2], ready_score(f[1], f[3] == '1', f[2]), id)
  end
end
return #due
)lua"};

const Script kRecover{"recover", kPrelude + R"lua(
local now = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(expired) do
  local key = ARGV[3] .. id
  redis.call('ZREM', KEYS[1], id)
  local f = redis.call('HMGET', key, 'state', 'attempts', 'max_attempts', 'owner', 'priority', 'seq', 'cancel')
  if f[1] == 'running' then
    local outcome = cjson.encode({error = {kind = 'lost', type = 'lost', process = f[4] or '',
      message = 'the lease of process ' .. (f[4] or '?') .. ' expired: it died or stalled while running the job'}})
    redis.call('HDEL', key, 'owner')
    if f[7] == '1' then
      redis.call('HSET', key, 'state', 'cancelled', 'outcome', outcome, 'finished_ms', now)
      redis.call('HDEL', key, 'cancel')
      redis.call('ZADD', KEYS[5], now, id)
      ended(KEYS[6], id, 'cancelled')
    elseif tonumber(f[2]) >= tonumber(f[3]) then
      redis.call('HSET', key, 'state', 'failed', 'outcome', outcome, 'finished_ms', now)
      redis.call('ZADD', KEYS[3], now, id)
      ended(KEYS[6], id, 'failed')
    else
      redis.call('HSET', key, 'state', 'queued', 'outcome', outcome, 'retry', '1')
      redis.call('ZADD', KEYS[2], ready_score(f[5], true, f[6]), id)
    end
    table.insert(out, id)
  end
end
trim(KEYS[3], tonumber(ARGV[4]), ARGV[6], ARGV[3], KEYS[4])
trim(KEYS[5], tonumber(ARGV[5]), ARGV[7], ARGV[3], KEYS[4])
return out
)lua"};

const Script kCancel{"cancel", kPrelude + R"lua(
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'queued' or state == 'scheduled' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  trim(KEYS[4], tonumber(ARGV[3]), ARGV[5], ARGV[4], KEYS[6])
  ended(KEYS[7], ARGV[1], 'cancelled')
  return 1
end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', KEYS[5], ARGV[1])
  return 2
end
return 3
)lua"};

const Script kRequeue{"requeue", kPrelude + R"lua(
local f = redis.call('HMGET', KEYS[1], 'state', 'priority', 'seq')
if not f[1] then return 0 end
if f[1] ~= 'failed' then return -1 end
if redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[2]) then return -2 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'retry', '0')
redis.call('HDEL', KEYS[1], 'outcome', 'finished_ms', 'cancel')
redis.call('ZADD', KEYS[3], ready_score(f[2], false, f[3]), ARGV[1])
return 1
)lua"};

const Script kRelease{"release", kPrelude + R"lua(
if not holds(KEYS[1], ARGV[2], ARGV[3]) then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', -1)
local f = redis.call('HMGET', KEYS[1], 'priority', 'seq')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued')
redis.call('HDEL', KEYS[1], 'owner')
redis.call('ZADD', KEYS[3], ready_score(f[1], attempts > 0, f[2]), ARGV[1])
return 1
)lua"};

}  // namespace bulwark::detail::redis
