-- apply_scrape(KEYS=[markets, unavailable, meta, snapshots, changes, ready, alerts],
--              ARGV=[mode, event_id, bookmaker, scraped_us, scraped_iso, completeness,
--                    expire_at_ms, present_blob, digest, rejected_blob, n,
--                    key_1, payload_1, ..., key_n, payload_n, [kickoff_us,
--                    [base_id, listed, missing_blob]]])
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
--   digest        the client's digest of the scrape (of its full form, whatever form is sent):
--                 recognises an exact re-delivery
--   rejected_blob "" or a msgpack list of the markets the client quarantined, copied into
--                 the change record's "rejected" field (see availability/records.py)
--   key_i         canonical market field "<id>@<line>"; payload_i canonical msgpack of the market,
--                 or "" for a held market: one the client rejected although its key could be
--                 read. It is present (never stamped; if it was unavailable it becomes available
--                 again with its stored payload) and keeps its stored payload; without one it
--                 is ignored (no row is made out of nothing).
--   kickoff_us    optional argument after the markets: the event's kickoff, integer
--                 microseconds since the epoch, or "" (not known). Kept in meta "kickoff_us" (a
--                 scrape without one keeps the stored one) and copied into the change record.
--   alerts        the shard's zset of snapshots with unavailable markets, member
--                 "<event_id>:<bookmaker>", score the kickoff in microseconds ("inf" when not known)
--
-- The short form (three more arguments after kickoff_us; complete scrapes only, no held
-- market) is sent by a worker that remembers the snapshot as its own last application left
-- it: meta "applied_id" is the stream id of the snapshot's last applied record, so it names
-- the stored state exactly (every application sets a new one; warm-up and expiry remove it).
--   base_id       the applied_id the worker remembers
--   listed        how many markets the scrape lists (n of them are sent: the others are
--                 unchanged, stored with the payload the worker remembers)
--   missing_blob  msgpack list of the stored fields the scrape does not list
-- Only the markets whose payload differs from the remembered one travel, and the script
-- reads stored payloads only for them and for the few the change record needs. When
-- applied_id is not base_id (another worker applied a scrape meanwhile), or the stored
-- markets do not match the worker's account of them (HLEN, a missing field not stored), it
-- replies {"resend"} having written nothing: the worker sends the full form.
--
-- Reply: {"applied", new, changed, unchanged, {stamped fields}, {cleared fields}, stream id,
--         {stored fields a complete scrape did not list}}
--      | {"duplicate", <the reply's items after "applied">}  this exact scrape was the last one
--                                     applied (a retried call): what that application did
--      | {"stale", last_scraped_us}   the scrape is not newer than the last one applied
--      | {"cold"}                     the shard has not been warmed (Redis lost its data)
--      | {"resend"}                   short form only: send the full form (nothing written)
-- Errors are raised before the first write, so a rejected call writes nothing.

local find, match, sub, byte = string.find, string.match, string.sub, string.byte
local ARGV, KEYS = ARGV, KEYS
local unpack_one, pack = cmsgpack.unpack_one, cmsgpack.pack
local unpack = unpack

local function fail(what)
  return redis.error_reply('ERR availability: ' .. what)
end

local function is_uint(s)
  return type(s) == 'string' and match(s, '^%d+$') ~= nil and #s <= 16
end

-- ---------------------------------------------------------------- validate everything first
if #KEYS ~= 7 then return fail('expected 7 keys, got ' .. #KEYS) end
local mode, event_id, bookmaker = ARGV[1], ARGV[2], ARGV[3]
local scraped_us, scraped_iso, completeness = ARGV[4], ARGV[5], ARGV[6]
local expire_at_ms, present_blob, digest, rejected_blob = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local FIRST = 12  -- ARGV index of key_1
if mode ~= 'scrape' and mode ~= 'removed' then return fail('mode: expected scrape or removed, got ' .. tostring(mode)) end
if type(event_id) ~= 'string' or not match(event_id, '^%-?[1-9]%d*$') or #event_id - (string.byte(event_id) == 45 and 1 or 0) > 16 then return fail('event_id: expected a non-zero integer (negative for competitor-only events), got ' .. tostring(event_id)) end
if type(bookmaker) ~= 'string' or #bookmaker == 0 then return fail('bookmaker: expected a slug') end
if not is_uint(scraped_us) then return fail('scraped_us: expected integer microseconds, got ' .. tostring(scraped_us)) end
if type(scraped_iso) ~= 'string' or #scraped_iso ~= 27 then return fail('scraped_iso: expected YYYY-MM-DDTHH:MM:SS.ffffffZ, got ' .. tostring(scraped_iso)) end
if completeness ~= 'complete' and completeness ~= 'partial' and completeness ~= 'empty' then
  return fail('completeness: expected complete, partial or empty, got ' .. tostring(completeness))
end
if not is_uint(expire_at_ms) then return fail('expire_at_ms: expected an integer, got ' .. tostring(expire_at_ms)) end
if type(digest) ~= 'string' or #digest == 0 or #digest > 64 then return fail('digest: expected 1 to 64 bytes') end
if type(rejected_blob) ~= 'string' then return fail('rejected_blob: expected a string') end
if #rejected_blob > 0 then
  local ok, offset, r = pcall(unpack_one, rejected_blob)
  if not ok or offset ~= -1 or type(r) ~= 'table' then return fail('rejected_blob: expected a msgpack list') end
end
if not is_uint(ARGV[11]) then return fail('n: expected an integer, got ' .. tostring(ARGV[11])) end
local n = tonumber(ARGV[11])
local LAST = FIRST - 1 + 2 * n
local short = #ARGV == LAST + 4
if #ARGV ~= LAST and #ARGV ~= LAST + 1 and not short then
  return fail('expected ' .. LAST .. ' arguments for ' .. n .. ' markets (and an optional kickoff, '
              .. 'or a kickoff and the short form\'s three), got ' .. #ARGV)
end
local kickoff = ARGV[LAST + 1] or ''
if kickoff ~= '' and not is_uint(kickoff) then return fail('kickoff: expected integer microseconds or empty, got ' .. tostring(kickoff)) end
local base_id, listed, missing_listed = nil, n, nil
if short then
  base_id = ARGV[LAST + 2]
  if #base_id == 0 then return fail('base_id: expected the applied_id the worker remembers') end
  if not is_uint(ARGV[LAST + 3]) then return fail('listed: expected an integer, got ' .. tostring(ARGV[LAST + 3])) end
  listed = tonumber(ARGV[LAST + 3])
  if mode ~= 'scrape' or completeness ~= 'complete' then return fail('the short form is for complete scrapes only') end
  if listed < n then return fail('listed: ' .. listed .. ' markets listed, ' .. n .. ' sent') end
  local ok, offset, m = pcall(unpack_one, ARGV[LAST + 4])
  if not ok or offset ~= -1 or type(m) ~= 'table' then return fail('missing_blob: expected a msgpack list') end
  missing_listed = m
end
if completeness == 'empty' and n ~= 0 then return fail('completeness empty with ' .. n .. ' markets') end
if completeness == 'complete' and listed == 0 then return fail('completeness complete with no markets (say empty explicitly)') end
if mode == 'removed' and (n ~= 0 or completeness ~= 'empty') then return fail('mode removed takes no markets') end

-- present[field] = its index in ARGV; the compare step below turns it into true
-- (stored, same payload), false (stored, other payload) or 'held' (stored, held).
-- (In the short form it holds the markets sent, and false for each missing one.)
local present = {}
for i = FIRST, LAST, 2 do
  local key = ARGV[i]
  if #key < 2 or not find(key, '@', 1, true) then return fail('market ' .. (i - FIRST) / 2 + 1 .. ': field ' .. key .. ' is not <id>@<line>') end
  if present[key] then return fail('market ' .. key .. ': duplicate field (merge rows before sending)') end
  present[key] = i
end
if short then
  for i = FIRST + 1, LAST, 2 do
    if #ARGV[i] == 0 then return fail('market ' .. ARGV[i - 1] .. ': a held market is sent in the full form only') end
  end
  for j = 1, #missing_listed do
    local key = missing_listed[j]
    -- (only a stored field is ever stamped: one that is not makes the call a resend)
    if type(key) ~= 'string' then return fail('missing_blob: item ' .. j .. ' is not a field') end
    if present[key] ~= nil then return fail('missing_blob: ' .. key .. ' is sent or listed twice') end
    present[key] = false
  end
end

-- A payload must be a market (a positional msgpack array, schema 2) for the field
-- it is stored under: readers decode every stored payload.
local function is_market(key, payload)
  local ok, offset, m = pcall(unpack_one, payload)
  if not ok or offset ~= -1 or type(m) ~= 'table' then return false end
  local id = m[1]
  if type(id) ~= 'string' or type(m[2]) ~= 'string' or type(m[7]) ~= 'table' then return false end
  -- the field is "<id>@<line>", and the line part holds no '@'
  local at = #id + 1
  return #key > at and byte(key, at) == 64 and sub(key, 1, at - 1) == id and not find(key, '@', at + 1, true)
end

-- ---------------------------------------------------------------- cold and stale checks
if redis.call('EXISTS', KEYS[6]) == 0 then return {'cold'} end
local meta_before = redis.call('HMGET', KEYS[3], 'last_scraped_us', 'expire_at_ms', 'removed_at',
                               'last_digest', 'applied_id', 'kickoff_us', 'last_complete_us')
local last = meta_before[1]
if last and tonumber(scraped_us) <= tonumber(last) then
  if scraped_us == last and meta_before[4] == digest then
    local last_reply = redis.call('HGET', KEYS[3], 'last_reply')
    if last_reply then
      local reply = cmsgpack.unpack(last_reply)
      table.insert(reply, 1, 'duplicate')
      return reply
    end
  end
  return {'stale', last}
end
if short and meta_before[5] ~= base_id then return {'resend'} end

-- unpack() is limited to ~8000 values, so multi-field commands go in chunks.
local function chunked(command, key, flat, step)
  for i = 1, #flat, step do
    redis.call(command, key, unpack(flat, i, math.min(i + step - 1, #flat)))
  end
end

local writes, record, became_available, became_unavailable, stamps = {}, {}, {}, {}, {}
local new, changed, unchanged = 0, 0, 0
local stamped_keys = redis.call('HKEYS', KEYS[2])
local stamped_before = {}
for i = 1, #stamped_keys do stamped_before[stamped_keys[i]] = true end
local stored_count
local not_listed  -- the stored fields a complete scrape did not list (in the reply)

if short then
  -- ---------------------------------------------------------------- short form: compare
  -- Stored payloads of the markets sent, of the listed ones that come back ('a') and of
  -- the missing ones to stamp ('u'): nothing else is read.
  -- (the appends count in locals: no '#' of a growing table in these loops)
  local want, w = {}, 0
  for i = FIRST, LAST, 2 do w = w + 1; want[w] = ARGV[i] end
  local first_u = w + 1
  for j = 1, #missing_listed do
    if not stamped_before[missing_listed[j]] then w = w + 1; want[w] = missing_listed[j] end
  end
  local first_a = w + 1
  for j = 1, #stamped_keys do
    local key = stamped_keys[j]
    if present[key] == nil then w = w + 1; want[w] = key end
  end
  local got
  if w <= 4000 then
    got = w > 0 and redis.call('HMGET', KEYS[1], unpack(want)) or {}
  else
    got = {}
    for i = 1, w, 4000 do
      local part = redis.call('HMGET', KEYS[1], unpack(want, i, math.min(i + 3999, w)))
      for j = 1, #part do got[i + j - 1] = part[j] end
    end
  end
  -- the worker's account of the stored markets must hold: every market it says is
  -- stored is, and they are all there is
  for j = first_u, w do
    if not got[j] then return {'resend'} end
  end
  local sent_stored = 0
  for j = 1, first_u - 1 do
    if got[j] then sent_stored = sent_stored + 1 end
  end
  stored_count = redis.call('HLEN', KEYS[1])
  if stored_count ~= listed - n + sent_stored + #missing_listed then return {'resend'} end
  local j = 0
  for i = FIRST, LAST, 2 do
    j = j + 1
    if ARGV[i + 1] ~= got[j] and not is_market(ARGV[i], ARGV[i + 1]) then
      return fail('market ' .. ARGV[i] .. ': payload is not a market for this field')
    end
  end
  local nw, nr, na, nu, ns = 0, 0, 0, 0, 0
  j = 0
  for i = FIRST, LAST, 2 do
    j = j + 1
    local key, payload, old = ARGV[i], ARGV[i + 1], got[j]
    local flags
    if old == payload then
      unchanged = unchanged + 1
    else
      if old then
        changed = changed + 1; flags = 'c'
      else
        new = new + 1; flags = 'n'
      end
      writes[nw + 1] = key; writes[nw + 2] = payload; nw = nw + 2
    end
    if stamped_before[key] then
      na = na + 1; became_available[na] = key
      flags = (flags == 'c' and 'ca') or (flags == 'n' and 'na') or 'a'
    end
    if flags then
      record[nr + 1] = key; record[nr + 2] = payload; record[nr + 3] = flags; nr = nr + 3
    end
  end
  unchanged = unchanged + listed - n
  for k = first_a, w do
    na = na + 1; became_available[na] = want[k]
    record[nr + 1] = want[k]; record[nr + 2] = got[k]; record[nr + 3] = 'a'; nr = nr + 3
  end
  for k = first_u, first_a - 1 do
    local key = want[k]
    nu = nu + 1; became_unavailable[nu] = key
    stamps[ns + 1] = key; stamps[ns + 2] = scraped_iso; ns = ns + 2
    record[nr + 1] = key; record[nr + 2] = got[k]; record[nr + 3] = 'u'; nr = nr + 3
  end
  not_listed = missing_listed
else
  -- ---------------------------------------------------------------- full form: compare (read each hash once)
  not_listed = {}
  local stored_flat = redis.call('HGETALL', KEYS[1])
  stored_count = #stored_flat / 2
  -- one pass over the stored markets: compare the present ones, collect the others
  local missing = {}  -- indexes in stored_flat of stored fields this scrape did not list
  local held_payload = {}  -- stored payload of each held market that has one
  for i = 1, #stored_flat, 2 do
    local at = present[stored_flat[i]]
    if at then
      if #ARGV[at + 1] == 0 then
        present[stored_flat[i]] = 'held'; held_payload[stored_flat[i]] = stored_flat[i + 1]
      else
        present[stored_flat[i]] = (ARGV[at + 1] == stored_flat[i + 1])
      end
    else
      missing[#missing + 1] = i
    end
  end

  -- every payload that will be stored must be a market (unchanged ones equal stored bytes;
  -- an empty one is a held market, never stored)
  for i = FIRST, LAST, 2 do
    if #ARGV[i + 1] > 0 and present[ARGV[i]] ~= true and not is_market(ARGV[i], ARGV[i + 1]) then
      return fail('market ' .. ARGV[i] .. ': payload is not a market for this field')
    end
  end

  for i = FIRST, LAST, 2 do
    local key = ARGV[i]
    local same = present[key]
    local flags
    if #ARGV[i + 1] == 0 then
      -- held: present with its stored payload (a held market without one is ignored)
      if same == 'held' and stamped_before[key] then
        became_available[#became_available + 1] = key
        record[#record + 1] = key; record[#record + 1] = held_payload[key]; record[#record + 1] = 'a'
      end
    elseif same == true then
      unchanged = unchanged + 1
    else
      if same == false then
        changed = changed + 1; flags = 'c'
      else
        new = new + 1; flags = 'n'
      end
      writes[#writes + 1] = key; writes[#writes + 1] = ARGV[i + 1]
    end
    if #ARGV[i + 1] > 0 then
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
    elseif same == 'held' and not stamped_before[key] and completeness == 'partial' then
      -- a held market a partial scrape listed is confirmed like an unchanged one (stored payload)
      record[#record + 1] = key; record[#record + 1] = held_payload[key]; record[#record + 1] = 'p'
    end
  end
  if completeness ~= 'partial' then
    for j = 1, #missing do
      local i = missing[j]
      local key = stored_flat[i]
      if completeness == 'complete' then not_listed[#not_listed + 1] = key end
      if not stamped_before[key] then
        became_unavailable[#became_unavailable + 1] = key
        stamps[#stamps + 1] = key; stamps[#stamps + 1] = scraped_iso
        record[#record + 1] = key; record[#record + 1] = stored_flat[i + 1]; record[#record + 1] = 'u'
      end
    end
  end
end

-- ---------------------------------------------------------------- write
chunked('HSET', KEYS[1], writes, 4000)
chunked('HDEL', KEYS[2], became_available, 4000)
chunked('HSET', KEYS[2], stamps, 4000)

local total = stored_count + new
local unavailable = #stamped_keys - #became_available + #became_unavailable
local meta = {'event_id', event_id, 'bookmaker', bookmaker, 'last_scraped_us', scraped_us,
              'last_scraped_at', scraped_iso, 'markets', total, 'unavailable', unavailable}
if new + changed > 0 then meta[#meta + 1] = 'captured_at'; meta[#meta + 1] = scraped_iso end
if kickoff ~= '' then meta[#meta + 1] = 'kickoff_us'; meta[#meta + 1] = kickoff else kickoff = meta_before[6] or '' end
if completeness == 'complete' then meta[#meta + 1] = 'last_complete_us'; meta[#meta + 1] = scraped_us end
if listed > 0 then
  meta[#meta + 1] = 'last_confirmed_at'; meta[#meta + 1] = scraped_iso
  if meta_before[3] then redis.call('HDEL', KEYS[3], 'removed_at') end
end
-- the first time it was seen gone from the listing, kept until it is listed again
if mode == 'removed' then redis.call('HSETNX', KEYS[3], 'removed_at', scraped_iso) end
-- score 0 for all members: the index is read by lexical range (ZRANGEBYLEX)
redis.call('ZADD', KEYS[4], 0, event_id .. ':' .. bookmaker)
-- the alerts index: snapshots with unavailable markets, by kickoff
if unavailable > 0 then
  redis.call('ZADD', KEYS[7], kickoff ~= '' and kickoff or 'inf', event_id .. ':' .. bookmaker)
else
  redis.call('ZREM', KEYS[7], event_id .. ':' .. bookmaker)
end
-- A scrape without an expiry keeps the one an earlier scrape set, so a hash
-- created later (e.g. the first stamp) never outlives the others.
if expire_at_ms == '0' then expire_at_ms = meta_before[2] or '0' end
if expire_at_ms ~= '0' then
  meta[#meta + 1] = 'expire_at_ms'; meta[#meta + 1] = expire_at_ms
end

-- One change record per applied scrape: the flushers need nothing else, so
-- expiring cache keys never lose a change, and PostgreSQL's last applied
-- scrape time never lags Redis's (warm-up keeps refusing stale scrapes).
-- ("rejected" only when there are any: records without it read as "none rejected", by old
-- code too.) Passed straight to XADD: no table built for it.
local stream_id
if #rejected_blob > 0 then
  stream_id = redis.call('XADD', KEYS[5], '*', 'v', '2', 'kind', mode, 'event', event_id, 'bookmaker', bookmaker,
                   'scraped_at', scraped_us, 'completeness', completeness,
                   'present', present_blob, 'markets', pack(record), 'kickoff', kickoff,
                   'prev_complete', meta_before[7] or '', 'rejected', rejected_blob)
else
  stream_id = redis.call('XADD', KEYS[5], '*', 'v', '2', 'kind', mode, 'event', event_id, 'bookmaker', bookmaker,
                   'scraped_at', scraped_us, 'completeness', completeness,
                   'present', present_blob, 'markets', pack(record), 'kickoff', kickoff,
                   'prev_complete', meta_before[7] or '')
end
local result = {new, changed, unchanged, became_unavailable, became_available, stream_id}
-- kept so that a retried call of this very scrape learns what it did; applied_id names the
-- state this application left (the short form's base_id)
meta[#meta + 1] = 'last_digest'; meta[#meta + 1] = digest
meta[#meta + 1] = 'last_reply'; meta[#meta + 1] = pack(result)
meta[#meta + 1] = 'applied_id'; meta[#meta + 1] = stream_id
redis.call('HSET', KEYS[3], unpack(meta))
if expire_at_ms ~= '0' then
  for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], expire_at_ms) end
end
-- the full form tells the worker the stored fields it did not list (SnapshotMemory); the
-- short form's worker sent them
if not short then result[#result + 1] = not_listed end
table.insert(result, 1, 'applied')
return result
