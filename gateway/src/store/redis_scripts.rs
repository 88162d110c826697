//! Lua scripts of the Redis store. Each touches only keys of one topic (one
//! hash slot), so they are valid on Redis Cluster.

/// Appends events to one topic atomically. Redis does not roll a script
/// back when a command in it fails, so everything that could fail is
/// checked before the first write: the events of one topic are stored all
/// or none, and no sequence number is burnt by a failed append.
///
/// KEYS: meta hash, stream, then one key per event that has an idempotency key.
/// ARGV: candidate epoch, approximate max length, idempotency TTL (ms), event
/// count, the payload key prefix, then per event: idempotency KEYS index
/// (0 = none), has-type flag, type, data, TTL in ms (0 = none), priority
/// code. Returns per event `{epoch, seq, ts_ms, duplicate}`.
///
/// An event with a TTL keeps its payload in its own key (prefix, epoch and
/// seq, in the topic's hash slot) that Redis drops when the TTL ends: the
/// stream entry stays as the event's place in the topic, with `x` (expiry).
pub const APPEND: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local st = redis.call('TYPE', stream)['ok']
if st ~= 'stream' and st ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. stream .. ' holds a ' .. st .. ', not a stream')
end
local mt = redis.call('TYPE', meta)['ok']
if mt ~= 'hash' and mt ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. meta .. ' holds a ' .. mt .. ', not a hash')
end
for k = 3, #KEYS do
  local kt = redis.call('TYPE', KEYS[k])['ok']
  if kt ~= 'string' and kt ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. kt .. ', not a string')
  end
end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', meta, 'epoch', epoch, 'last', 0)
end
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxlen, ttl, n, payload = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local out = {}
local a = 6
for i = 1, n do
  local ik, has_type, etype, data = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local life, prio = tonumber(ARGV[a + 4]), ARGV[a + 5]
  a = a + 6
  local prev = false
  if ik > 0 then prev = redis.call('GET', KEYS[ik]) end
  if prev then
    local e, s, pts = string.match(prev, '^(%d+):(%d+):(%d+)$')
    out[i] = {e, s, pts, '1'}
  else
    local seq = redis.call('HINCRBY', meta, 'last', 1)
    local f = {'ts', ts}
    if life > 0 then
      f[#f + 1] = 'x'
      f[#f + 1] = ts + life
      redis.call('SET', payload .. epoch .. ':' .. seq, data, 'PX', life)
    else
      f[#f + 1] = 'd'
      f[#f + 1] = data
    end
    if prio ~= '1' then
      f[#f + 1] = 'p'
      f[#f + 1] = prio
    end
    if has_type == '1' then
      f[#f + 1] = 't'
      f[#f + 1] = etype
    end
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', unpack(f))
    if ik > 0 then
      redis.call('SET', KEYS[ik], epoch .. ':' .. seq .. ':' .. ts, 'PX', ttl)
    end
    out[i] = {tostring(epoch), tostring(seq), tostring(ts), '0'}
  end
end
return out
"#;

/// Drops a topic's history and sets a new epoch. KEYS: meta, stream. ARGV: new epoch.
pub const WIPE: &str = r#"
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'last', 0)
return 1
"#;

/// Compare-and-set of fields of one hash, then its expiry: the device
/// acknowledgements. The merge rule stays in Rust; this only makes sure no
/// other replica wrote in between. KEYS: the hash. ARGV: TTL (ms), field
/// count, then per field: name, expected value ('' = absent), new value.
/// Returns 1 when written, 0 when a field had changed.
pub const COMPARE_AND_SET: &str = r#"
local key, ttl, n = KEYS[1], ARGV[1], tonumber(ARGV[2])
local kt = redis.call('TYPE', key)['ok']
if kt ~= 'hash' and kt ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kt .. ', not a hash')
end
for i = 0, n - 1 do
  local cur = redis.call('HGET', key, ARGV[3 + 3 * i]) or ''
  if cur ~= ARGV[4 + 3 * i] then
    return 0
  end
end
for i = 0, n - 1 do
  redis.call('HSET', key, ARGV[3 + 3 * i], ARGV[5 + 3 * i])
end
redis.call('PEXPIRE', key, ttl)
return 1
"#;

/// Compare-and-set of a device's shadow. KEYS: its hash. ARGV: expected
/// version ('0' = none), new version, document, TTL (ms). Returns 1 when
/// written, 0 when the stored version was another.
pub const SHADOW_CAS: &str = r#"
local key = KEYS[1]
local kt = redis.call('TYPE', key)['ok']
if kt ~= 'hash' and kt ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kt .. ', not a hash')
end
local v = redis.call('HGET', key, 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', key, 'v', ARGV[2], 'doc', ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return 1
"#;
