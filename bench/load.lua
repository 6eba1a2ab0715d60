-- wrk script: POST one pre-made vote after another, each voter once, optionally paced to a
-- target rate; prints one line `WRK_JSON {...}` with status counts, latency percentiles and
-- how late the paced sends were.
--
-- Env: BODIES, a file with one request a line, `path<TAB>json body`; THREADS, wrk's -t (each
-- thread takes every THREADS-th line); RATE, requests/s over all threads (0 or unset: as
-- fast as the server answers).
--
-- Pacing: wrk has no constant-rate mode, only a delay() before each request, and delay()
-- does not say which connection asks. So each thread keeps one schedule of send slots,
-- start + k * THREADS / RATE, and every delay() takes the next slot for whichever connection
-- is free: it returns the time until that slot, or 0 when the slot is past (late). The
-- offered rate is the target as long as a connection is free at each slot; a late send is
-- counted, and wrk's latency, measured from the send, does not include the lateness.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Content-Type"] = "application/json"
  prepared = {}
  local step = tonumber(os.getenv("THREADS") or "1")
  local n = 0
  for line in io.lines(os.getenv("BODIES")) do
    if n % step == id then
      local tab = line:find("\t", 1, true)
      table.insert(prepared, wrk.format("POST", line:sub(1, tab - 1), nil, line:sub(tab + 1)))
    end
    n = n + 1
  end
  index = 0
  statuses = {}
  local rate = tonumber(os.getenv("RATE") or "0")
  interval = 0
  if rate > 0 then
    interval = 1000 * step / rate
  end
  slot = 0
  started = nil
  late = 0
  max_lag_ms = 0
end

function request()
  index = index + 1
  if index > #prepared then
    index = 1
  end
  return prepared[index]
end

function delay()
  if interval == 0 then
    return 0
  end
  local now = now_ms()
  if started == nil then
    started = now
  end
  local due = started + slot * interval
  slot = slot + 1
  local wait = due - now
  if wait < -1 then
    late = late + 1
    if -wait > max_lag_ms then
      max_lag_ms = -wait
    end
  end
  if wait <= 0 then
    return 0
  end
  return math.floor(wait)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  local late_sends, max_lag = 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + count
    end
    late_sends = late_sends + thread:get("late")
    max_lag = math.max(max_lag, thread:get("max_lag_ms"))
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "errors": %d, "p50_ms": %.3f, ' ..
    '"p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "late_sends": %d, ' ..
    '"max_lag_ms": %.1f, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    late_sends, max_lag, table.concat(parts, ", ")))
end
