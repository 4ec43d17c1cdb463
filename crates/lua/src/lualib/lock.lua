-- resty.lock for Outpost: a non-blocking lock on an ngx.shared dict, with lua-resty-lock's
-- API (new, lock, unlock, expire) and options (exptime, timeout, step, ratio, max_step).
-- Written for Outpost. Waiting uses ngx.sleep, so it yields to the event loop.

local ngx = ngx
local shared = ngx.shared
local sleep = ngx.sleep
local now = ngx.now
local setmetatable = setmetatable
local tostring = tostring

local _M = { _VERSION = "0.09" }
local mt = { __index = _M }

-- Each lock held gets a value of its own, so that an unlock never removes a lock that expired
-- and was taken by someone else meanwhile.
local serial = 0

-- The key still holds this lock's value (it did not expire and get taken by another).
local function still_ours(self)
    return self.dict:get(self.key) == self.value
end

function _M.new(_, dict_name, opts)
    local dict = shared[dict_name]
    if not dict then
        return nil, "dictionary not found"
    end
    opts = opts or {}
    local timeout = opts.timeout
    if timeout == nil then timeout = 5 end
    return setmetatable({
        dict = dict,
        exptime = opts.exptime or 30,
        timeout = timeout,
        step = opts.step or 0.001,
        ratio = opts.ratio or 2,
        max_step = opts.max_step or 0.5,
        key = nil,
        value = nil,
    }, mt)
end

function _M.lock(self, key)
    if not key then
        return nil, "nil key"
    end
    if self.key then
        return nil, "locked"
    end
    serial = serial + 1
    local value = tostring(ngx.worker.id()) .. ":" .. serial .. ":" .. now()
    local dict = self.dict
    local ok, err = dict:add(key, value, self.exptime)
    if ok then
        self.key, self.value = key, value
        return 0
    end
    if err ~= "exists" then
        return nil, err
    end
    local step, elapsed, timeout = self.step, 0, self.timeout
    while timeout > 0 do
        if step > timeout then step = timeout end
        sleep(step)
        elapsed = elapsed + step
        timeout = timeout - step
        ok, err = dict:add(key, value, self.exptime)
        if ok then
            self.key, self.value = key, value
            return elapsed
        end
        if err ~= "exists" then
            return nil, err
        end
        step = step * self.ratio
        if step <= 0 then step = 0.001 end
        if step > self.max_step then step = self.max_step end
    end
    return nil, "timeout"
end

function _M.unlock(self)
    local key = self.key
    if not key then
        return nil, "unlocked"
    end
    if still_ours(self) then
        self.dict:delete(key)
    end
    self.key, self.value = nil, nil
    return 1
end

function _M.expire(self, time)
    local key = self.key
    if not key then
        return nil, "unlocked"
    end
    if still_ours(self) then
        local ok, err = self.dict:replace(key, self.value, time or self.exptime)
        if not ok then
            return nil, err
        end
        return true
    end
    return nil, "unlocked"
end

return _M
