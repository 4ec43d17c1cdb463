-- resty.http for Outpost: an HTTP/1.1 client over ngx.socket.tcp with lua-resty-http's main
-- API: new, set_timeout(s), connect, request, read_body, set_keepalive, close, request_uri,
-- parse_uri. Bodies with Content-Length, chunked, or until the connection closes.
-- Written for Outpost.

local ngx = ngx
local tcp = ngx.socket.tcp
local str_lower = string.lower
local str_upper = string.upper
local str_find = string.find
local str_sub = string.sub
local str_match = string.match
local tonumber = tonumber
local tostring = tostring
local concat = table.concat
local insert = table.insert
local pairs = pairs
local type = type
local setmetatable = setmetatable

local _M = { _VERSION = "0.17.1" }
local mt = { __index = _M }

local DEFAULT_PORTS = { http = 80, https = 443 }

function _M.new()
    local sock, err = tcp()
    if not sock then
        return nil, err
    end
    return setmetatable({ sock = sock, keepalive = true }, mt)
end

function _M.set_timeout(self, ms)
    self.sock:settimeout(ms)
end

function _M.set_timeouts(self, connect_ms, send_ms, read_ms)
    self.sock:settimeouts(connect_ms, send_ms, read_ms)
end

-- "http://host:port/path?query" into { scheme, host, port, path, query }.
function _M.parse_uri(_, uri)
    local scheme, rest = str_match(uri, "^(%a[%w+.-]*)://(.*)$")
    if not scheme then
        return nil, "bad uri: " .. tostring(uri)
    end
    scheme = str_lower(scheme)
    local authority, path = str_match(rest, "^([^/?#]*)(.*)$")
    local host, port = str_match(authority, "^%[(.+)%]:?(%d*)$")
    if not host then
        host, port = str_match(authority, "^([^:]*):?(%d*)$")
    end
    port = tonumber(port) or DEFAULT_PORTS[scheme]
    if not host or host == "" or not port then
        return nil, "bad uri: " .. uri
    end
    local query
    path, query = str_match(path, "^([^?#]*)%??([^#]*)")
    if path == "" then path = "/" end
    return { scheme, host, port, path, query }
end

function _M.connect(self, host_or_opts, port, opts)
    local host, scheme, ssl_verify, server_name = host_or_opts, "http", nil, nil
    if type(host_or_opts) == "table" then
        local o = host_or_opts
        scheme = o.scheme or "http"
        host, port = o.host, o.port or DEFAULT_PORTS[scheme]
        ssl_verify, server_name = o.ssl_verify, o.ssl_server_name or o.host
        opts = { pool = o.pool }
    end
    self.host, self.port = host, port
    local ok, err = self.sock:connect(host, port, opts)
    if not ok then
        return nil, err
    end
    if scheme == "https" and self.sock:getreusedtimes() == 0 then
        local _, herr = self.sock:sslhandshake(nil, server_name or host, ssl_verify ~= false)
        if herr then
            return nil, herr
        end
    end
    return true
end

local function header_table()
    -- Case-insensitive lookups, as lua-resty-http's response headers allow.
    local normalised = {}
    return setmetatable({}, {
        __index = function(t, k)
            local name = normalised[str_lower(k)]
            if name then return rawget(t, name) end
        end,
        __newindex = function(t, k, v)
            normalised[str_lower(k)] = k
            rawset(t, k, v)
        end,
    })
end

function _M.request(self, params)
    local sock = self.sock
    local method = str_upper(params.method or "GET")
    local path = params.path or "/"
    local query = params.query
    if type(query) == "table" then
        query = ngx.encode_args(query)
    end
    if query and query ~= "" then
        path = path .. "?" .. query
    end
    local body = params.body
    local headers = params.headers or {}
    local lines = { method, " ", path, " HTTP/1.1\r\n" }
    local has_host, has_length, has_ua = false, false, false
    for k, v in pairs(headers) do
        local lk = str_lower(k)
        if lk == "host" then has_host = true end
        if lk == "content-length" or lk == "transfer-encoding" then has_length = true end
        if lk == "user-agent" then has_ua = true end
        insert(lines, k .. ": " .. tostring(v) .. "\r\n")
    end
    if not has_host then
        local host = self.host or "localhost"
        local port = self.port
        if port and port ~= 80 and port ~= 443 then
            host = host .. ":" .. port
        end
        insert(lines, "Host: " .. host .. "\r\n")
    end
    if not has_ua then
        insert(lines, "User-Agent: " .. "lua-resty-http/" .. _M._VERSION .. " (Outpost)\r\n")
    end
    if type(body) == "string" and not has_length then
        insert(lines, "Content-Length: " .. #body .. "\r\n")
    end
    insert(lines, "\r\n")
    if type(body) == "string" then
        insert(lines, body)
    end
    local ok, err = sock:send(concat(lines))
    if not ok then
        return nil, err
    end

    local status_line
    status_line, err = sock:receive("*l")
    if not status_line then
        return nil, err
    end
    local version, status, reason = str_match(status_line, "^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
    if not status then
        return nil, "bad status line: " .. status_line
    end
    local res_headers = header_table()
    while true do
        local line, herr = sock:receive("*l")
        if not line then
            return nil, herr
        end
        if line == "" then break end
        local name, value = str_match(line, "^([^:]+):%s*(.-)%s*$")
        if name then
            local existing = res_headers[name]
            if existing == nil then
                res_headers[name] = value
            elseif type(existing) == "table" then
                insert(existing, value)
            else
                res_headers[name] = { existing, value }
            end
        end
    end
    status = tonumber(status)
    local connection = str_lower(tostring(res_headers["Connection"] or ""))
    self.keepalive = not (connection == "close" or (version == "1.0" and connection ~= "keep-alive"))
    local res = {
        status = status,
        reason = reason,
        headers = res_headers,
        has_body = method ~= "HEAD" and status ~= 204 and status ~= 304 and status >= 200,
    }
    local httpc = self
    res.read_body = function()
        return httpc:_read_body(res)
    end
    return res
end

function _M._read_body(self, res)
    if not res.has_body then
        return ""
    end
    local sock = self.sock
    local te = str_lower(tostring(res.headers["Transfer-Encoding"] or ""))
    if str_find(te, "chunked", 1, true) then
        local parts = {}
        while true do
            local size_line, err = sock:receive("*l")
            if not size_line then
                return nil, err
            end
            local size = tonumber(str_match(size_line, "^%s*(%x+)"), 16)
            if not size then
                return nil, "bad chunk size: " .. size_line
            end
            if size == 0 then
                -- Trailers, then the empty line.
                repeat
                    local line, terr = sock:receive("*l")
                    if not line then
                        return nil, terr
                    end
                until line == ""
                break
            end
            local data, derr = sock:receive(size)
            if not data then
                return nil, derr
            end
            insert(parts, data)
            local _, cerr = sock:receive("*l")
            if cerr then
                return nil, cerr
            end
        end
        return concat(parts)
    end
    local length = tonumber(res.headers["Content-Length"])
    if length then
        if length == 0 then
            return ""
        end
        return sock:receive(length)
    end
    -- Neither: the body ends when the connection does.
    self.keepalive = false
    return sock:receive("*a")
end

function _M.set_keepalive(self, ...)
    if not self.keepalive then
        return self.sock:close()
    end
    return self.sock:setkeepalive(...)
end

function _M.close(self)
    return self.sock:close()
end

function _M.request_uri(self, uri, params)
    params = params or {}
    local parsed, err = self:parse_uri(uri)
    if not parsed then
        return nil, err
    end
    local scheme, host, port, path, query = parsed[1], parsed[2], parsed[3], parsed[4], parsed[5]
    local ok
    ok, err = self:connect({
        scheme = scheme,
        host = host,
        port = port,
        ssl_verify = params.ssl_verify,
        ssl_server_name = params.ssl_server_name,
        pool = params.keepalive_pool_name,
    })
    if not ok then
        return nil, err
    end
    local request = {
        method = params.method,
        path = params.path or path,
        query = params.query or query,
        headers = params.headers,
        body = params.body,
    }
    local res
    res, err = self:request(request)
    if not res then
        self:close()
        return nil, err
    end
    local body
    body, err = res:read_body()
    if not body then
        self:close()
        return nil, err
    end
    res.body = body
    if params.keepalive == false then
        self:close()
    else
        self:set_keepalive(params.keepalive_timeout, params.keepalive_pool)
    end
    return res
end

return _M
