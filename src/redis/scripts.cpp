#include "redis/scripts.hpp"

namespace bulwark::detail::redis {

namespace {

// First line of the scripts that take, renew and end jobs: Redis 7 runs
// them even when it is out of memory (maxmemory with noeviction), so a full
// Redis drains its accepted jobs instead of stalling. Admission has no such
// line: it is refused (OOM) until jobs have ended. A Redis older than 7
// does not know the line; Connection::eval loads such a script without it.
const std::string kMayRunFull = "#!lua flags=allow-oom\n";

// Shared by every script: the ready order, retention trimming and fencing.
const std::string kPrelude = R"lua(
local function ready_score(priority, retry, seq)
  return (9 - tonumber(priority)) * 35184372088832 + (retry and 17592186044416 or 0) + tonumber(seq)
end
-- Forgets finished jobs (retention). `counts`, given for the done list:
-- the hash of how many succeeded and cancelled jobs it holds.
local function forget(zset, ids, job_prefix, index, counts)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', job_prefix .. id, 'state', 'kids_total')
    local state = f[1]
    if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
      redis.call('DEL', job_prefix .. id)
      if f[2] then
        local part = string.sub(job_prefix, 1, -5)
        redis.call('DEL', part .. 'kids:' .. id, part .. 'kids-ended:' .. id)
      end
      redis.call('ZREM', index, id)
      if counts and state ~= 'failed' then redis.call('HINCRBY', counts, state, -1) end
    end
    redis.call('ZREM', zset, id)
  end
end
-- Retention: entries finished before `cutoff` ms (at most 1000 a call), then
-- the oldest beyond `keep`.
local function trim(zset, keep, cutoff, job_prefix, index, counts)
  forget(zset, redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000), job_prefix, index, counts)
  local excess = redis.call('ZCARD', zset) - keep
  if excess > 0 then forget(zset, redis.call('ZRANGE', zset, 0, excess - 1), job_prefix, index, counts) end
end
-- Ends go on the ended stream, for whoever follows ends: one entry per
-- call, its fields the ids ended and its values their states.
local function ended_many(stream, pairs)
  if #pairs > 0 then redis.call('XADD', stream, 'MAXLEN', '~', 10000, '*', unpack(pairs)) end
end
local function ended(stream, id, state)
  ended_many(stream, {id, state})
end
-- One command for many arguments (`args` flat, an even count per call so
-- score/member pairs stay whole), in slices Lua's stack can take.
local function bulk(command, key, args)
  for i = 1, #args, 4000 do
    redis.call(command, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end
-- Flows. A queue's part prefix ("{ns:q}:") from its job prefix.
local function part_of(job_prefix) return string.sub(job_prefix, 1, -5) end
-- A child's outcome as its parent lists it (entry JSON), for ends written
-- here rather than by a worker: cancelled, or failed as a parent.
local function child_entry(id, type, state, kind, message, removed)
  local e = {id = id, type = type, state = state, error = {kind = kind, type = '', message = message}}
  if removed then e.removed = true end
  return cjson.encode(e)
end
-- Retention of a flow: a member's record stays out of the retention lists
-- while its flow's root has not ended (kept in the root's part, in
-- <part>flow-kept:<root>); the root's end lets them all in. On a cluster a
-- member in another slot than its root is retained as any job.
local function kept(part, key, id, state, now, cluster)
  local f = redis.call('HMGET', key, 'root', 'root_part')
  if not f[1] or (cluster == '1' and f[2] ~= part) then return false end
  local rs = redis.call('HGET', f[2] .. 'job:' .. f[1], 'state')
  if not rs or rs == 'succeeded' or rs == 'failed' or rs == 'cancelled' then return false end
  redis.call('ZADD', f[2] .. 'flow-kept:' .. f[1], now, (state == 'failed' and 'D' or 'F') .. part .. '\n' .. id)
  return true
end
local function release_kept(part, root, now)
  local key = part .. 'flow-kept:' .. root
  -- Retained from the root's end on, just before the root itself.
  local at = tonumber(now) - 1
  local into, order = {}, {}  -- list key -> {score, id, ...}
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local flag, p, id = string.match(m, '^(.)(.-)\n(.*)$')
    if id then
      local list = p .. (flag == 'D' and 'dead' or 'done')
      if not into[list] then
        into[list] = {}
        table.insert(order, list)
      end
      table.insert(into[list], at)
      table.insert(into[list], id)
    end
  end
  for _, list in ipairs(order) do bulk('ZADD', list, into[list]) end
  redis.call('DEL', key)
end
-- A job that ended: into its retention list, or kept for its flow's root.
local function retain(part, id, state, now, cluster)
  local key = part .. 'job:' .. id
  if not kept(part, key, id, state, now, cluster) then
    redis.call('ZADD', part .. (state == 'failed' and 'dead' or 'done'), now, id)
  end
  local f = redis.call('HMGET', key, 'kids_total', 'parent')
  if f[1] and not f[2] then release_kept(part, id, now) end  -- a flow's root
end
-- Children of parent `pid` (in part `pp`) ended: `kids` holds {id, state,
-- policy, entry} each (`entry`: how the parent lists it). Each is counted
-- once (its entry is written only if it has none). Returns what became of
-- the parent: 'failed' (a child under policy fail), 'released' (its last
-- children), or nil; for 'failed' also why and the parent's type.
local function children_ended(pp, pid, kids, now, cluster)
  local pkey, ended_key = pp .. 'job:' .. pid, pp .. 'kids-ended:' .. pid
  local ids = {}
  for i, k in ipairs(kids) do ids[i] = k[1] end
  local have = redis.call('HMGET', ended_key, unpack(ids))
  local fresh, n, counted, failing = {}, 0, {}, nil
  for i, k in ipairs(kids) do
    if not have[i] then
      table.insert(fresh, k[1])
      table.insert(fresh, k[4])
      n = n + 1
      counted[k[2]] = (counted[k[2]] or 0) + 1
      if k[2] ~= 'succeeded' and k[3] == 'fail' and not failing then failing = k end
    end
  end
  if n == 0 then return nil end
  redis.call('HSET', ended_key, unpack(fresh))
  for st, c in pairs(counted) do
    redis.call('HINCRBY', pkey, st == 'succeeded' and 'kids_succeeded' or (st == 'failed' and 'kids_failed' or 'kids_cancelled'), c)
  end
  local f = redis.call('HMGET', pkey, 'state', 'priority', 'seq', 'due_ms', 'type')
  if f[1] ~= 'waiting_children' then return nil end
  local left = redis.call('HINCRBY', pkey, 'pending', -n)
  if failing or left <= 0 then redis.call('ZREM', pp .. 'waiting', pid) end
  if failing then
    local e = cjson.decode(failing[4])
    local why = 'child ' .. failing[1] .. ' (' .. tostring(e.type) .. ') ' .. failing[2]
    if type(e.error) == 'table' then why = why .. ': ' .. tostring(e.error.kind) .. ': ' .. tostring(e.error.message) end
    redis.call('HSET', pkey, 'state', 'failed', 'finished_ms', now,
               'outcome', cjson.encode({duration_ms = 0, error = {kind = 'child_failed', type = '', message = why}}))
    retain(pp, pid, 'failed', now, cluster)
    ended(pp .. 'ended', pid, 'failed')
    -- Its children in its own part that have not started end cancelled now
    -- (the others when a process would fetch them).
    for _, sid in ipairs(redis.call('LRANGE', pp .. 'kids:' .. pid, 0, -1)) do
      local skey = pp .. 'job:' .. sid
      local sf = redis.call('HMGET', skey, 'state', 'type', 'policy')
      if sf[1] == 'queued' or sf[1] == 'scheduled' then
        redis.call('ZREM', pp .. 'ready', sid)
        redis.call('ZREM', pp .. 'scheduled', sid)
        redis.call('ZREM', pp .. 'held', sid)
        redis.call('HSET', skey, 'state', 'cancelled', 'finished_ms', now)
        retain(pp, sid, 'cancelled', now, cluster)
        redis.call('HINCRBY', pp .. 'counts', 'cancelled', 1)
        ended(pp .. 'ended', sid, 'cancelled')
        local se = child_entry(sid, sf[2], 'cancelled', 'cancelled', 'its parent failed before it ran', sf[3] == 'remove')
        if redis.call('HSETNX', ended_key, sid, se) == 1 then redis.call('HINCRBY', pkey, 'kids_cancelled', 1) end
      end
    end
    return 'failed', why, f[5]
  end
  if left > 0 then return nil end
  if tonumber(f[4] or '0') > tonumber(now) then
    redis.call('HSET', pkey, 'state', 'scheduled')
    redis.call('ZADD', pp .. 'scheduled', f[4], pid)
  else
    redis.call('HSET', pkey, 'state', 'queued')
    redis.call('ZADD', pp .. 'ready', ready_score(f[2], false, f[3]), pid)
  end
  return 'released'
end
local function child_ended(pp, pid, cid, state, policy, entry, now, cluster)
  return children_ended(pp, pid, {{cid, state, policy, entry}}, now, cluster)
end
-- A parent failed by its child is in turn a child that failed: its own
-- parent hears of it (see notify_parent, below).
-- Job `id` (in part `part`) ended in `state`: if it is a flow's child, its
-- parent counts it here when the parent's keys may be touched from this
-- script (one Redis, or the same slot); otherwise it is put on the part's
-- relay set, for a process to carry to the parent's slot (kChildEnded). A
-- parent failed by its child is in turn a child ended, up the tree.
local function notify_parent(part, id, state, entry, now, cluster)
  while true do
    local f = redis.call('HMGET', part .. 'job:' .. id, 'parent', 'parent_part', 'policy')
    if not f[1] then return end
    if cluster == '1' and f[2] ~= part then
      redis.call('HSET', part .. 'job:' .. id, 'entry', entry)
      redis.call('ZADD', part .. 'relay', now, id)
      return
    end
    local became, why, ptype = child_ended(f[2], f[1], id, state, f[3], entry, now, cluster)
    if became ~= 'failed' then return end
    part, id, state = f[2], f[1], 'failed'
    local up = redis.call('HGET', part .. 'job:' .. id, 'policy')
    entry = child_entry(id, ptype, 'failed', 'child_failed', why, up == 'remove')
  end
end
-- Whether `owner` still holds the lease it took under `fence`.
local function holds(key, owner, fence)
  local f = redis.call('HMGET', key, 'owner', 'fence', 'state')
  return f[1] == owner and f[2] == fence and f[3] == 'running'
end
)lua";

}  // namespace

const Script kEnqueue{"enqueue", kPrelude + R"lua(
local capacity, prefix, elsewhere, queue_capacity, queue = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]),
                                                           tonumber(ARGV[4]), ARGV[6]
-- Waiting in this queue: ready, scheduled and held for a paused type.
local here = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
local out, taken, accepted, locked = {}, {}, 0, {}
-- A flow (jobs with a parent or children) is admitted whole or not at all.
local whole = false
for i = 7, #ARGV, 21 do
  if ARGV[i + 14] ~= '' or ARGV[i + 18] ~= '' then whole = true end
end
for i = 7, #ARGV, 21 do
  local id, lock, parent_of = ARGV[i], ARGV[i + 10], ARGV[i + 18] ~= ''
  -- A parent waits for its children outside the queue: it takes no place.
  local places = parent_of and 0 or 1
  local holder = nil
  if lock ~= '' then
    holder = locked[lock]
    if not holder then
      local h = redis.call('GET', lock)
      -- A holder whose record retention forgot no longer holds the key.
      if h and redis.call('EXISTS', prefix .. h) == 1 then holder = h end
    end
  end
  if holder then
    table.insert(out, {holder, redis.call('HGET', prefix .. holder, 'state') or 'queued'})
  elseif taken[id] or redis.call('EXISTS', prefix .. id) == 1 then
    table.insert(out, -1)
  elseif places > 0 and here + elsewhere >= capacity then
    table.insert(out, -2)
  elseif places > 0 and queue_capacity > 0 and here >= queue_capacity then
    table.insert(out, -3)
  else
    taken[id] = true
    if lock ~= '' then locked[lock] = id end
    here = here + places
    accepted = accepted + 1
    table.insert(out, 0)  -- its sequence number below
  end
end
if whole and accepted < #out then
  for k, v in ipairs(out) do if v == 0 then out[k] = -4 end end  -- not admitted: another job of the flow was refused
  return out
end
if accepted == 0 then return out end
-- The namespace's sequence: counted here for the default queue (same
-- slot), reserved by the caller for the others.
local seq = #KEYS >= 5 and redis.call('INCRBY', KEYS[5], accepted) - accepted or tonumber(ARGV[5])
local index, ready, scheduled = {}, {}, {}
local part = part_of(prefix)
for k, i in ipairs(out) do
  if i == 0 then
    local a = 7 + (k - 1) * 21
    local id, priority, due, now = ARGV[a], ARGV[a + 3], tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
    seq = seq + 1
    out[k] = seq
    local delayed = due > now
    redis.call('HSET', prefix .. id, 'id', id, 'type', ARGV[a + 1], 'payload', ARGV[a + 2], 'priority', priority,
      'max_attempts', ARGV[a + 4], 'timeout_ms', ARGV[a + 5], 'seq', seq, 'created_ms', ARGV[a + 7], 'attempts', 0,
      'state', delayed and 'scheduled' or 'queued', 'retry', '0')
    if ARGV[a + 14] ~= '' then  -- a flow's child: its parent, and its flow's root
      redis.call('HSET', prefix .. id, 'parent', ARGV[a + 14], 'parent_part', ARGV[a + 15], 'parent_queue', ARGV[a + 16],
                 'policy', ARGV[a + 17], 'root', ARGV[a + 19], 'root_part', ARGV[a + 20])
    end
    if queue ~= '' then redis.call('HSET', prefix .. id, 'queue', queue) end
    if ARGV[a + 8] ~= '' then
      redis.call('HSET', prefix .. id, 'traceparent', ARGV[a + 8], 'tracestate', ARGV[a + 9])
    end
    if ARGV[a + 10] ~= '' then
      redis.call('SET', ARGV[a + 10], id, 'PX', ARGV[a + 11])
      redis.call('HSET', prefix .. id, 'unique_key', ARGV[a + 12])
    end
    if ARGV[a + 13] ~= '' then redis.call('HSET', prefix .. id, 'then', ARGV[a + 13]) end
    table.insert(index, seq)
    table.insert(index, id)
    if ARGV[a + 18] ~= '' then
      -- A parent: its children's ids, one per line; it waits for them.
      local kids = {}
      for kid in string.gmatch(ARGV[a + 18], '[^\n]+') do table.insert(kids, kid) end
      redis.call('HSET', prefix .. id, 'state', 'waiting_children', 'pending', #kids, 'kids_total', #kids, 'due_ms', due)
      redis.call('ZADD', part .. 'waiting', seq, id)
      for j = 1, #kids, 4000 do redis.call('RPUSH', part .. 'kids:' .. id, unpack(kids, j, math.min(j + 3999, #kids))) end
    else
      local into = delayed and scheduled or ready
      table.insert(into, delayed and due or ready_score(priority, false, seq))
      table.insert(into, id)
    end
  end
end
bulk('ZADD', KEYS[1], index)
bulk('ZADD', KEYS[2], ready)
bulk('ZADD', KEYS[3], scheduled)
return out
)lua"};

const Script kFetch{"fetch", kMayRunFull + kPrelude + R"lua(
local out, leased, held = {}, {}, {}
local parent_states = {}  -- a flow's parents' states, read once per call
local paused, any_paused, cluster = {}, #ARGV >= 7, ARGV[6] or '0'
for i = 7, #ARGV do paused[ARGV[i]] = true end
local popped = redis.call('ZPOPMIN', KEYS[3], tonumber(ARGV[1]))
local deadline = tonumber(ARGV[2]) + tonumber(ARGV[3])
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = ARGV[5] .. id
  local f = redis.call('HMGET', key, 'state', 'type', 'payload', 'priority', 'max_attempts', 'timeout_ms', 'seq',
                       'retry', 'created_ms', 'attempts', 'started_ms', 'traceparent', 'tracestate', 'then', 'queue',
                       'parent', 'parent_part', 'policy', 'kids_total')
  local orphan = false
  if f[16] and (cluster ~= '1' or f[17] == part_of(ARGV[5])) then
    local pk = f[17] .. 'job:' .. f[16]
    if parent_states[pk] == nil then parent_states[pk] = redis.call('HGET', pk, 'state') or 'gone' end
    orphan = parent_states[pk] ~= 'waiting_children'
  end
  if f[1] == 'queued' and orphan then
    -- Its parent ended (a sibling failed it, or it was cancelled): it does
    -- not run; it ends cancelled.
    local part = part_of(ARGV[5])
    redis.call('HSET', key, 'state', 'cancelled', 'finished_ms', ARGV[2])
    retain(part, id, 'cancelled', ARGV[2], cluster)
    redis.call('HINCRBY', part .. 'counts', 'cancelled', 1)
    ended(part .. 'ended', id, 'cancelled')
    child_ended(f[17], f[16], id, 'cancelled', f[18],
                child_entry(id, f[2], 'cancelled', 'cancelled', 'its parent ended before it ran', f[18] == 'remove'), ARGV[2],
                cluster)
  elseif f[1] == 'queued' and any_paused and paused[f[2]] then
    -- Its type is paused: set aside, still queued, until resumed.
    table.insert(held, popped[i + 1])
    table.insert(held, id)
  elseif f[1] == 'queued' then
    local attempts = tonumber(f[10]) + 1
    local fence = redis.call('HINCRBY', key, 'fence', 1)
    if f[11] then
      redis.call('HSET', key, 'state', 'running', 'owner', ARGV[4], 'retry', '0', 'attempts', attempts)
    else
      redis.call('HSET', key, 'state', 'running', 'owner', ARGV[4], 'retry', '0', 'attempts', attempts,
                 'started_ms', ARGV[2])
    end
    table.insert(leased, deadline)
    table.insert(leased, id)
    local row = {id, f[2], f[3], f[4], f[5], f[6], tostring(attempts), f[7], f[8], f[9], f[12] or '',
                 f[13] or '', f[14] or '', tostring(fence), f[15] or '', f[16] or '', f[18] or ''}
    if f[19] then
      -- A parent: how its children ended, in their order.
      local part = part_of(ARGV[5])
      local kids = redis.call('LRANGE', part .. 'kids:' .. id, 0, -1)
      local entries = {}
      for j = 1, #kids, 1000 do
        local got = redis.call('HMGET', part .. 'kids-ended:' .. id, unpack(kids, j, math.min(j + 999, #kids)))
        for k = 1, #got do if got[k] then table.insert(entries, got[k]) end end
      end
      table.insert(row, entries)
    end
    table.insert(out, row)
  end
end
bulk('ZADD', KEYS[1], leased)
bulk('ZADD', KEYS[2], held)
return out
)lua"};

const Script kProgress{"progress", kMayRunFull + kPrelude + R"lua(
if not holds(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
return 1
)lua"};

const Script kAck{"ack", kMayRunFull + kPrelude + R"lua(
local owner, now, prefix, cluster = ARGV[1], ARGV[2], ARGV[7], ARGV[8]
local part = part_of(prefix)
local out, unleased, done, dead, scheduled, ends, counted = {}, {}, {}, {}, {}, {}, {}
-- Flows: children by parent (counted there per parent, once per call), the
-- roots' states as first read here, the members kept for their roots, and
-- the roots that ended.
local parents, parent_order, roots_seen, kept_by_root, kept_order, roots = {}, {}, {}, {}, {}, {}
for i = 9, #ARGV, 7 do
  local id, fence, how, state, outcome, due, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                                                    ARGV[i + 5], ARGV[i + 6]
  local key = prefix .. id
  if not holds(key, owner, fence) then
    table.insert(out, redis.call('HGET', key, 'owner') or '')
  else
    table.insert(unleased, id)
    if how == 'retry' then
      redis.call('HSET', key, 'state', 'scheduled', 'outcome', outcome, 'retry', '1')
      table.insert(scheduled, due)
      table.insert(scheduled, id)
    else
      redis.call('HSET', key, 'state', state, 'outcome', outcome, 'finished_ms', now)
      local list = state == 'failed' and dead or done
      if entry == '' or entry == '*' then
        -- A plain job, or a flow's root ("*"): retained now (a root lets its flow in below).
        table.insert(list, now)
        table.insert(list, id)
        if entry == '*' then table.insert(roots, id) end
      else
        -- A flow's child: kept while its root waits; its parent counts it.
        local f = redis.call('HMGET', key, 'parent', 'parent_part', 'policy', 'root', 'root_part')
        local keep = false
        if f[4] and (cluster ~= '1' or f[5] == part) then
          local root_key = f[5] .. 'job:' .. f[4]
          local rs = roots_seen[root_key]
          if rs == nil then
            rs = redis.call('HGET', root_key, 'state') or 'gone'
            roots_seen[root_key] = rs
          end
          if rs ~= 'succeeded' and rs ~= 'failed' and rs ~= 'cancelled' and rs ~= 'gone' then
            keep = true
            local kk = f[5] .. 'flow-kept:' .. f[4]
            if not kept_by_root[kk] then
              kept_by_root[kk] = {}
              table.insert(kept_order, kk)
            end
            table.insert(kept_by_root[kk], now)
            table.insert(kept_by_root[kk], (state == 'failed' and 'D' or 'F') .. part .. '\n' .. id)
          end
        end
        if not keep then
          table.insert(list, now)
          table.insert(list, id)
        end
        if f[1] and cluster == '1' and f[2] ~= part then
          redis.call('HSET', key, 'entry', entry)  -- for the process that relays it
          redis.call('ZADD', part .. 'relay', now, id)
        elseif f[1] then
          local pk = f[2] .. '\n' .. f[1]
          if not parents[pk] then
            parents[pk] = {f[2], f[1], {}}
            table.insert(parent_order, pk)
          end
          table.insert(parents[pk][3], {id, state, f[3], entry})
        end
      end
      if state ~= 'failed' then counted[state] = (counted[state] or 0) + 1 end
      table.insert(ends, id)
      table.insert(ends, state)
    end
    table.insert(out, 1)
  end
end
bulk('ZREM', KEYS[1], unleased)
bulk('ZADD', KEYS[7], scheduled)
bulk('ZADD', KEYS[2], done)
bulk('ZADD', KEYS[3], dead)
ended_many(KEYS[5], ends)
for state, n in pairs(counted) do redis.call('HINCRBY', KEYS[6], state, n) end
for _, kk in ipairs(kept_order) do bulk('ZADD', kk, kept_by_root[kk]) end
-- Parents count their children (a parent failed by one is in turn a child
-- that failed, up the tree); then the roots that ended let their flows in.
for _, pk in ipairs(parent_order) do
  local pp, pid, kids = parents[pk][1], parents[pk][2], parents[pk][3]
  local became, why, ptype = children_ended(pp, pid, kids, now, cluster)
  if became == 'failed' then
    local up = redis.call('HGET', pp .. 'job:' .. pid, 'policy')
    notify_parent(pp, pid, 'failed', child_entry(pid, ptype, 'failed', 'child_failed', why, up == 'remove'), now, cluster)
  end
end
for _, root in ipairs(roots) do release_kept(part, root, now) end
if #done > 0 then trim(KEYS[2], tonumber(ARGV[3]), ARGV[5], prefix, KEYS[4], KEYS[6]) end
if #dead > 0 then trim(KEYS[3], tonumber(ARGV[4]), ARGV[6], prefix, KEYS[4]) end
return out
)lua"};

const Script kExtend{"extend", kMayRunFull + kPrelude + R"lua(
if not holds(KEYS[1], ARGV[2], ARGV[3]) then return redis.call('HGET', KEYS[1], 'owner') or '' end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
)lua"};

// Due jobs from scheduled to ready, and held jobs whose type is no longer
// paused (ARGV[4..]: the types paused now) back to ready.
const Script kPromote{"promote", kMayRunFull + kPrelude + R"lua(
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
if redis.call('ZCARD', KEYS[3]) > 0 then
  local paused = {}
  for i = 4, #ARGV do paused[ARGV[i]] = true end
  local held = redis.call('ZRANGE', KEYS[3], 0, 999, 'WITHSCORES')
  local back, ids = {}, {}
  for i = 1, #held, 2 do
    if not paused[redis.call('HGET', ARGV[3] .. held[i], 'type') or ''] then
      table.insert(back, held[i + 1])
      table.insert(back, held[i])
      table.insert(ids, held[i])
    end
  end
  bulk('ZREM', KEYS[3], ids)
  bulk('ZADD', KEYS[2], back)
end
return #due
)lua"};

const Script kRecover{"recover", kMayRunFull + kPrelude + R"lua(
-- The row's 16th field (when the holder was last seen) is the caller's to
-- fill: the process list lives under the namespace's tag.
local now, owner, deadline, prefix = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(expired) do
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'type', 'payload', 'priority', 'max_attempts', 'timeout_ms', 'seq',
                       'retry', 'created_ms', 'attempts', 'traceparent', 'tracestate', 'then', 'owner', 'cancel',
                       'queue', 'parent', 'policy', 'kids_total')
  if f[1] == 'running' then
    -- Taken over by this process, which ends the lost attempt as every
    -- failed attempt ends; a new fence shuts the old holder out.
    local fence = redis.call('HINCRBY', key, 'fence', 1)
    redis.call('HSET', key, 'owner', owner, 'lost_ms', now)
    redis.call('ZADD', KEYS[1], deadline, id)
    table.insert(out, {id, f[2], f[3], f[4], f[5], f[6], f[10], f[7], f[8], f[9], f[11] or '', f[12] or '',
                       f[13] or '', tostring(fence), f[14] or '', '0', f[15] or '0', f[16] or '', f[17] or '',
                       f[18] or '', f[19] or ''})
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
)lua"};

// Retention of both lists by age (the ack script trims by count as it adds).
const Script kTrim{"trim", kMayRunFull + kPrelude + R"lua(
trim(KEYS[1], tonumber(ARGV[2]), ARGV[4], ARGV[1], KEYS[3])
trim(KEYS[2], tonumber(ARGV[3]), ARGV[5], ARGV[1], KEYS[3], KEYS[4])
return 1
)lua"};

const Script kPublishEvents{"publish_events", kMayRunFull + R"lua(
local count = #ARGV - 1
local n = redis.call('INCRBY', KEYS[2], count) - count
for i = 2, #ARGV do
  n = n + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], n .. '-1', 'e', ARGV[i])
end
return n
)lua"};

const Script kCancel{"cancel", kMayRunFull + kPrelude + R"lua(
-- KEYS: job, done, index, ended, counts, ready, scheduled, held; ARGV[6]:
-- the cancel channel (the namespace's: not a key of this slot).
-- ARGV[7]: '1' on a cluster (a flow's parent elsewhere hears by relay).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'queued' or state == 'scheduled' or state == 'waiting_children' then
  redis.call('ZREM', KEYS[6], ARGV[1])
  redis.call('ZREM', KEYS[7], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', ARGV[2])
  retain(part_of(ARGV[4]), ARGV[1], 'cancelled', ARGV[2], ARGV[7] or '0')
  if state == 'waiting_children' then redis.call('ZREM', part_of(ARGV[4]) .. 'waiting', ARGV[1]) end
  redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
  trim(KEYS[2], tonumber(ARGV[3]), ARGV[5], ARGV[4], KEYS[3], KEYS[5])
  ended(KEYS[4], ARGV[1], 'cancelled')
  local f = redis.call('HMGET', KEYS[1], 'parent', 'policy', 'type')
  if f[1] then
    notify_parent(part_of(ARGV[4]), ARGV[1], 'cancelled',
                  child_entry(ARGV[1], f[3], 'cancelled', 'cancelled', 'cancelled before it ran', f[2] == 'remove'),
                  ARGV[2], ARGV[7] or '0')
  end
  return state == 'waiting_children' and 4 or 1
end
if state == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', ARGV[6], ARGV[1])
  return 2
end
return 3
)lua"};

// A flow's child's end carried to its parent's slot (a relay, on a
// cluster): KEYS[1] the parent's job key; ARGV: the parent's part, its id,
// the child's id, state, policy and entry, now, the cluster flag. Counted
// once however often it is carried. 1 if it counted now.
const Script kChildEnded{"child_ended", kMayRunFull + kPrelude + R"lua(
local became, why, ptype = child_ended(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if became == 'failed' then
  local up = redis.call('HGET', KEYS[1], 'policy')
  notify_parent(ARGV[1], ARGV[2], 'failed', child_entry(ARGV[2], ptype, 'failed', 'child_failed', why, up == 'remove'),
                ARGV[7], ARGV[8])
end
return became and 1 or 0
)lua"};

const Script kRequeue{"requeue", kMayRunFull + kPrelude + R"lua(
-- KEYS: job, dead, ready, scheduled, held; ARGV[3]: jobs waiting in the
-- other queues (as last counted).
local f = redis.call('HMGET', KEYS[1], 'state', 'priority', 'seq')
if not f[1] then return 0 end
if f[1] ~= 'failed' then return -1 end
local waiting = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5])
if waiting + tonumber(ARGV[3]) >= tonumber(ARGV[2]) then return -2 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'retry', '0')
redis.call('HDEL', KEYS[1], 'outcome', 'finished_ms', 'cancel')
redis.call('ZADD', KEYS[3], ready_score(f[2], false, f[3]), ARGV[1])
return 1
)lua"};

const Script kRelease{"release", kMayRunFull + kPrelude + R"lua(
if not holds(KEYS[1], ARGV[2], ARGV[3]) then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', -1)
local f = redis.call('HMGET', KEYS[1], 'priority', 'seq')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued')
redis.call('HDEL', KEYS[1], 'owner')
redis.call('ZADD', KEYS[3], ready_score(f[1], attempts > 0, f[2]), ARGV[1])
return 1
)lua"};

// One queue's jobs by state: queued (ready and held), scheduled, running,
// failed, succeeded, cancelled.
const Script kCounts{"counts", R"lua(
local split = redis.call('HMGET', KEYS[3], 'succeeded', 'cancelled')
return {redis.call('ZCARD', KEYS[5]) + redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[6]),
        redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), tonumber(split[1] or 0), tonumber(split[2] or 0),
        KEYS[7] and redis.call('ZCARD', KEYS[7]) or nil}
)lua"};

}  // namespace bulwark::detail::redis
