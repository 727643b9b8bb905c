-- wrk script for bench/peers/tls.sh: GET /home with a fresh random 6-digit X-Request-Id (the key the
-- load balancers hash on), as request_id.lua; with the second argument "close" every request also
-- says Connection: close, so every request is a new TLS connection.
local prefix, suffix

init = function(args)
  math.randomseed(tonumber(args[1]) or os.time())
  prefix = "GET /home HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. wrk.port .. "\r\nX-Request-Id: "
  suffix = args[2] == "close" and "\r\nConnection: close\r\n\r\n" or "\r\n\r\n"
end

request = function()
  return prefix .. math.random(100000, 999999) .. suffix
end
