-- wrk script for the serving benchmark.
--
--   wrk ... -s bench/wrk/load.lua URL -- <path> <run prefix> <bodies file> <ids dir> [rate/s]
--
-- Sends POST <path> with bodies taken in turn from <bodies file> (one JSON document per
-- line) and a unique X-Request-ID per request ("<run prefix>-<thread>-<n>"), so the rows
-- a run logged can be counted. Every 2xx response's X-Request-ID (echoed by the service)
-- is written to <ids dir>/<run prefix>-<thread>.ids, so the benchmark can check each
-- answered request against the log. With a rate, each thread sends on a fixed schedule
-- (rate / threads per second) instead of as fast as it can: the latency run at a chosen
-- load.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

local path, prefix, bodies, ids, interval_ms, next_slot
local sent = 0

function init(args)
  path, prefix = args[1], args[2]
  bodies = {}
  for line in io.lines(args[3]) do
    if #line > 0 then
      table.insert(bodies, line)
    end
  end
  assert(#bodies > 0, "no request bodies in " .. args[3])
  ids = assert(io.open(args[4] .. "/" .. prefix .. "-" .. thread_number .. ".ids", "w"))
  local rate = tonumber(args[5] or "0")
  if rate > 0 then
    interval_ms = 1000 * tonumber(args[6] or "1") / rate -- args[6]: the number of threads
  end
end

function delay()
  if not interval_ms then
    return 0
  end
  local now = now_ms()
  if not next_slot or next_slot < now - 1000 then
    next_slot = now -- start, or fell far behind: do not burst to catch up
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return wait > 0 and wait or 0
end

function request()
  sent = sent + 1
  local body = bodies[(sent - 1) % #bodies + 1]
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["X-Request-ID"] = prefix .. "-" .. thread_number .. "-" .. sent,
  }, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ids:write((headers["x-request-id"] or headers["X-Request-ID"] or "?"), "\n")
  end
end

function done(summary, latency, requests)
  local out = {
    requests = summary.requests,
    duration_us = summary.duration,
    bytes = summary.bytes,
    errors_connect = summary.errors.connect,
    errors_read = summary.errors.read,
    errors_write = summary.errors.write,
    errors_status = summary.errors.status,
    errors_timeout = summary.errors.timeout,
    p50_us = latency:percentile(50),
    p90_us = latency:percentile(90),
    p95_us = latency:percentile(95),
    p99_us = latency:percentile(99),
    max_us = latency.max,
    mean_us = latency.mean,
  }
  local parts = {}
  for key, value in pairs(out) do
    table.insert(parts, string.format('"%s": %s', key, tostring(value)))
  end
  io.write("WRK_JSON {" .. table.concat(parts, ", ") .. "}\n")
end
