-- resty.redis for Outpost: a Redis client over ngx.socket.tcp with lua-resty-redis's API:
-- new, set_timeout, set_timeouts, connect(host, port, opts) and connect("unix:/path", opts)
-- (opts: pool, pool_size, backlog, ssl, ssl_verify, server_name), set_keepalive,
-- get_reused_times, close, any Redis command as a method (red:get(k) sends GET), hmset with
-- a table, init_pipeline/commit_pipeline/cancel_pipeline, subscribe/psubscribe/unsubscribe/
-- punsubscribe with read_reply, array_to_hash and add_commands. Speaks RESP2, the protocol
-- a connection starts in. Written for Outpost from the protocol's documentation.

local ngx = ngx
local tcp = ngx.socket.tcp
local null = ngx.null
local byte, sub, upper = string.byte, string.sub, string.upper
local type, tostring, tonumber, pairs = type, tostring, tonumber, pairs
local select, unpack, error = select, unpack, error
local rawget, rawset, setmetatable = rawget, rawset, setmetatable

local ok_new_tab, new_tab = pcall(require, "table.new")
if not ok_new_tab then
    new_tab = function() return {} end
end

local _M = { _VERSION = "0.30" }
local mt = { __index = _M }

-- How many pub/sub messages an unsubscribe may set aside while it waits for its own
-- confirmation: a channel flooding faster than we read must not keep us here forever.
local MAX_SET_ASIDE = 10000

local PLUS, MINUS, COLON, DOLLAR, STAR = 43, 45, 58, 36, 42

-- Every unknown key of the module is a Redis command (see the metatable at the end), so the
-- object's own fields are read with rawget: a missing one must not turn into a command.
-- `_sock` keeps lua-resty-redis's field name, which some wrappers reach for.
local function sock_of(self)
    return rawget(self, "_sock")
end

function _M.new(_)
    local sock, err = tcp()
    if not sock then
        return nil, err
    end
    return setmetatable({ _sock = sock, _subscribed = false }, mt)
end

function _M.set_timeout(self, ms)
    local sock = sock_of(self)
    if not sock then
        error("not initialized", 2)
    end
    return sock:settimeout(ms)
end

function _M.set_timeouts(self, connect_ms, send_ms, read_ms)
    local sock = sock_of(self)
    if not sock then
        error("not initialized", 2)
    end
    return sock:settimeouts(connect_ms, send_ms, read_ms)
end

function _M.connect(self, host, port_or_opts, opts)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    if type(host) ~= "string" then
        error("bad argument #1 host: string expected, got " .. type(host), 2)
    end
    local ok, err
    if sub(host, 1, 5) == "unix:" then
        -- A socket path takes no port: the options come second.
        if port_or_opts ~= nil and type(port_or_opts) ~= "table" then
            error("bad argument #2 opts: nil or table expected, got " .. type(port_or_opts), 2)
        end
        opts = port_or_opts
        rawset(self, "_subscribed", false)
        rawset(self, "_set_aside", nil)
        if opts then
            ok, err = sock:connect(host, opts)
        else
            ok, err = sock:connect(host)
        end
    else
        local port = tonumber(port_or_opts)
        if not port then
            error("bad argument #2 port: number expected, got " .. type(port_or_opts), 2)
        end
        if opts ~= nil and type(opts) ~= "table" then
            error("bad argument #3 opts: nil or table expected, got " .. type(opts), 2)
        end
        rawset(self, "_subscribed", false)
        rawset(self, "_set_aside", nil)
        if opts then
            ok, err = sock:connect(host, port, opts)
        else
            ok, err = sock:connect(host, port)
        end
    end
    if not ok then
        return ok, err
    end
    if opts and opts.ssl then
        -- On a pooled connection that is already TLS the cosocket sends nothing.
        local done, herr = sock:sslhandshake(false, opts.server_name, opts.ssl_verify)
        if not done then
            return nil, "failed to do ssl handshake: " .. tostring(herr)
        end
    end
    return ok
end

function _M.set_keepalive(self, ...)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    -- The server would keep pushing messages to whoever takes the connection next.
    if rawget(self, "_subscribed") then
        return nil, "subscribed state"
    end
    return sock:setkeepalive(...)
end

function _M.get_reused_times(self)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    return sock:getreusedtimes()
end

function _M.close(self)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    return sock:close()
end

-- One reply off the wire, mapped as lua-resty-redis maps it: status -> string, error ->
-- false and its text, integer -> number, bulk -> string (nil bulk -> ngx.null), array ->
-- table (nil array -> ngx.null; an error inside becomes {false, text}). nil and the socket's
-- error when the connection fails.
local function read_one(self, sock)
    local line, err = sock:receive()
    if not line then
        -- A timeout leaves half a reply unread; the connection is useless. While subscribed
        -- a timeout only means no message came, and the caller may wait again.
        if err == "timeout" and not rawget(self, "_subscribed") then
            sock:close()
        end
        return nil, err
    end
    local prefix = byte(line)
    if prefix == PLUS then
        return sub(line, 2)
    end
    if prefix == MINUS then
        return false, sub(line, 2)
    end
    if prefix == COLON then
        return tonumber(sub(line, 2))
    end
    if prefix == DOLLAR then
        local size = tonumber(sub(line, 2))
        if not size then
            return nil, "bad bulk length: " .. line
        end
        if size < 0 then
            return null
        end
        -- The value and its CRLF in one read: binary-safe, whatever the bytes are.
        local data, rerr = sock:receive(size + 2)
        if not data then
            if rerr == "timeout" then
                sock:close()
            end
            return nil, rerr
        end
        return sub(data, 1, size)
    end
    if prefix == STAR then
        local n = tonumber(sub(line, 2))
        if not n then
            return nil, "bad array length: " .. line
        end
        if n < 0 then
            return null
        end
        local items = new_tab(n, 0)
        for i = 1, n do
            local item, ierr = read_one(self, sock)
            if item == nil then
                return nil, ierr
            end
            if item == false then
                item = { false, ierr }
            end
            items[i] = item
        end
        return items
    end
    return nil, "unknown prefix: \"" .. tostring(prefix) .. "\""
end

-- The command as a RESP array of bulk strings, in pieces: the cosocket joins them when it
-- writes, so a large value is not copied into a Lua string first. Arguments end at the
-- first nil, as `#{...}` counts them in lua-resty-redis.
local function encode(name, ...)
    local n = select("#", ...)
    for i = 1, n do
        if select(i, ...) == nil then
            n = i - 1
            break
        end
    end
    local req = new_tab(3 + n * 3, 0)
    req[1] = "*" .. (n + 1) .. "\r\n$" .. #name .. "\r\n" .. name .. "\r\n"
    local at = 2
    for i = 1, n do
        local arg = select(i, ...)
        if type(arg) ~= "string" then
            arg = tostring(arg)
        end
        req[at] = "$" .. #arg .. "\r\n"
        req[at + 1] = arg
        req[at + 2] = "\r\n"
        at = at + 3
    end
    return req
end

local function run(self, name, ...)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    local req = encode(name, ...)
    local queued = rawget(self, "_reqs")
    if queued then
        queued[#queued + 1] = req
        return
    end
    local bytes, err = sock:send(req)
    if not bytes then
        return nil, err
    end
    return read_one(self, sock)
end

local function command(name)
    name = upper(name)
    return function(self, ...)
        return run(self, name, ...)
    end
end

-- A confirmation with no subscriptions left takes the connection out of pub/sub mode.
local function note_unsubscribed(self, res)
    if type(res) == "table" and (res[1] == "unsubscribe" or res[1] == "punsubscribe")
        and res[3] == 0 then
        rawset(self, "_subscribed", false)
    end
end

function _M.read_reply(self)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    -- Messages an unsubscribe read past come first, in the order they arrived.
    local aside = rawget(self, "_set_aside")
    if aside and aside.head <= aside.tail then
        local res = aside[aside.head]
        aside[aside.head] = nil
        aside.head = aside.head + 1
        return res
    end
    if not rawget(self, "_subscribed") then
        return nil, "not subscribed"
    end
    local res, err = read_one(self, sock)
    note_unsubscribed(self, res)
    return res, err
end

local function subscriber(name)
    local send = command(name)
    return function(self, ...)
        rawset(self, "_subscribed", true)
        return send(self, ...)
    end
end

-- Messages published before the server saw the unsubscribe still arrive ahead of its
-- confirmation: they are set aside for read_reply, and the confirmation is returned.
local function unsubscriber(name)
    local kind = name
    name = upper(name)
    return function(self, ...)
        local res, err = run(self, name, ...)
        if res == nil and err == nil then
            return -- pipelined
        end
        local sock = sock_of(self)
        for _ = 1, MAX_SET_ASIDE do
            if type(res) ~= "table" or res[1] == kind then
                break
            end
            local aside = rawget(self, "_set_aside")
            if not aside then
                aside = { head = 1, tail = 0 }
                rawset(self, "_set_aside", aside)
            end
            aside.tail = aside.tail + 1
            aside[aside.tail] = res
            res, err = read_one(self, sock)
        end
        note_unsubscribed(self, res)
        return res, err
    end
end

_M.subscribe = subscriber("subscribe")
_M.psubscribe = subscriber("psubscribe")
_M.unsubscribe = unsubscriber("unsubscribe")
_M.punsubscribe = unsubscriber("punsubscribe")

-- hmset(key, {field = value, ...}) as well as hmset(key, field, value, ...).
function _M.hmset(self, key, ...)
    local t = ...
    if select("#", ...) == 1 and type(t) == "table" then
        local flat, n = {}, 0
        for field, value in pairs(t) do
            flat[n + 1] = field
            flat[n + 2] = value
            n = n + 2
        end
        return run(self, "HMSET", key, unpack(flat, 1, n))
    end
    return run(self, "HMSET", key, ...)
end

function _M.init_pipeline(self, n)
    rawset(self, "_reqs", new_tab(n or 4, 0))
end

function _M.cancel_pipeline(self)
    rawset(self, "_reqs", nil)
end

function _M.commit_pipeline(self)
    local reqs = rawget(self, "_reqs")
    if not reqs then
        return nil, "no pipeline"
    end
    rawset(self, "_reqs", nil)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    local bytes, err = sock:send(reqs)
    if not bytes then
        return nil, err
    end
    local n = #reqs
    local results = new_tab(n, 0)
    for i = 1, n do
        local res, rerr = read_one(self, sock)
        if res == nil then
            if rerr == "timeout" then
                sock:close()
            end
            return nil, rerr
        end
        if res == false then
            res = { false, rerr }
        end
        results[i] = res
    end
    return results
end

-- {k1, v1, k2, v2} (hgetall's reply) -> {k1 = v1, k2 = v2}.
function _M.array_to_hash(_, t)
    local n = #t
    local h = new_tab(0, n / 2)
    for i = 1, n - 1, 2 do
        h[t[i]] = t[i + 1]
    end
    return h
end

-- Kept for old scripts: every command is a method already.
function _M.add_commands(...)
    local names = { ... }
    for i = 1, #names do
        local name = names[i]
        rawset(_M, name, command(name))
    end
end

-- Any other method is the Redis command of that name, made once and kept.
setmetatable(_M, {
    __index = function(_, key)
        if type(key) ~= "string" then
            return nil
        end
        local method = command(key)
        rawset(_M, key, method)
        return method
    end,
})

return _M
