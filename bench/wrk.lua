-- wrk script for `make bench`: every workload, chosen by the arguments after
-- wrk's `--`, and the latency percentiles wrk --latency does not print.
--
--   wrk -s bench/wrk.lua URL                    GET, wrk's own static request
--   wrk -s bench/wrk.lua URL -- pipeline 16     GET sent 16 at a time in one write
--   wrk -s bench/wrk.lua URL/echo -- post 4096  POST with a 4096-byte body
--
-- Pipelined, wrk counts each response, so requests/s counts requests, not
-- batches. At the end, one line for bench/run.sh, in microseconds:
--
--   LATENCY_US p50 p75 p90 p99 p99.9 max

local batch

init = function(args)
   local mode = args[1] or "get"
   if mode == "pipeline" then
      local depth = tonumber(args[2]) or 16
      local reqs = {}
      for i = 1, depth do
         reqs[i] = wrk.format()
      end
      batch = table.concat(reqs)
      -- Defining `request` makes wrk ask for every write; only here.
      request = function()
         return batch
      end
   elseif mode == "post" then
      local size = tonumber(args[2]) or 4096
      wrk.method = "POST"
      wrk.body = string.rep("x", size)
      wrk.headers["Content-Type"] = "application/octet-stream"
   elseif mode ~= "get" then
      error("bench/wrk.lua: unknown mode " .. mode .. " (get, pipeline DEPTH, post BYTES)")
   end
end

done = function(summary, latency, requests)
   io.write(string.format("LATENCY_US %d %d %d %d %d %d\n",
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max))
end
