-- wrk script: send requests pipelined, DEPTH at a time.
--
--   wrk -s bench/pipeline.lua http://127.0.0.1:8080/ -- 16
--
-- Every write is DEPTH copies of the request wrk would send on its own;
-- wrk counts each response, so requests/s counts requests, not batches.

local batch

init = function(args)
   local depth = tonumber(args[1]) or 16
   local reqs = {}
   for i = 1, depth do
      reqs[i] = wrk.format()
   end
   batch = table.concat(reqs)
end

request = function()
   return batch
end
