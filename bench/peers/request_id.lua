-- wrk script for bench/peers/peers.sh: every request is GET /home with a fresh random 6-digit
-- X-Request-Id, the key the three load balancers hash on. The request is built by one string
-- concatenation rather than wrk.format, which walks the headers table on every call: the client is
-- the bottleneck of the direct-to-replica ceiling, so its cost per request is kept small.
local prefix, suffix

init = function(args)
  math.randomseed(tonumber(args[1]) or os.time())
  prefix = "GET /home HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port .. "\r\nX-Request-Id: "
  suffix = "\r\n\r\n"
end

request = function()
  return prefix .. math.random(100000, 999999) .. suffix
end
