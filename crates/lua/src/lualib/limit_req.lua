-- resty.limit.req: nginx's leaky bucket (limit_req) on a shared dict, with the API of
-- lua-resty-limit-traffic. Written for Outpost; state is "excess last" as text.
local ngx_now = ngx.now
local tonumber = tonumber
local max = math.max
local abs = math.abs
local setmetatable = setmetatable

local _M = { _VERSION = "0.08" }
local mt = { __index = _M }

function _M.new(dict_name, rate, burst)
    local dict = ngx.shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(rate > 0 and burst >= 0)
    return setmetatable({ dict = dict, rate = rate * 1000, burst = burst * 1000 }, mt)
end

local function decode(v)
    local e, l = v:match("^(%S+) (%S+)$")
    return tonumber(e), tonumber(l)
end

function _M.incoming(self, key, commit)
    local dict = self.dict
    local rate = self.rate
    local now = ngx_now() * 1000
    local excess
    local v = dict:get(key)
    if v then
        local e, last = decode(v)
        local elapsed = now - last
        excess = max(e - rate * abs(elapsed) / 1000 + 1000, 0)
        if excess > self.burst then
            return nil, "rejected"
        end
    else
        excess = 0
    end
    if commit then
        dict:set(key, excess .. " " .. now)
    end
    return excess / rate, excess / 1000
end

function _M.uncommit(self, key)
    local dict = self.dict
    local v = dict:get(key)
    if not v then
        return nil, "not found"
    end
    local e, last = decode(v)
    e = max(e - 1000, 0)
    dict:set(key, e .. " " .. last)
    return true
end

function _M.set_rate(self, rate)
    self.rate = rate * 1000
end

function _M.set_burst(self, burst)
    self.burst = burst * 1000
end

return _M
