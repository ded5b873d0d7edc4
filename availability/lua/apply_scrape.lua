-- apply_scrape(KEYS=[markets, unavailable, meta, snapshots, changes, ready],
--              ARGV=[mode, event_id, bookmaker, scraped_us, scraped_iso, completeness,
--                    expire_at_ms, present_blob, digest, n, key_1, payload_1, ..., key_n, payload_n])
--
-- One scrape of one event at one bookmaker, applied atomically with
-- compare-and-set semantics. All KEYS share one hash tag (one cluster slot).
--
--   mode          "scrape", or "removed" (the event left the bookmaker's listing; n = 0)
--   scraped_us    scrape time, integer microseconds since the epoch; scraped_iso the same as text
--   completeness  "complete" (n > 0: markets missing from it are stamped unavailable),
--                 "partial" (never stamps), "empty" (n = 0: the caller confirmed the
--                 event really has no markets; stamps everything)
--   expire_at_ms  0, or a Unix time in ms at which the event's keys expire
--   present_blob  msgpack list of the present market fields, copied into the change record
--   digest        the client's digest of every other argument: recognises an exact re-delivery
--   key_i         canonical market field "<id>@<line>"; payload_i canonical msgpack of the market
--
-- Reply: {"applied", new, changed, unchanged, {stamped fields}, {cleared fields}, stream id or ""}
--      | {"duplicate", <the reply's items after "applied">}  this exact scrape was the last one
--                                     applied (a retried call): what that application did
--      | {"stale", last_scraped_us}   the scrape is not newer than the last one applied
--      | {"cold"}                     the shard has not been warmed (Redis lost its data)
-- Errors are raised before the first write, so a rejected call writes nothing.

local find = string.find

local function fail(what)
  return redis.error_reply('ERR availability: ' .. what)
end

local function is_uint(s)
  return type(s) == 'string' and string.match(s, '^%d+$') ~= nil and #s <= 16
end

-- ---------------------------------------------------------------- validate everything first
if #KEYS ~= 6 then return fail('expected 6 keys, got ' .. #KEYS) end
local mode, event_id, bookmaker = ARGV[1], ARGV[2], ARGV[3]
local scraped_us, scraped_iso, completeness = ARGV[4], ARGV[5], ARGV[6]
local expire_at_ms, present_blob, digest = ARGV[7], ARGV[8], ARGV[9]
local FIRST = 11  -- ARGV index of key_1
if mode ~= 'scrape' and mode ~= 'removed' then return fail('mode: expected scrape or removed, got ' .. tostring(mode)) end
if type(event_id) ~= 'string' or not string.match(event_id, '^%-?[1-9]%d*$') or #(event_id:gsub('^%-', '')) > 16 then return fail('event_id: expected a non-zero integer (negative for competitor-only events), got ' .. tostring(event_id)) end
if type(bookmaker) ~= 'string' or #bookmaker == 0 then return fail('bookmaker: expected a slug') end
if not is_uint(scraped_us) then return fail('scraped_us: expected integer microseconds, got ' .. tostring(scraped_us)) end
if type(scraped_iso) ~= 'string' or #scraped_iso ~= 27 then return fail('scraped_iso: expected YYYY-MM-DDTHH:MM:SS.ffffffZ, got ' .. tostring(scraped_iso)) end
if completeness ~= 'complete' and completeness ~= 'partial' and completeness ~= 'empty' then
  return fail('completeness: expected complete, partial or empty, got ' .. tostring(completeness))
end
if not is_uint(expire_at_ms) then return fail('expire_at_ms: expected an integer, got ' .. tostring(expire_at_ms)) end
if type(digest) ~= 'string' or #digest == 0 or #digest > 64 then return fail('digest: expected 1 to 64 bytes') end
if not is_uint(ARGV[10]) then return fail('n: expected an integer, got ' .. tostring(ARGV[10])) end
local n = tonumber(ARGV[10])
local LAST = FIRST - 1 + 2 * n
if #ARGV ~= LAST then return fail('expected ' .. LAST .. ' arguments for ' .. n .. ' markets, got ' .. #ARGV) end
if completeness == 'empty' and n ~= 0 then return fail('completeness empty with ' .. n .. ' markets') end
if completeness == 'complete' and n == 0 then return fail('completeness complete with no markets (say empty explicitly)') end
if mode == 'removed' and (n ~= 0 or completeness ~= 'empty') then return fail('mode removed takes no markets') end

-- present[field] = its index in ARGV; the compare step below turns it into true
-- (stored, same payload) or false (stored, other payload).
local present = {}
for i = FIRST, LAST, 2 do
  local key = ARGV[i]
  if #key < 2 or not find(key, '@', 1, true) then return fail('market ' .. (i - FIRST) / 2 + 1 .. ': field ' .. key .. ' is not <id>@<line>') end
  if #ARGV[i + 1] == 0 then return fail('market ' .. key .. ': empty payload') end
  if present[key] then return fail('market ' .. key .. ': duplicate field (merge rows before sending)') end
  present[key] = i
end

-- A payload must be a market (a positional msgpack array, schema 2) for the field
-- it is stored under: readers decode every stored payload.
local function is_market(key, payload)
  local ok, offset, m = pcall(cmsgpack.unpack_one, payload)
  if not ok or offset ~= -1 or type(m) ~= 'table' then return false end
  local id = m[1]
  if type(id) ~= 'string' or type(m[2]) ~= 'string' or type(m[7]) ~= 'table' then return false end
  -- the field is "<id>@<line>", and the line part holds no '@'
  return #key > #id + 1 and string.sub(key, 1, #id + 1) == id .. '@' and not find(key, '@', #id + 2, true)
end

-- ---------------------------------------------------------------- cold and stale checks
if redis.call('EXISTS', KEYS[6]) == 0 then return {'cold'} end
local meta_before = redis.call('HMGET', KEYS[3], 'last_scraped_us', 'expire_at_ms', 'removed_at',
                               'last_digest', 'last_reply', 'last_complete_us')
local last = meta_before[1]
if last and tonumber(scraped_us) <= tonumber(last) then
  if scraped_us == last and meta_before[4] == digest and meta_before[5] then
    local reply = cmsgpack.unpack(meta_before[5])
    table.insert(reply, 1, 'duplicate')
    return reply
  end
  return {'stale', last}
end

-- ---------------------------------------------------------------- compare (read each hash once)
local stored_flat = redis.call('HGETALL', KEYS[1])
-- one pass over the stored markets: compare the present ones, collect the others
local missing = {}  -- indexes in stored_flat of stored fields this scrape did not list
for i = 1, #stored_flat, 2 do
  local at = present[stored_flat[i]]
  if at then
    present[stored_flat[i]] = (ARGV[at + 1] == stored_flat[i + 1])
  else
    missing[#missing + 1] = i
  end
end
local stamped_keys = redis.call('HKEYS', KEYS[2])
local stamped_before = {}
for i = 1, #stamped_keys do stamped_before[stamped_keys[i]] = true end

-- every payload that will be stored must be a market (unchanged ones equal stored bytes)
for i = FIRST, LAST, 2 do
  if present[ARGV[i]] ~= true and not is_market(ARGV[i], ARGV[i + 1]) then
    return fail('market ' .. ARGV[i] .. ': payload is not a market for this field')
  end
end

local writes, record, became_available, became_unavailable, stamps = {}, {}, {}, {}, {}
local new, changed, unchanged = 0, 0, 0
for i = FIRST, LAST, 2 do
  local key = ARGV[i]
  local same = present[key]
  local flags
  if same == true then
    unchanged = unchanged + 1
  else
    if same == false then
      changed = changed + 1; flags = 'c'
    else
      new = new + 1; flags = 'n'
    end
    writes[#writes + 1] = key; writes[#writes + 1] = ARGV[i + 1]
  end
  if stamped_before[key] then
    became_available[#became_available + 1] = key; flags = (flags or '') .. 'a'
  end
  -- a partial scrape says nothing about the markets it did not list, so the markets it
  -- did list unchanged are confirmed one by one ('p'); a complete scrape confirms all
  -- of them at once (the record's scraped_at, with completeness "complete")
  if not flags and completeness == 'partial' then flags = 'p' end
  if flags then
    record[#record + 1] = key; record[#record + 1] = ARGV[i + 1]; record[#record + 1] = flags
  end
end
if completeness ~= 'partial' then
  for j = 1, #missing do
    local i = missing[j]
    local key = stored_flat[i]
    if not stamped_before[key] then
      became_unavailable[#became_unavailable + 1] = key
      stamps[#stamps + 1] = key; stamps[#stamps + 1] = scraped_iso
      record[#record + 1] = key; record[#record + 1] = stored_flat[i + 1]; record[#record + 1] = 'u'
    end
  end
end

-- ---------------------------------------------------------------- write
-- unpack() is limited to ~8000 values, so multi-field commands go in chunks.
local function chunked(command, key, flat, step)
  for i = 1, #flat, step do
    redis.call(command, key, unpack(flat, i, math.min(i + step - 1, #flat)))
  end
end
chunked('HSET', KEYS[1], writes, 4000)
chunked('HDEL', KEYS[2], became_available, 4000)
chunked('HSET', KEYS[2], stamps, 4000)

local total = #stored_flat / 2 + new
local unavailable = #stamped_keys - #became_available + #became_unavailable
local meta = {'event_id', event_id, 'bookmaker', bookmaker, 'last_scraped_us', scraped_us,
              'last_scraped_at', scraped_iso, 'markets', total, 'unavailable', unavailable}
if new + changed > 0 then meta[#meta + 1] = 'captured_at'; meta[#meta + 1] = scraped_iso end
if completeness == 'complete' then meta[#meta + 1] = 'last_complete_us'; meta[#meta + 1] = scraped_us end
if n > 0 then
  meta[#meta + 1] = 'last_confirmed_at'; meta[#meta + 1] = scraped_iso
  if meta_before[3] then redis.call('HDEL', KEYS[3], 'removed_at') end
end
redis.call('HSET', KEYS[3], unpack(meta))
-- the first time it was seen gone from the listing, kept until it is listed again
if mode == 'removed' then redis.call('HSETNX', KEYS[3], 'removed_at', scraped_iso) end
-- score 0 for all members: the index is read by lexical range (ZRANGEBYLEX)
redis.call('ZADD', KEYS[4], 0, event_id .. ':' .. bookmaker)
-- A scrape without an expiry keeps the one an earlier scrape set, so a hash
-- created later (e.g. the first stamp) never outlives the others.
if expire_at_ms == '0' then expire_at_ms = meta_before[2] or '0' end
if expire_at_ms ~= '0' then
  redis.call('HSET', KEYS[3], 'expire_at_ms', expire_at_ms)
  for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], expire_at_ms) end
end

-- One change record per applied scrape: the flushers need nothing else, so
-- expiring cache keys never lose a change, and PostgreSQL's last applied
-- scrape time never lags Redis's (warm-up keeps refusing stale scrapes).
local stream_id = redis.call('XADD', KEYS[5], '*',
    'v', '2', 'kind', mode, 'event', event_id, 'bookmaker', bookmaker,
    'scraped_at', scraped_us, 'completeness', completeness,
    'present', present_blob, 'markets', cmsgpack.pack(record),
    'prev_complete', meta_before[6] or '')
local result = {new, changed, unchanged, became_unavailable, became_available, stream_id}
-- kept so that a retried call of this very scrape learns what it did
redis.call('HSET', KEYS[3], 'last_digest', digest, 'last_reply', cmsgpack.pack(result))
table.insert(result, 1, 'applied')
return result
