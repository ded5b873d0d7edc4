-- warm_snapshot(KEYS=[markets, unavailable, meta, snapshots, alerts],
--               ARGV=[event_id, bookmaker, last_scraped_us,
--                     m, meta_name_1, meta_value_1, ..., meta_name_m, meta_value_m,
--                     n, field_1, payload_1, ..., field_n, payload_n,
--                     u, field_1, stamp_1, ..., field_u, stamp_u])
--
-- Reload one (event, bookmaker) snapshot from PostgreSQL after Redis lost its
-- data, atomically. All KEYS share one hash tag (one cluster slot).
--
--   last_scraped_us  the snapshot's last applied scrape, integer microseconds
--   meta pairs       the meta hash exactly as apply_scrape.lua writes it
--   field/payload    canonical market field "<id>@<line>" and canonical msgpack
--   field/stamp      unavailable markets: field and "YYYY-MM-DDTHH:MM:SS.ffffffZ"
--
-- Writes only when Redis holds no newer state of the snapshot (meta
-- last_scraped_us missing or older); then the snapshot is replaced whole.
--
-- Reply: {"warmed", n, u}               the snapshot was written
--      | {"newer", last_scraped_us}     Redis already had this scrape or a newer one: nothing written

local function fail(what)
  return redis.error_reply('ERR availability: ' .. what)
end

if #KEYS ~= 5 then return fail('expected 5 keys, got ' .. #KEYS) end
local event_id, bookmaker, scraped_us = ARGV[1], ARGV[2], ARGV[3]
if not string.match(scraped_us or '', '^%d+$') then
  return fail('last_scraped_us: expected integer microseconds, got ' .. tostring(scraped_us))
end

-- read the three sections of ARGV, validating the counts before any write
local pos = 4
local function section(name)
  local count = tonumber(ARGV[pos])
  if count == nil or count < 0 or pos + 2 * count > #ARGV then
    return nil, fail(name .. ': bad count ' .. tostring(ARGV[pos]))
  end
  local first = pos + 1
  pos = pos + 1 + 2 * count
  return {first, first + 2 * count - 1}, nil
end
local meta, err = section('meta')
if err then return err end
local markets, err2 = section('markets')
if err2 then return err2 end
local stamps, err3 = section('unavailable')
if err3 then return err3 end
if pos - 1 ~= #ARGV then return fail('expected ' .. (pos - 1) .. ' arguments, got ' .. #ARGV) end

local last = redis.call('HGET', KEYS[3], 'last_scraped_us')
if last and tonumber(last) >= tonumber(scraped_us) then return {'newer', last} end

redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
-- unpack() is limited to ~8000 values, so multi-field commands go in chunks.
local function hset_range(key, range)
  for i = range[1], range[2], 4000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 3999, range[2])))
  end
end
hset_range(KEYS[1], markets)
hset_range(KEYS[2], stamps)
hset_range(KEYS[3], meta)
redis.call('ZADD', KEYS[4], 0, event_id .. ':' .. bookmaker)
-- the alerts index, as apply_scrape.lua keeps it (score: kickoff_us from the meta pairs, or inf)
if stamps[2] >= stamps[1] then
  redis.call('ZADD', KEYS[5], redis.call('HGET', KEYS[3], 'kickoff_us') or 'inf', event_id .. ':' .. bookmaker)
else
  redis.call('ZREM', KEYS[5], event_id .. ':' .. bookmaker)
end
return {'warmed', (markets[2] - markets[1] + 1) / 2, (stamps[2] - stamps[1] + 1) / 2}
