-- wrk script for `cargo xtask bench`: method and body from the environment
-- (WRK_METHOD, WRK_BODY_FILE), and a machine-readable summary line with
-- p50/p99/p99.9 that gw-bench parses.
local method = os.getenv("WRK_METHOD")
if method then
   wrk.method = method
end
local body_file = os.getenv("WRK_BODY_FILE")
if body_file then
   local f = assert(io.open(body_file, "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"connect_errors\":%d,\"read_errors\":%d,\"write_errors\":%d,\"status_errors\":%d,\"timeouts\":%d,\"p50_us\":%d,\"p99_us\":%d,\"p999_us\":%d,\"max_us\":%d}\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
