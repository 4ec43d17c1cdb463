-- resty.limit.count: a fixed window of `limit` requests per `window` seconds on a shared
-- dict, with the API of lua-resty-limit-traffic.
local setmetatable = setmetatable

local _M = { _VERSION = "0.08" }
local mt = { __index = _M }

function _M.new(dict_name, limit, window)
    local dict = ngx.shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(limit > 0 and window > 0)
    return setmetatable({ dict = dict, limit = limit, window = window }, mt)
end

-- Returns 0 (no delay) and the remaining count, or nil and "rejected".
function _M.incoming(self, key, commit)
    local dict = self.dict
    local limit = self.limit
    local remaining, err
    if commit then
        remaining, err = dict:incr(key, -1, limit, self.window)
        if not remaining then
            return nil, err
        end
    else
        remaining = (dict:get(key) or limit) - 1
    end
    if remaining < 0 then
        return nil, "rejected"
    end
    return 0, remaining
end

function _M.uncommit(self, key)
    local dict = self.dict
    local remaining, err = dict:incr(key, 1)
    if not remaining then
        if err == "not found" then
            remaining = self.limit
        else
            return nil, err
        end
    end
    return remaining
end

return _M
