-- wrk script: POST one V2 infer request body to every connection, over and over.
--
--   wrk -t1 -c32 -d10s -s loadtest/wrk/post.lua http://127.0.0.1:8080/v2/models/credit-scoring/infer
--
-- The body is a JSON infer request for the credit-scoring model (input "features", FP32
-- [-1, 8], batch 1). Another body: WRK_BODY_FILE=path/to/request.json wrk ... (read once).
-- At the end it prints the non-2xx count, which wrk's own summary only shows in total.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local path = os.getenv("WRK_BODY_FILE")
if path then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
else
  wrk.body = '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],'
    .. '"data":[0.12,-1.3,0.57,1.9,-0.44,0.08,1.21,-0.66]}]}'
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "requests %d, non-2xx %d, connect %d, read %d, write %d, timeout %d\n",
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout))
  io.write(string.format("p50 %dus p90 %dus p99 %dus p99.9 %dus max %dus\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
