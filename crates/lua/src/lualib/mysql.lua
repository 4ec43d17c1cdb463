-- resty.mysql for Outpost: a MySQL/MariaDB client over ngx.socket.tcp with lua-resty-mysql's
-- API: new, set_timeout, connect{host, port, database, user, password, charset,
-- max_packet_size, pool, pool_size, backlog, compact_arrays}, query, send_query, read_result
-- (with "again" for multiple result sets), set_keepalive, get_reused_times, close,
-- server_ver, set_compact_arrays. Authenticates with mysql_native_password (and
-- mysql_clear_password when the server switches to it); no TLS, no unix sockets.
-- Written for Outpost from the protocol's documentation.

local ngx = ngx
local tcp = ngx.socket.tcp
local sha1_bin = ngx.sha1_bin
local null = ngx.null
local byte, char, sub, find = string.byte, string.char, string.sub, string.find
local rep, lower = string.rep, string.lower
local concat = table.concat
local band, bor, bxor = bit.band, bit.bor, bit.bxor
local rshift = bit.rshift
local tonumber, tostring, type, setmetatable = tonumber, tostring, type, setmetatable

local ok_new_tab, new_tab = pcall(require, "table.new")
if not ok_new_tab then
    new_tab = function() return {} end
end

local _M = { _VERSION = "0.27" }
local mt = { __index = _M }

-- Capability flags (the protocol's CLIENT_* constants).
local CLIENT_LONG_PASSWORD = 0x1
local CLIENT_FOUND_ROWS = 0x2
local CLIENT_LONG_FLAG = 0x4
local CLIENT_CONNECT_WITH_DB = 0x8
local CLIENT_PROTOCOL_41 = 0x200
local CLIENT_TRANSACTIONS = 0x2000
local CLIENT_SECURE_CONNECTION = 0x8000
local CLIENT_MULTI_STATEMENTS = 0x10000
local CLIENT_MULTI_RESULTS = 0x20000
local CLIENT_PLUGIN_AUTH = 0x80000

-- FOUND_ROWS: an UPDATE reports the rows it matched, as lua-resty-mysql's clients expect.
local CLIENT_FLAGS = bor(CLIENT_LONG_PASSWORD, CLIENT_FOUND_ROWS, CLIENT_LONG_FLAG,
    CLIENT_CONNECT_WITH_DB, CLIENT_PROTOCOL_41, CLIENT_TRANSACTIONS, CLIENT_SECURE_CONNECTION,
    CLIENT_MULTI_STATEMENTS, CLIENT_MULTI_RESULTS)

local SERVER_MORE_RESULTS_EXISTS = 0x8
local COM_QUERY = 0x03
local MAX_PAYLOAD = 0xffffff

-- States, numbered as lua-resty-mysql's error messages show them.
local STATE_CONNECTED = 1
local STATE_COMMAND_SENT = 2

-- Column types read as Lua numbers: decimal, tiny, short, long, float, double, longlong,
-- int24, year, newdecimal. Everything else stays a string.
local NUMERIC = {
    [0x00] = true, [0x01] = true, [0x02] = true, [0x03] = true, [0x04] = true,
    [0x05] = true, [0x08] = true, [0x09] = true, [0x0d] = true, [0xf6] = true,
}

-- Collation ids for the `charset` option (the server's default collation of each).
local CHARSETS = {
    big5 = 1, dec8 = 3, cp850 = 4, hp8 = 6, koi8r = 7, latin1 = 8, latin2 = 9, swe7 = 10,
    ascii = 11, ujis = 12, sjis = 13, hebrew = 16, tis620 = 18, euckr = 19, koi8u = 22,
    gb2312 = 24, greek = 25, cp1250 = 26, gbk = 28, latin5 = 30, armscii8 = 32, utf8 = 33,
    utf8mb3 = 33, ucs2 = 35, cp866 = 36, keybcs2 = 37, macce = 38, macroman = 39, cp852 = 40,
    latin7 = 41, utf8mb4 = 45, cp1251 = 51, utf16 = 54, utf16le = 56, cp1256 = 57,
    cp1257 = 59, utf32 = 60, binary = 63, geostd8 = 92, cp932 = 95, eucjpms = 97,
}

local function u16(s, pos)
    local a, b = byte(s, pos, pos + 1)
    if not b then return nil end
    return a + b * 0x100
end

local function u24(s, pos)
    local a, b, c = byte(s, pos, pos + 2)
    if not c then return nil end
    return a + b * 0x100 + c * 0x10000
end

local function u32(s, pos)
    local a, b, c, d = byte(s, pos, pos + 3)
    if not d then return nil end
    return a + b * 0x100 + c * 0x10000 + d * 0x1000000
end

local function le16(n) return char(band(n, 0xff), band(rshift(n, 8), 0xff)) end

local function le32(n)
    return char(band(n, 0xff), band(rshift(n, 8), 0xff), band(rshift(n, 16), 0xff),
        band(rshift(n, 24), 0xff))
end

-- A length-encoded integer at pos: the value (nil for the NULL marker 0xfb) and the next
-- position; false when the packet ends early.
local function lenenc_int(s, pos)
    local first = byte(s, pos)
    if not first then return false, pos end
    if first < 0xfb then return first, pos + 1 end
    if first == 0xfb then return nil, pos + 1 end
    if first == 0xfc then
        local v = u16(s, pos + 1)
        if not v then return false, pos end
        return v, pos + 3
    end
    if first == 0xfd then
        local v = u24(s, pos + 1)
        if not v then return false, pos end
        return v, pos + 4
    end
    if first == 0xfe then
        local lo, hi = u32(s, pos + 1), u32(s, pos + 5)
        if not hi then return false, pos end
        return lo + hi * 4294967296, pos + 9
    end
    return false, pos
end

-- A length-encoded string at pos (nil for NULL) and the next position; false when short.
local function lenenc_str(s, pos)
    local len, p = lenenc_int(s, pos)
    if len == false then return false, pos end
    if len == nil then return nil, p end
    if p + len - 1 > #s then return false, pos end
    return sub(s, p, p + len - 1), p + len
end

local function lenenc_bytes(s)
    local n = #s
    if n < 0xfb then return char(n) .. s end
    if n < 0x10000 then return "\252" .. le16(n) .. s end
    return "\253" .. char(band(n, 0xff), band(rshift(n, 8), 0xff), band(rshift(n, 16), 0xff)) .. s
end

local function cstring(s, pos)
    local stop = find(s, "\0", pos, true)
    if not stop then return nil, pos end
    return sub(s, pos, stop - 1), stop + 1
end

-- mysql_native_password: SHA1(password) XOR SHA1(scramble .. SHA1(SHA1(password))).
local function native_token(password, scramble)
    if password == "" then return "" end
    local stage1 = sha1_bin(password)
    local stage3 = sha1_bin(scramble .. sha1_bin(stage1))
    local out = new_tab(20, 0)
    for i = 1, 20 do
        out[i] = char(bxor(byte(stage1, i), byte(stage3, i)))
    end
    return concat(out)
end

local function send_packet(self, payload)
    local parts, pos, n = {}, 1, #payload
    -- Payloads of 16 MiB - 1 or more go as several packets, the last one shorter.
    repeat
        local chunk = sub(payload, pos, pos + MAX_PAYLOAD - 1)
        self.packet_no = band(self.packet_no + 1, 0xff)
        parts[#parts + 1] = char(band(#chunk, 0xff), band(rshift(#chunk, 8), 0xff),
            rshift(#chunk, 16), self.packet_no) .. chunk
        pos = pos + #chunk
    until #chunk < MAX_PAYLOAD and pos > n
    return self.sock:send(concat(parts))
end

-- The next packet's payload and its kind ("OK", "ERR", "EOF" or "DATA").
local function read_packet(self)
    local sock, parts, total = self.sock, nil, 0
    while true do
        local head, err = sock:receive(4)
        if not head then
            return nil, nil, "failed to receive packet header: " .. err
        end
        local len = u24(head, 1)
        self.packet_no = byte(head, 4)
        total = total + len
        if total > self.max_packet_size then
            return nil, nil, "packet size too big: " .. total
        end
        local data = ""
        if len > 0 then
            data, err = sock:receive(len)
            if not data then
                return nil, nil, "failed to read packet content: " .. err
            end
        end
        if len < MAX_PAYLOAD and not parts then
            local first = byte(data, 1)
            local kind = "DATA"
            if first == 0x00 then
                kind = "OK"
            elseif first == 0xff then
                kind = "ERR"
            elseif first == 0xfe and len < 9 then
                kind = "EOF"
            end
            return data, kind
        end
        parts = parts or {}
        parts[#parts + 1] = data
        if len < MAX_PAYLOAD then
            return concat(parts), "DATA"
        end
    end
end

local function parse_err(packet)
    local code = u16(packet, 2) or 0
    local sqlstate, msg_at = nil, 4
    if sub(packet, 4, 4) == "#" then
        sqlstate, msg_at = sub(packet, 5, 9), 10
    end
    return code, sub(packet, msg_at), sqlstate
end

local function parse_ok(packet)
    local affected, pos = lenenc_int(packet, 2)
    local insert_id
    insert_id, pos = lenenc_int(packet, pos)
    if not affected or not insert_id then
        return nil, "bad OK packet"
    end
    local status, warnings = u16(packet, pos) or 0, u16(packet, pos + 2) or 0
    local res = { affected_rows = affected, insert_id = insert_id,
        server_status = status, warning_count = warnings }
    -- Servers send the info text length-encoded (the protocol's docs say "rest of packet").
    local message = lenenc_str(packet, pos + 4)
    if not message then
        message = sub(packet, pos + 4)
    end
    if message ~= "" then
        res.message = message
    end
    return res
end

function _M.new(_)
    local sock, err = tcp()
    if not sock then
        return nil, err
    end
    return setmetatable({ sock = sock, packet_no = 0, max_packet_size = 1024 * 1024 }, mt)
end

function _M.set_timeout(self, ms)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    return sock:settimeout(ms)
end

function _M.set_compact_arrays(self, on)
    self.compact = on
end

function _M.server_ver(self)
    return self._server_ver
end

function _M.get_reused_times(self)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    return sock:getreusedtimes()
end

function _M.close(self)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    self.state = nil
    return sock:close()
end

function _M.set_keepalive(self, ...)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    if self.state ~= STATE_CONNECTED then
        return nil, "cannot be reused in the current connection state: " .. (self.state or "nil")
    end
    self.state = nil
    return sock:setkeepalive(...)
end

-- Reads the server's answer to our credentials: OK, ERR, or a switch to another plugin.
local function finish_auth(self, password)
    for _ = 1, 3 do
        local packet, kind, err = read_packet(self)
        if not packet then
            return nil, err
        end
        if kind == "OK" then
            return true
        end
        if kind == "ERR" then
            local code, msg, sqlstate = parse_err(packet)
            return nil, msg, code, sqlstate
        end
        if byte(packet, 1) ~= 0xfe then
            -- 0x01 is caching_sha2_password's "more data", which needs TLS or RSA.
            return nil, "unsupported authentication exchange (first byte "
                .. byte(packet, 1) .. ")"
        end
        -- An auth switch request: plugin name, then that plugin's scramble.
        local plugin, pos = cstring(packet, 2)
        local data = sub(packet, pos)
        if sub(data, -1) == "\0" then
            data = sub(data, 1, -2)
        end
        local reply
        if plugin == "mysql_native_password" then
            reply = native_token(password, data)
        elseif plugin == "mysql_clear_password" then
            reply = password .. "\0"
        else
            return nil, "unsupported authentication plugin: " .. tostring(plugin)
        end
        local ok, serr = send_packet(self, reply)
        if not ok then
            return nil, "failed to send client authentication packet: " .. serr
        end
    end
    return nil, "too many authentication switches"
end

local function handshake(self, opts)
    local packet, kind, err = read_packet(self)
    if not packet then
        return nil, err
    end
    if kind == "ERR" then
        local code, msg, sqlstate = parse_err(packet)
        return nil, msg, code, sqlstate
    end
    if byte(packet, 1) ~= 10 then
        return nil, "unsupported protocol version " .. tostring(byte(packet, 1))
    end
    local version, pos = cstring(packet, 2)
    if not version then
        return nil, "bad handshake packet"
    end
    self._server_ver = version
    local scramble = sub(packet, pos + 4, pos + 11)
    pos = pos + 13
    local caps = u16(packet, pos) or 0
    local server_charset = byte(packet, pos + 2) or 33
    caps = caps + (u16(packet, pos + 5) or 0) * 0x10000
    local data_len = byte(packet, pos + 7) or 0
    pos = pos + 18
    -- The scramble's second part; the plugin name that may follow is not needed (see below).
    if band(caps, CLIENT_SECURE_CONNECTION) ~= 0 then
        local n = data_len > 8 and data_len - 8 or 13
        local part2 = sub(packet, pos, pos + n - 1)
        pos = pos + n
        if sub(part2, -1) == "\0" then
            part2 = sub(part2, 1, -2)
        end
        scramble = scramble .. part2
    end
    if #scramble < 20 then
        return nil, "bad handshake packet"
    end

    local password = opts.password or ""
    -- Whatever the server's default plugin, answer as mysql_native_password: a server that
    -- wants another one for this user asks to switch (MariaDB does), and finish_auth follows.
    local token = native_token(password, sub(scramble, 1, 20))

    local charset = server_charset
    if opts.charset then
        charset = CHARSETS[lower(opts.charset)]
        if not charset then
            return nil, "charset '" .. opts.charset .. "' is not supported"
        end
    end
    local flags = CLIENT_FLAGS
    if band(caps, CLIENT_PLUGIN_AUTH) ~= 0 then
        flags = bor(flags, CLIENT_PLUGIN_AUTH)
    end
    local parts = {
        le32(flags), le32(self.max_packet_size), char(band(charset, 0xff)), rep("\0", 23),
        (opts.user or ""), "\0", char(#token), token, (opts.database or ""), "\0",
    }
    if band(flags, CLIENT_PLUGIN_AUTH) ~= 0 then
        parts[#parts + 1] = "mysql_native_password\0"
    end
    local ok, serr = send_packet(self, concat(parts))
    if not ok then
        return nil, "failed to send client authentication packet: " .. serr
    end
    return finish_auth(self, password)
end

function _M.connect(self, opts)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    if type(opts) ~= "table" then
        return nil, "bad options: table expected"
    end
    if opts.ssl then
        return nil, "ssl is not supported"
    end
    if opts.path then
        return nil, "failed to connect: unix domain sockets are not supported"
    end
    self.max_packet_size = opts.max_packet_size or 1024 * 1024
    self.compact = opts.compact_arrays
    local host, port = opts.host, opts.port or 3306
    local pool = opts.pool or ((opts.user or "") .. ":" .. (opts.database or "") .. ":"
        .. tostring(host) .. ":" .. port)
    local ok, err = sock:connect(host, port, { pool = pool, pool_size = opts.pool_size,
        backlog = opts.backlog })
    if not ok then
        return nil, "failed to connect: " .. err
    end
    local reused = sock:getreusedtimes()
    if reused and reused > 0 then
        self.state = STATE_CONNECTED
        return 1
    end
    self.packet_no = -1
    local done, herr, code, sqlstate = handshake(self, opts)
    if not done then
        sock:close()
        return nil, herr, code, sqlstate
    end
    self.state = STATE_CONNECTED
    return 1
end

function _M.send_query(self, sql)
    if self.state ~= STATE_CONNECTED then
        return nil, "cannot send query in the current context: " .. (self.state or "nil")
    end
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    self.packet_no = -1
    local bytes, err = send_packet(self, char(COM_QUERY) .. sql)
    if not bytes then
        return nil, err
    end
    self.state = STATE_COMMAND_SENT
    return bytes
end

local function parse_field(packet)
    local pos = 1
    local name
    for i = 1, 6 do
        -- catalog, schema, table, org_table, name, org_name
        local s
        s, pos = lenenc_str(packet, pos)
        if s == false then return nil end
        if i == 5 then name = s end
    end
    -- A length byte (0x0c), charset (2), column length (4), then the type.
    local typ = byte(packet, pos + 7)
    if not typ then return nil end
    return { name = name, type = typ }
end

local function read_rows(self, ncols, est_nrows)
    local fields = new_tab(ncols, 0)
    for i = 1, ncols do
        local packet, kind, err = read_packet(self)
        if not packet then return nil, err end
        if kind == "ERR" then
            self.state = STATE_CONNECTED
            local code, msg, sqlstate = parse_err(packet)
            return nil, msg, code, sqlstate
        end
        local field = parse_field(packet)
        if not field then return nil, "bad field packet" end
        fields[i] = field
    end
    local packet, kind, err = read_packet(self)
    if not packet then return nil, err end
    if kind ~= "EOF" then
        return nil, "unexpected packet after the fields: " .. kind
    end
    local compact = self.compact
    local rows, n = new_tab(est_nrows or 4, 0), 0
    while true do
        packet, kind, err = read_packet(self)
        if not packet then return nil, err end
        if kind == "EOF" then
            local status = u16(packet, 4) or 0
            if band(status, SERVER_MORE_RESULTS_EXISTS) ~= 0 then
                return rows, "again"
            end
            self.state = STATE_CONNECTED
            return rows
        end
        if kind == "ERR" then
            self.state = STATE_CONNECTED
            local code, msg, sqlstate = parse_err(packet)
            return nil, msg, code, sqlstate
        end
        local row = compact and new_tab(ncols, 0) or new_tab(0, ncols)
        local pos = 1
        for i = 1, ncols do
            local value
            value, pos = lenenc_str(packet, pos)
            if value == false then return nil, "bad row packet" end
            local field = fields[i]
            if value == nil then
                value = null
            elseif NUMERIC[field.type] then
                value = tonumber(value) or value
            end
            if compact then
                row[i] = value
            else
                row[field.name] = value
            end
        end
        n = n + 1
        rows[n] = row
    end
end

function _M.read_result(self, est_nrows)
    if self.state ~= STATE_COMMAND_SENT then
        return nil, "cannot read result in the current context: " .. (self.state or "nil")
    end
    if not self.sock then
        return nil, "not initialized"
    end
    local packet, kind, err = read_packet(self)
    if not packet then
        return nil, err
    end
    if kind == "ERR" then
        self.state = STATE_CONNECTED
        local code, msg, sqlstate = parse_err(packet)
        return nil, msg, code, sqlstate
    end
    if kind == "OK" then
        local res, perr = parse_ok(packet)
        if not res then return nil, perr end
        if band(res.server_status, SERVER_MORE_RESULTS_EXISTS) ~= 0 then
            return res, "again"
        end
        self.state = STATE_CONNECTED
        return res
    end
    if byte(packet, 1) == 0xfb then
        return nil, "LOAD DATA LOCAL INFILE is not supported"
    end
    local ncols = lenenc_int(packet, 1)
    if not ncols then
        return nil, "bad result set header"
    end
    return read_rows(self, ncols, est_nrows)
end

function _M.query(self, sql, est_nrows)
    local bytes, err = self:send_query(sql)
    if not bytes then
        return nil, "failed to send query: " .. err
    end
    return self:read_result(est_nrows)
end

return _M
