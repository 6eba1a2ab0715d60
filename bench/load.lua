-- wrk script: POST one pre-made JSON body after another (each voter votes once), optionally
-- paced to a target rate, and print a JSON summary with status counts and latency
-- percentiles. Env: BODIES (file, one body a line), VOTE_PATH, RATE (requests/s, optional).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  local step = tonumber(os.getenv("THREADS") or "1")
  local n = 0
  for line in io.lines(os.getenv("BODIES")) do
    if n % step == id then
      table.insert(bodies, line)
    end
    n = n + 1
  end
  index = 0
  statuses = {}
  path = os.getenv("VOTE_PATH")
  local rate = tonumber(os.getenv("RATE") or "0")
  local connections = tonumber(os.getenv("CONNECTIONS") or "1")
  pause = 0
  if rate > 0 then
    pause = 1000 * connections / rate
  end
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  index = index + 1
  if index > #bodies then
    index = 1
  end
  return wrk.format("POST", path, nil, bodies[index])
end

function delay()
  return pause
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses")
    for status, count in pairs(seen) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "errors": %d, "p50_ms": %.3f, ' ..
    '"p99_ms": %.3f, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, table.concat(parts, ", ")))
end
