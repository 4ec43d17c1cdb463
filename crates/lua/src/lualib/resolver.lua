-- resty.dns.resolver for Outpost: a DNS stub resolver over ngx.socket.udp (and tcp), with
-- lua-resty-dns's API: new{nameservers, retrans, timeout, no_random}, query(name, opts),
-- tcp_query, set_timeout, the TYPE_*/CLASS_*/SECTION_* constants, and its answer records
-- ({name, type, class, ttl, section, address | cname | ...}; answers.errcode/errstr on a
-- server error). Written for Outpost.

local ngx = ngx
local udp = ngx.socket.udp
local tcp = ngx.socket.tcp
local byte, char, sub, format = string.byte, string.char, string.sub, string.format
local concat, insert = table.concat, table.insert
local band, rshift, lshift = bit.band, bit.rshift, bit.lshift
local random = math.random
local type, tostring, setmetatable = type, tostring, setmetatable

local _M = {
    _VERSION = "0.22",
    TYPE_A = 1, TYPE_NS = 2, TYPE_CNAME = 5, TYPE_SOA = 6, TYPE_PTR = 12, TYPE_MX = 15,
    TYPE_TXT = 16, TYPE_AAAA = 28, TYPE_SRV = 33, TYPE_SPF = 99,
    CLASS_IN = 1,
    SECTION_AN = 1, SECTION_NS = 2, SECTION_AR = 3,
}
local mt = { __index = _M }

local RCODE_TEXT = {
    [1] = "format error", [2] = "server failure", [3] = "name error",
    [4] = "not implemented", [5] = "refused",
}

function _M.new(_, opts)
    opts = opts or {}
    local servers = opts.nameservers
    if type(servers) ~= "table" or #servers == 0 then
        return nil, "no nameservers specified"
    end
    local list = {}
    for i, s in ipairs(servers) do
        if type(s) == "table" then
            list[i] = { s[1], s[2] or 53 }
        else
            list[i] = { s, 53 }
        end
    end
    return setmetatable({
        servers = list,
        cur = opts.no_random and 1 or random(#list),
        retrans = opts.retrans or 5,
        timeout = opts.timeout or 2000,
    }, mt)
end

function _M.set_timeout(self, ms)
    self.timeout = ms
end

local function u16(n)
    return char(band(rshift(n, 8), 0xff), band(n, 0xff))
end

local function build_query(id, qname, qtype, no_recurse)
    local parts = { u16(id), char(no_recurse and 0 or 1, 0), u16(1), u16(0), u16(0), u16(0) }
    for label in qname:gmatch("[^.]+") do
        if #label > 63 then
            return nil, "bad label: " .. label
        end
        insert(parts, char(#label) .. label)
    end
    insert(parts, "\0")
    insert(parts, u16(qtype))
    insert(parts, u16(1))
    return concat(parts)
end

local function get16(buf, pos)
    local hi, lo = byte(buf, pos, pos + 1)
    if not lo then return nil end
    return lshift(hi, 8) + lo
end

local function get32(buf, pos)
    local a, b, c, d = byte(buf, pos, pos + 3)
    if not d then return nil end
    return ((a * 256 + b) * 256 + c) * 256 + d
end

-- A (possibly compressed) name at pos: the name and the position after it.
local function read_name(buf, pos)
    local labels, after, jumps = {}, nil, 0
    while true do
        local len = byte(buf, pos)
        if not len then return nil, "truncated name" end
        if len == 0 then
            pos = pos + 1
            break
        end
        if band(len, 0xc0) == 0xc0 then
            local ptr = get16(buf, pos)
            if not ptr then return nil, "truncated name" end
            after = after or pos + 2
            pos = band(ptr, 0x3fff) + 1
            jumps = jumps + 1
            if jumps > 64 then return nil, "name pointer loop" end
        else
            insert(labels, sub(buf, pos + 1, pos + len))
            pos = pos + len + 1
        end
    end
    return concat(labels, "."), after or pos
end

local function parse_rdata(rec, buf, pos, len)
    local t = rec.type
    if t == 1 and len == 4 then
        rec.address = format("%d.%d.%d.%d", byte(buf, pos, pos + 3))
    elseif t == 28 and len == 16 then
        local groups = {}
        for i = 0, 7 do
            groups[i + 1] = format("%x", get16(buf, pos + 2 * i))
        end
        rec.address = concat(groups, ":")
    elseif t == 5 then
        rec.cname = read_name(buf, pos)
    elseif t == 2 then
        rec.nsdname = read_name(buf, pos)
    elseif t == 12 then
        rec.ptrdname = read_name(buf, pos)
    elseif t == 15 then
        rec.preference = get16(buf, pos)
        rec.exchange = read_name(buf, pos + 2)
    elseif t == 33 then
        rec.priority = get16(buf, pos)
        rec.weight = get16(buf, pos + 2)
        rec.port = get16(buf, pos + 4)
        rec.target = read_name(buf, pos + 6)
    elseif t == 16 or t == 99 then
        local strings, p, stop = {}, pos, pos + len
        while p < stop do
            local n = byte(buf, p)
            insert(strings, sub(buf, p + 1, p + n))
            p = p + n + 1
        end
        rec.txt = #strings == 1 and strings[1] or strings
    elseif t == 6 then
        local mname, p = read_name(buf, pos)
        local rname, p2 = read_name(buf, p)
        rec.mname, rec.rname = mname, rname
        rec.serial, rec.refresh = get32(buf, p2), get32(buf, p2 + 4)
        rec.retry, rec.expire, rec.minimum = get32(buf, p2 + 8), get32(buf, p2 + 12), get32(buf, p2 + 16)
    else
        rec.rdata = sub(buf, pos, pos + len - 1)
    end
end

-- The answers of a reply to query `id`, or nil and why; `truncated` when TC is set.
local function parse_reply(buf, id, want_additional)
    if #buf < 12 then
        return nil, "truncated reply"
    end
    if get16(buf, 1) ~= id then
        return nil, "id mismatch"
    end
    local flags = get16(buf, 3)
    local truncated = band(flags, 0x0200) ~= 0
    local rcode = band(flags, 0x0f)
    local qd, an, ns, ar = get16(buf, 5), get16(buf, 7), get16(buf, 9), get16(buf, 11)
    local answers = {}
    if rcode ~= 0 then
        answers.errcode = rcode
        answers.errstr = RCODE_TEXT[rcode] or "unknown"
    end
    local pos = 13
    for _ = 1, qd do
        local _, p = read_name(buf, pos)
        if not p then return nil, "bad question" end
        pos = p + 4
    end
    local sections = { { an, 1 }, { ns, 2 }, { ar, 3 } }
    for _, s in ipairs(sections) do
        local count, section = s[1], s[2]
        for _ = 1, count do
            local name, p = read_name(buf, pos)
            if not name then return nil, p end
            local rtype, class = get16(buf, p), get16(buf, p + 2)
            local ttl, len = get32(buf, p + 4), get16(buf, p + 8)
            if not len then return nil, "truncated record" end
            pos = p + 10
            if section == 1 or want_additional then
                local rec = { name = name, type = rtype, class = class, ttl = ttl, section = section }
                parse_rdata(rec, buf, pos, len)
                insert(answers, rec)
            end
            pos = pos + len
        end
    end
    return answers, nil, truncated
end

local function tcp_exchange(self, server, query)
    local sock = tcp()
    sock:settimeout(self.timeout)
    local ok, err = sock:connect(server[1], server[2])
    if not ok then return nil, err end
    ok, err = sock:send(u16(#query) .. query)
    if not ok then sock:close() return nil, err end
    local head
    head, err = sock:receive(2)
    if not head then sock:close() return nil, err end
    local reply
    reply, err = sock:receive(get16(head, 1))
    sock:close()
    return reply, err
end

local function next_server(self)
    local s = self.servers[self.cur]
    self.cur = self.cur % #self.servers + 1
    return s
end

function _M.query(self, qname, opts, tries)
    opts = opts or {}
    local qtype = opts.qtype or 1
    local id = self._id or random(0, 65535)
    local query, err = build_query(id, qname, qtype, opts.no_recurse)
    if not query then return nil, err end
    tries = tries or {}
    for _ = 1, self.retrans do
        local server = next_server(self)
        local sock = udp()
        sock:settimeout(self.timeout)
        local ok
        ok, err = sock:setpeername(server[1], server[2])
        if ok then
            ok, err = sock:send(query)
        end
        if ok then
            local reply
            reply, err = sock:receive(4096)
            sock:close()
            if reply then
                local answers, perr, truncated = parse_reply(reply, id, opts.additional_section)
                if truncated then
                    reply, err = tcp_exchange(self, server, query)
                    if reply then
                        answers, perr = parse_reply(reply, id, opts.additional_section)
                    end
                end
                if answers then
                    return answers, nil, tries
                end
                err = perr or err
            end
        else
            sock:close()
        end
        insert(tries, tostring(err))
    end
    return nil, "failed to query the DNS server: " .. tostring(err), tries
end

function _M.tcp_query(self, qname, opts)
    opts = opts or {}
    local id = self._id or random(0, 65535)
    local query, err = build_query(id, qname, opts.qtype or 1, opts.no_recurse)
    if not query then return nil, err end
    local reply
    reply, err = tcp_exchange(self, next_server(self), query)
    if not reply then return nil, err end
    return parse_reply(reply, id, opts.additional_section)
end

return _M
