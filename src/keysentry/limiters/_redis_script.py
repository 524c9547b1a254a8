"""The Redis limiter's Lua script, and the RESP packing of the commands that run it."""

from __future__ import annotations

import hashlib
from typing import Final

from keysentry.core.ratelimit import Limit

__all__ = ["LOAD", "SCRIPT", "SHA", "resp", "spec"]

SCRIPT: Final = """
-- keysentry rate limits: check every counter, then count against all of them, or none.
-- KEYS[i]: one string per counter, "s l c p" (s: window start ms, l: its length, c: count
--   in the window, p: count in the one before), expiring with its windows
-- ARGV[1]: the time in ms, or -1 to take it from Redis (the default: one clock for all)
-- ARGV[i + 1]: "window length ms, max requests, sliding 1/0, calendar month 1/0"
-- returns "now admitted current_1 previous_1 current_2 previous_2 ..." (admitted: 1/0)
-- (one string each way: redis-py packs and parses each element, which costs more than
-- the whole script)

-- a*b <= c*d, exactly, for a, c < 2^31 and b, d < 2^33 (doubles are exact below 2^53)
local function mul_le(a, b, c, d)
  local x1, x0 = a * math.floor(b / 65536), a * (b % 65536)
  local y1, y0 = c * math.floor(d / 65536), c * (d % 65536)
  x1, x0 = x1 + math.floor(x0 / 65536), x0 % 65536
  y1, y0 = y1 + math.floor(y0 / 65536), y0 % 65536
  if x1 ~= y1 then return x1 < y1 end
  return x0 <= y0
end

-- start and length (ms) of the UTC calendar month holding now (days_from_civil, H. Hinnant)
local function month(now)
  local days = math.floor(now / 86400000)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local len = 31
  if m == 4 or m == 6 or m == 9 or m == 11 then len = 30
  elseif m == 2 then
    len = ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) and 29 or 28
  end
  return (days - day + 1) * 86400000, len * 86400000
end

local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local out = {now, 1}
local starts, lengths, currents, previous = {}, {}, {}, {}
-- one read for every counter; MGET answers nil for a missing key (and for a counter left
-- in another layout by an older version, which the SET below then replaces)
local states = redis.call('MGET', unpack(KEYS))
for i = 1, #KEYS do
  local w, m, sliding, monthly = string.match(ARGV[i + 1], '(%d+),(%d+),(%d),(%d)')
  local length, max = tonumber(w), tonumber(m)
  local start
  if monthly == '1' then start, length = month(now) else start = now - now % length end
  local curr, prev = 0, 0
  local state = states[i]
  if state then
    local s, l, c, p = string.match(state, '(%d+) (%d+) (%d+) (%d+)')
    s, l, c = tonumber(s), tonumber(l), tonumber(c)
    if s == start then
      curr, prev = c, tonumber(p)
    elseif s ~= nil and s + l == start then
      prev = c
    end
  end
  local room = max - curr - 1
  if room < 0 or (sliding == '1' and prev > 0
      and not mul_le(prev, length - (now - start), room, length)) then
    out[2] = 0
  end
  starts[i], lengths[i], currents[i], previous[i] = start, length, curr, prev
  out[2 * i + 1], out[2 * i + 2] = curr, prev
end
if out[2] == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i],
      starts[i] .. ' ' .. lengths[i] .. ' ' .. (currents[i] + 1) .. ' ' .. previous[i],
      'PX', 2 * lengths[i] + 1000)
  end
end
return table.concat(out, ' ')  -- integers below 2^47: printed exactly (%.14g)
"""


SHA: Final = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


def spec(limit: Limit) -> str:
    """The script's description of *limit* (formatting it costs less than a dict lookup
    keyed by the rule, whose hash covers every field)."""
    return (
        f"{limit.window_ms},{limit.max_requests},{int(limit.sliding)},"
        f"{int(limit.calendar == 'month')}"
    )


def resp(*parts: str | int) -> bytes:
    """A command in RESP, the Redis protocol: an array of bulk strings (what redis-py's
    packer writes; ours needs no connection, so a command is packed once and kept)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


# sent before the command when Redis does not know the script (a new, restarted or flushed
# server): both go in one write, and the two replies are read in order
LOAD: Final = resp("SCRIPT", "LOAD", SCRIPT)
