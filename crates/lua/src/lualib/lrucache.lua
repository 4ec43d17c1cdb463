-- resty.lrucache: a per-worker LRU cache of Lua values with TTLs, with the API of
-- lua-resty-lrucache (new, get, set, delete, flush_all, count, capacity, get_keys).
local setmetatable = setmetatable
local ngx_now = ngx.now

local _M = { _VERSION = "0.13" }
local mt = { __index = _M }

function _M.new(size)
    if size < 1 then
        return nil, "size too small"
    end
    -- A doubly linked list (most recent first) plus a key index.
    local head = {}
    head.prev, head.next = head, head
    return setmetatable({ size = size, count_ = 0, head = head, index = {} }, mt)
end

local function unlink(node)
    node.prev.next = node.next
    node.next.prev = node.prev
end

local function push_front(head, node)
    node.next = head.next
    node.prev = head
    head.next.prev = node
    head.next = node
end

function _M.get(self, key)
    local node = self.index[key]
    if not node then
        return nil
    end
    unlink(node)
    push_front(self.head, node)
    if node.expire and node.expire < ngx_now() then
        return nil, node.value, node.flags
    end
    return node.value, nil, node.flags
end

function _M.set(self, key, value, ttl, flags)
    local node = self.index[key]
    if node then
        unlink(node)
    else
        if self.count_ >= self.size then
            local last = self.head.prev
            unlink(last)
            self.index[last.key] = nil
            self.count_ = self.count_ - 1
        end
        node = { key = key }
        self.index[key] = node
        self.count_ = self.count_ + 1
    end
    node.value = value
    node.flags = flags
    node.expire = (ttl and ttl > 0) and (ngx_now() + ttl) or nil
    push_front(self.head, node)
end

function _M.delete(self, key)
    local node = self.index[key]
    if not node then
        return false
    end
    unlink(node)
    self.index[key] = nil
    self.count_ = self.count_ - 1
    return true
end

function _M.flush_all(self)
    self.head.prev, self.head.next = self.head, self.head
    self.index = {}
    self.count_ = 0
end

function _M.count(self)
    return self.count_
end

function _M.capacity(self)
    return self.size
end

function _M.get_keys(self, max_count, res)
    res = res or {}
    local n = 0
    local node = self.head.next
    while node ~= self.head and (not max_count or max_count == 0 or n < max_count) do
        n = n + 1
        res[n] = node.key
        node = node.next
    end
    return res
end

return _M
