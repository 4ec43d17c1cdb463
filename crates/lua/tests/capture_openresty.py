#!/usr/bin/env python3
"""Capture OpenResty conformance data from the REAL Debian nginx + lua module.

Writes crates/lua/tests/openresty_cases.json: every `expected` in it is what a live
nginx returned for the case's snippet; nothing in it is written by hand.

How to run (as root, on Debian bookworm):

    apt-get install -y nginx libnginx-mod-http-lua lua-resty-core lua-cjson
    python3 crates/lua/tests/capture_openresty.py            # writes the JSON next to this file
    python3 crates/lua/tests/capture_openresty.py --only NAME_SUBSTRING   # print, don't write

The script writes an nginx.conf into a fresh temp dir (one `location /t_<name>` per case),
starts `nginx -p DIR -c DIR/nginx.conf` in the foreground (daemon off, 1 worker) on
127.0.0.1:PORT (28417 by default, `--port` to change), sends each request on a fresh
connection with a tiny raw-socket HTTP/1.1 client (so partial bodies and hangs are seen),
records status / headers / exact body bytes, and stops that nginx (SIGQUIT to the pid it
started) at the end. Takes about 10 s (two cases wait out the 3 s read timeout).

Recorded with (Debian bookworm packages):
    nginx 1.22.1 (1.22.1-9+deb12u11)
    libnginx-mod-http-lua 0.10.23 (1:0.10.23-1+deb12u1), ngx.config.ngx_lua_version == 10023
    lua-resty-core 0.1.25 (0.1.25-1), lua-resty-lrucache 0.13
    LuaJIT: libluajit2-5.1-2 2.1-20230119-1 (OpenResty's branch), jit.version == "LuaJIT 2.1.0-beta3"
    ngx.config.nginx_version == 1022001, ngx.config.debug == true (Debian builds --with-debug)
    lua-cjson 2.1.0 (2.1.0+dfsg-2.2), cjson._VERSION == "2.1.0" -- Debian's is UPSTREAM
    mpx lua-cjson, not OpenResty's fork
    (no cjson.empty_array, no encode_empty_table_as_object, "/" is escaped as "\\/")

Case layout (mirrors what the Rust harness runs):
  phase "content":       location has `content_by_lua_block { <code> }`
  phase "access":        `access_by_lua_block { <code> }` + `content_by_lua_block { ngx.say("content") }`
  phase "rewrite":       `rewrite_by_lua_block { <code> }` + same content
  phase "header_filter": `content_by_lua_block { ngx.say("body") }` + `header_filter_by_lua_block { <code> }`
  phase "body_filter":   `content_by_lua_block { ngx.say("body") }` + `body_filter_by_lua_block { <code> }`
                         (one ngx.say, so nginx calls the filter with ("body\n", false) then
                         ("", true), the calls the Rust harness makes)
  Optional "content_code": for access/rewrite/header_filter/body_filter cases, replaces the
  default content code above (used to show ngx.ctx etc. crossing phases).

Request conventions:
  * request.path is the exact path sent (`/t_<name>...`), so ngx.var.uri shows it.
  * Every request is sent with exactly the headers in request.headers and no others except
    Content-Length when a body is present (it is listed too). A header whose value is a
    list is sent once per element, in order. `Host: localhost` is always sent.
  * HTTP/1.1, one connection per request.

Expected conventions:
  * expected.headers holds only the headers listed for the case, plus content-type for
    content-phase cases. A value of null means "must be absent"; a list means the header
    appeared several times, in that order.
  * body_match "status_only" is set automatically when the body is an error page nginx
    generated itself (`<hr><center>nginx...`); the body is still recorded for reference.
  * "incomplete": true means nginx sent the headers and part of a chunked body, then closed
    the connection without the terminating chunk (a Lua error after output was sent).
  * "closed_without_response": nginx closed the connection without sending a status line;
    "no_response_timeout": nginx sent nothing within READ_TIMEOUT (3 s) and kept the
    connection open (status is null in both).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "openresty_cases.json")

# A small inline helper used by several snippets to print a table with sorted keys.
DUMP = r"""local function dump(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  for _, k in ipairs(ks) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    if type(v) == 'table' then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = tostring(x) end
      v = '{' .. table.concat(parts, ',') .. '}'
    end
    ngx.say(k, '=', tostring(v))
  end
end
"""

# Strips the "chunkname:line: " position prefix from an error message. Positions differ
# between implementations (content_by_lua(nginx.conf:N), /usr/share/lua/5.1/resty/core/*.lua:N).
STRIP = r"""local function strip(e) return (tostring(e):gsub('^[^\n]-:%d+: ', '')) end
"""

CASES = []
READ_TIMEOUT = 3  # seconds; a request nginx never answers is recorded as no_response_timeout


def case(name, api, code, phase="content", path="", method="GET", headers=None, body=None,
         hdrs=(), content_code=None):
    assert name not in {c["name"] for c in CASES}, name
    CASES.append(dict(name=name, api=api, code=code.strip("\n"), phase=phase, path=path,
                      method=method, headers=headers or {}, body=body, hdrs=list(hdrs),
                      content_code=content_code))


CONTENT_DEFAULT = 'ngx.say("content")'
HF_CONTENT_DEFAULT = 'ngx.say("body")'


def location(c):
    loc = "/t_" + c["name"]
    ph = c["phase"]
    lines = [f"        location {loc} {{"]
    if ph == "content":
        lines.append("            content_by_lua_block {\n" + c["code"] + "\n            }")
    elif ph in ("access", "rewrite"):
        lines.append(f"            {ph}_by_lua_block {{\n" + c["code"] + "\n            }")
        lines.append("            content_by_lua_block {\n" + (c["content_code"] or CONTENT_DEFAULT)
                     + "\n            }")
    elif ph == "header_filter":
        lines.append("            content_by_lua_block {\n" + (c["content_code"] or HF_CONTENT_DEFAULT)
                     + "\n            }")
        lines.append("            header_filter_by_lua_block {\n" + c["code"] + "\n            }")
    elif ph == "body_filter":
        lines.append("            content_by_lua_block {\n" + (c["content_code"] or HF_CONTENT_DEFAULT)
                     + "\n            }")
        lines.append("            body_filter_by_lua_block {\n" + c["code"] + "\n            }")
    else:
        raise ValueError(ph)
    lines.append("        }")
    return "\n".join(lines)


def conf(d, port, cases):
    locs = "\n".join(location(c) for c in cases)
    return f"""
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    lua_shared_dict dogs 1m;
    lua_shared_dict cats 64k;
    server {{
        listen 127.0.0.1:{port};
{locs}
    }}
}}
"""


class _Conn:
    """A tiny HTTP/1.1 client on a raw socket, so that partial bodies and hangs are seen."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout, TimeoutError):
            self.eof = True
            raise
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_until(self, sep):
        while sep not in self.buf:
            if not self.fill():
                raise EOFError
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_n(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise EOFError
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def send(port, c):
    """Returns (result, [(name, value), ...])."""
    path = "/t_" + c["name"] + c["path"]
    body = c["body"].encode() if isinstance(c["body"], str) else c["body"]
    req = f"{c['method']} {path} HTTP/1.1\r\n"
    for k, v in c["headers"].items():
        for x in (v if isinstance(v, list) else [v]):
            req += f"{k}: {x}\r\n"
    raw = req.encode() + b"\r\n" + (body or b"")
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    sock.sendall(raw)
    conn = _Conn(sock)
    try:
        try:
            head = conn.read_until(b"\r\n\r\n")
        except EOFError:
            return {"status": None, "closed_without_response": True}, []
        except (socket.timeout, TimeoutError):
            return {"status": None, "no_response_timeout": True}, []
        except ConnectionResetError:
            return {"status": None, "closed_without_response": True}, []
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = []
        for ln in lines[1:]:
            if ln:
                k, v = ln.split(":", 1)
                headers.append((k, v.strip()))
        h = {k.lower(): v for k, v in headers}
        data = b""
        incomplete = False
        try:
            if c["method"] == "HEAD" or status in (204, 304) or 100 <= status < 200:
                pass
            elif h.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = conn.read_until(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        conn.read_until(b"\r\n")
                        break
                    data += conn.read_n(size)
                    conn.read_n(2)
            elif "content-length" in h:
                data = conn.read_n(int(h["content-length"]))
            else:
                while conn.fill():
                    pass
                data = conn.buf
        except (EOFError, socket.timeout, TimeoutError, ConnectionResetError):
            # keep what arrived: for chunked, the complete chunks plus a partial one
            if h.get("transfer-encoding", "").lower() == "chunked":
                rest = conn.buf
                while rest:
                    nl = rest.find(b"\r\n")
                    if nl < 0:
                        break
                    try:
                        size = int(rest[:nl].split(b";")[0].strip(), 16)
                    except ValueError:
                        break
                    data += rest[nl + 2:nl + 2 + size]
                    rest = rest[nl + 2 + size + 2:]
            else:
                data += conn.buf
            incomplete = True
        return {"status": status, "body_bytes": data, "incomplete": incomplete}, headers
    finally:
        sock.close()


def record(c, res, raw_headers):
    req = {"method": c["method"], "path": "/t_" + c["name"] + c["path"],
           "headers": c["headers"], "body": c["body"]}
    out = {"name": c["name"], "api": c["api"], "phase": c["phase"], "code": c["code"]}
    if c["content_code"]:
        out["content_code"] = c["content_code"]
    out["request"] = req
    if res.get("closed_without_response") or res.get("no_response_timeout"):
        key = "closed_without_response" if res.get("closed_without_response") else "no_response_timeout"
        out["expected"] = {"status": None, key: True, "body": None,
                           "headers": {}, "body_match": "status_only"}
        return out
    hmap = {}
    for k, v in raw_headers:
        hmap.setdefault(k.lower(), []).append(v)
    want = list(c["hdrs"])
    if c["phase"] == "content" and "content-type" not in want:
        want.insert(0, "content-type")
    headers = {}
    for h in want:
        v = hmap.get(h)
        headers[h] = None if v is None else (v[0] if len(v) == 1 else v)
    b = res["body_bytes"]
    try:
        body = b.decode("utf-8")
    except UnicodeDecodeError:
        body = None
    exp = {"status": res["status"], "body": body, "headers": headers}
    if body is None:
        exp["body_hex"] = b.hex()
    generated = b"<hr><center>nginx" in b
    exp["body_match"] = "status_only" if generated else "exact"
    if res["incomplete"]:
        exp["incomplete"] = True
    out["expected"] = exp
    return out


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=28417)
    ap.add_argument("--only", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (error.log)")
    a = ap.parse_args()
    define_cases()
    cases = [c for c in CASES if a.only is None or a.only in c["name"]]
    if not port_free(a.port):
        sys.exit(f"port {a.port} is busy")
    d = tempfile.mkdtemp(prefix="outpost-openresty-")
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf(d, a.port, cases))
    t = subprocess.run(["nginx", "-t", "-p", d, "-c", d + "/nginx.conf"], capture_output=True, text=True)
    if t.returncode != 0:
        sys.exit(t.stderr)
    p = subprocess.Popen(["nginx", "-p", d, "-c", d + "/nginx.conf"])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", a.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        results = []
        for c in cases:
            c["headers"] = {"Host": "localhost", **c["headers"]}
            if c["body"] is not None:
                c["headers"]["Content-Length"] = str(len(c["body"].encode()))
            res, rh = send(a.port, c)
            results.append(record(c, res, rh))
    finally:
        p.send_signal(signal.SIGQUIT)
        p.wait(timeout=10)
    if a.only is not None:
        for r in results:
            print(json.dumps(r, indent=1, ensure_ascii=False))
        print("temp dir:", d)
        return
    with open(OUT, "w") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(results)} cases to {OUT}; nginx dir {d}")


# ---------------------------------------------------------------------------------------
# The cases. Snippets are deterministic: no timestamps, pids, addresses or random values.
# ---------------------------------------------------------------------------------------
def define_cases():
    c = case
    # ---- ngx.say / ngx.print -------------------------------------------------------
    c("say_joins_arguments_and_appends_newline", "ngx.say", r"ngx.say('a', 1, true, nil == nil)",
      path="?x=1&y=2", headers={"X-Foo": "bar"})
    c("print_no_newline", "ngx.print", r"ngx.print('a', 'b'); ngx.print(1); ngx.print(false)")
    c("say_no_args_is_newline", "ngx.say", r"ngx.say()")
    c("say_nil_boolean_null", "ngx.say", r"ngx.say(nil, ' ', false, ' ', true, ' ', ngx.null)")
    c("say_table_array_of_strings", "ngx.say", r"ngx.say({'a', 'b', 'c'})")
    c("print_nested_tables", "ngx.print", r"ngx.print({'x', {'y', {'z', 1}}, '\n'})")
    c("say_empty_table", "ngx.say", r"ngx.say({})")
    c("say_table_numbers_and_bools", "ngx.say", r"""
local ok, err = pcall(ngx.say, {1, 2.5, 'x'})
ngx.say(tostring(ok), ' ', tostring(err))
local ok2, err2 = pcall(ngx.say, {true})
ngx.say(tostring(ok2), ' ', tostring(err2))
local ok3, err3 = pcall(ngx.say, {ngx.null, 'n'})
ngx.say(tostring(ok3), ' ', tostring(err3))
""")
    c("say_hash_table_error", "ngx.say", r"""
local ok, err = pcall(ngx.say, {a = 1})
ngx.say(tostring(ok), ' ', err)
""")
    c("say_function_arg_error", "ngx.say", r"""
local ok, err = pcall(ngx.say, print)
ngx.say(tostring(ok), ' ', err)
""")
    c("say_float_formatting", "ngx.say", r"ngx.say(0.1, ' ', 1/3, ' ', 100/3, ' ', 2.5, ' ', 3.0, ' ', 1e-5, ' ', 123456.789)")
    c("say_large_numbers", "ngx.say", r"ngx.say(1e20, ' ', 2^53, ' ', 2^53 + 1, ' ', 2^63, ' ', 1e15, ' ', 1e16, ' ', 99999999999999, ' ', 123456789012)")
    c("say_negative_zero_inf_nan", "ngx.say", r"ngx.say(-0, ' ', 0, ' ', 1/0, ' ', -1/0, ' ', tostring(0/0) == tostring(0/0))")
    c("say_integers", "ngx.say", r"ngx.say(0, ' ', -1, ' ', 42, ' ', 2147483647, ' ', -2147483648, ' ', 4294967296)")
    c("say_returns_one", "ngx.say", r"""
local ok, err = ngx.say('x')
ngx.say(type(ok), ' ', tostring(ok), ' ', tostring(err))
""")
    c("print_multiline_binary", "ngx.print", r"ngx.print('a\0b\r\n', 'é', '\t')")
    c("say_tostring_number_vs_concat", "ngx.say", r"ngx.say(tostring(1e100), ' ', 10 / 2, ' ', 7 % 3, ' ', -7 % 3, ' ', math.huge, ' ', math.pi)")

    # ---- ngx.exit ----------------------------------------------------------------------
    c("exit_200_after_say", "ngx.exit", r"ngx.say('hi'); ngx.exit(200); ngx.say('not reached')")
    c("exit_403", "ngx.exit", r"ngx.exit(403)")
    c("exit_404_constant", "ngx.exit", r"ngx.exit(ngx.HTTP_NOT_FOUND)")
    c("exit_500", "ngx.exit", r"ngx.exit(500)")
    c("exit_503", "ngx.exit", r"ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)")
    c("exit_204", "ngx.exit", r"ngx.exit(204)")
    c("exit_201_no_output", "ngx.exit", r"ngx.exit(201)")
    c("exit_302_without_location", "ngx.exit", r"ngx.exit(302)")
    c("exit_ok_after_output", "ngx.exit", r"ngx.say('x'); ngx.exit(ngx.OK); ngx.say('not reached')")
    c("exit_ok_no_output", "ngx.exit", r"ngx.exit(ngx.OK)")
    c("exit_after_status_set", "ngx.exit", r"ngx.status = 418; ngx.say('teapot'); ngx.exit(ngx.HTTP_OK)")
    c("exit_403_after_output", "ngx.exit", r"ngx.say('partial'); ngx.exit(403)")
    c("exit_error_constant", "ngx.exit", r"ngx.exit(ngx.ERROR)")
    c("exit_http_constants", "ngx.HTTP_*", r"""
ngx.say(ngx.HTTP_OK, ' ', ngx.HTTP_CREATED, ' ', ngx.HTTP_NO_CONTENT, ' ', ngx.HTTP_MOVED_PERMANENTLY, ' ',
  ngx.HTTP_MOVED_TEMPORARILY, ' ', ngx.HTTP_SEE_OTHER, ' ', ngx.HTTP_NOT_MODIFIED, ' ', ngx.HTTP_TEMPORARY_REDIRECT, ' ',
  ngx.HTTP_PERMANENT_REDIRECT, ' ', ngx.HTTP_BAD_REQUEST, ' ', ngx.HTTP_UNAUTHORIZED, ' ', ngx.HTTP_FORBIDDEN, ' ',
  ngx.HTTP_NOT_FOUND, ' ', ngx.HTTP_NOT_ALLOWED, ' ', ngx.HTTP_TOO_MANY_REQUESTS, ' ', ngx.HTTP_INTERNAL_SERVER_ERROR, ' ',
  ngx.HTTP_BAD_GATEWAY, ' ', ngx.HTTP_SERVICE_UNAVAILABLE, ' ', ngx.HTTP_GATEWAY_TIMEOUT)
ngx.say(ngx.OK, ' ', ngx.ERROR, ' ', ngx.AGAIN, ' ', ngx.DONE, ' ', ngx.DECLINED)
ngx.say(ngx.HTTP_GET, ' ', ngx.HTTP_HEAD, ' ', ngx.HTTP_POST, ' ', ngx.HTTP_PUT, ' ', ngx.HTTP_DELETE, ' ', ngx.HTTP_OPTIONS, ' ', ngx.HTTP_PATCH)
""")
    c("log_level_constants", "ngx.log", r"""
ngx.say(ngx.STDERR, ' ', ngx.EMERG, ' ', ngx.ALERT, ' ', ngx.CRIT, ' ', ngx.ERR, ' ', ngx.WARN, ' ', ngx.NOTICE, ' ', ngx.INFO, ' ', ngx.DEBUG)
ngx.say(select('#', ngx.log(ngx.ERR, 'logged ', 1, ' ', nil, ' ', true)))
print('global print goes to the error log')
ngx.say('done')
""")
    c("exit_403_in_access", "ngx.exit", r"ngx.exit(403)", phase="access")
    c("exit_ok_in_access_continues", "ngx.exit", r"ngx.header['X-Access'] = 'ran'; ngx.exit(ngx.OK)", phase="access", hdrs=["x-access"])
    c("exit_200_in_access_with_output", "ngx.exit", r"ngx.say('from access'); ngx.exit(200)", phase="access")
    c("exit_ok_in_rewrite_continues", "ngx.exit", r"ngx.header['X-Rewrite'] = 'ran'; ngx.exit(ngx.OK)", phase="rewrite", hdrs=["x-rewrite"])
    c("exit_401_in_rewrite", "ngx.exit", r"ngx.header['WWW-Authenticate'] = 'Basic realm=x'; ngx.exit(401)", phase="rewrite", hdrs=["www-authenticate"])
    c("say_in_access_without_exit", "ngx.say", r"ngx.say('from access')", phase="access")

    # ---- ngx.status ----------------------------------------------------------------------
    c("status_set_before_output", "ngx.status", r"ngx.status = 201; ngx.say(ngx.status)")
    c("status_read_default", "ngx.status", r"ngx.say(ngx.status)")
    c("status_read_after_output", "ngx.status", r"ngx.say('a'); ngx.say(ngx.status)")
    c("status_set_after_output", "ngx.status", r"""
ngx.say('a')
local ok, err = pcall(function() ngx.status = 500 end)
ngx.say(tostring(ok), ' ', tostring(err), ' ', ngx.status)
""")
    c("status_set_string", "ngx.status", r"""
local ok, err = pcall(function() ngx.status = '202' end)
ngx.say(tostring(ok), ' ', tostring(err), ' ', ngx.status, ' ', type(ngx.status))
""")
    c("status_set_in_access", "ngx.status", r"ngx.status = 202", phase="access")
    c("status_in_header_filter", "ngx.status", r"ngx.header['X-Status'] = ngx.status; ngx.status = 203", phase="header_filter", hdrs=["x-status"])
    c("status_unusual_code", "ngx.status", r"ngx.status = 299; ngx.say('odd')")

    # ---- ngx.header ----------------------------------------------------------------------
    c("header_set_custom", "ngx.header", r"ngx.header['X-Foo'] = 'bar'; ngx.say('ok')", hdrs=["x-foo"])
    c("header_underscores_to_dashes", "ngx.header", r"ngx.header.X_My_Header = 'v'; ngx.say('ok')", hdrs=["x-my-header"])
    c("header_multi_value_table", "ngx.header", r"ngx.header['Set-Cookie'] = {'a=1; Path=/', 'b=2'}; ngx.say('ok')", hdrs=["set-cookie"])
    c("header_read_back_case_insensitive", "ngx.header", r"""
ngx.header.X_Foo = 'bar'
ngx.say(ngx.header['x-foo'], ' ', ngx.header.X_FOO, ' ', ngx.header['X-Foo'], ' ', tostring(ngx.header.x_missing))
""", hdrs=["x-foo"])
    c("header_read_multi_value", "ngx.header", r"""
ngx.header.X_M = {'1', '2'}
local v = ngx.header.x_m
ngx.say(type(v), ' ', table.concat(v, ','))
""", hdrs=["x-m"])
    c("header_content_type", "ngx.header", r"ngx.header.content_type = 'application/json'; ngx.say('{}')")
    c("header_content_type_dash", "ngx.header", r"ngx.header['Content-Type'] = 'text/html; charset=utf-8'; ngx.say('<p>')")
    c("header_clear_with_nil", "ngx.header", r"""
ngx.header['X-A'] = '1'
ngx.header['X-A'] = nil
ngx.say(tostring(ngx.header['X-A']))
""", hdrs=["x-a"])
    c("header_clear_with_empty_table", "ngx.header", r"ngx.header.X_A = '1'; ngx.header.X_A = {}; ngx.say(tostring(ngx.header.X_A))", hdrs=["x-a"])
    c("header_number_and_bool_values", "ngx.header", r"""
ngx.header.X_Num = 42
ngx.header.X_Float = 1.5
local ok, err = pcall(function() ngx.header.X_Bool = true end)
ngx.say(tostring(ok), ' ', tostring(err), ' ', type(ngx.header.X_Num), ' ', tostring(ngx.header.X_Bool))
""", hdrs=["x-num", "x-float", "x-bool"])
    c("header_content_type_default_unset", "ngx.header", r"ngx.say(tostring(ngx.header.content_type))")
    c("header_set_after_output", "ngx.header", r"""
ngx.say('a')
local ok, err = pcall(function() ngx.header.X_Late = '1' end)
ngx.say(tostring(ok), ' ', tostring(err))
""", hdrs=["x-late"])
    c("header_crlf_in_value", "ngx.header", r"""
local ok, err = pcall(function() ngx.header.X_Inj = 'a\r\nX-Evil: 1' end)
ngx.say(tostring(ok), ' ', tostring(err))
""", hdrs=["x-inj", "x-evil"])
    c("header_content_length_set", "ngx.header", r"ngx.header.content_length = 3; ngx.print('abc')", hdrs=["content-length"])
    c("header_cache_control_table", "ngx.header", r"ngx.header['Cache-Control'] = {'no-cache', 'no-store'}; ngx.say('ok')", hdrs=["cache-control"])
    c("header_set_in_access", "ngx.header", r"ngx.header['X-Access'] = '1'", phase="access", hdrs=["x-access"])
    c("header_filter_set_header", "ngx.header", r"ngx.header['X-HF'] = 'yes'", phase="header_filter", hdrs=["x-hf"])
    c("header_filter_clear_content_type", "ngx.header", r"ngx.header.content_type = nil", phase="header_filter", hdrs=["content-type"])
    c("header_filter_read_content_type", "ngx.header", r"ngx.header.X_CT = tostring(ngx.header.content_type)", phase="header_filter", hdrs=["x-ct", "content-type"])
    c("header_filter_content_length", "ngx.header", r"ngx.header.X_CL = tostring(ngx.header.content_length); ngx.header.content_length = nil", phase="header_filter", hdrs=["x-cl", "content-length", "transfer-encoding"])
    c("resp_get_headers", "ngx.resp.get_headers", DUMP + r"""
ngx.header.X_One = '1'
ngx.header.X_Two = {'a', 'b'}
dump(ngx.resp.get_headers())
""", hdrs=["x-one", "x-two"])
    c("resp_add_header", "ngx.resp.add_header", r"""
local resp = require 'ngx.resp'
ngx.header.X_Add = 'first'
resp.add_header('X-Add', 'second')
resp.add_header('X-Add', 'third')
ngx.say(table.concat(ngx.header.X_Add, ','))
""", hdrs=["x-add"])
    c("headers_sent_and_send_headers", "ngx.send_headers", r"""
local before = ngx.headers_sent
ngx.header.X_S = '1'
local ok, err = ngx.send_headers()
ngx.say(tostring(before), ' ', tostring(ok), ' ', tostring(err), ' ', tostring(ngx.headers_sent))
""", hdrs=["x-s"])
    c("eof_stops_output", "ngx.eof", r"""
ngx.say('a')
local ok, err = ngx.eof()
ngx.say('b')
""")
    c("flush_between_outputs", "ngx.flush", r"""
ngx.say('a')
local ok, err = ngx.flush(true)
ngx.say(tostring(ok), ' ', tostring(err))
""")

    # ---- ngx.redirect ----------------------------------------------------------------------
    c("redirect_default_302_relative", "ngx.redirect", r"ngx.redirect('/foo')", hdrs=["location"])
    c("redirect_301_absolute", "ngx.redirect", r"ngx.redirect('http://example.com/x', 301)", hdrs=["location"])
    c("redirect_302_constant_with_query", "ngx.redirect", r"ngx.redirect('https://example.org/a?b=c&d', ngx.HTTP_MOVED_TEMPORARILY)", hdrs=["location"])
    c("redirect_303", "ngx.redirect", r"ngx.redirect('/see', 303)", hdrs=["location"])
    c("redirect_307", "ngx.redirect", r"ngx.redirect('http://example.com/t', 307)", hdrs=["location"])
    c("redirect_308", "ngx.redirect", r"ngx.redirect('http://example.com/p', 308)", hdrs=["location"])
    c("redirect_invalid_status", "ngx.redirect", r"""
local ok, err = pcall(ngx.redirect, '/x', 200)
ngx.say(tostring(ok), ' ', err)
""", hdrs=["location"])
    c("redirect_in_access", "ngx.redirect", r"ngx.redirect('http://example.com/login')", phase="access", hdrs=["location"])
    c("redirect_after_output", "ngx.redirect", r"""
ngx.say('a')
local ok, err = pcall(ngx.redirect, 'http://example.com/')
ngx.say(tostring(ok), ' ', tostring(err))
""", hdrs=["location"])
    c("redirect_relative_no_slash", "ngx.redirect", r"ngx.redirect('foo/bar')", hdrs=["location"])

    # ---- ngx.var --------------------------------------------------------------------------
    c("var_uri", "ngx.var", r"ngx.say(ngx.var.uri)", path="/sub/x.html?q=1")
    c("var_uri_decoded", "ngx.var", r"ngx.say(ngx.var.uri, ' ', ngx.var.request_uri)", path="/a%20b/%41?x=%20")
    c("var_args", "ngx.var", r"ngx.say(ngx.var.args)", path="?a=1&b=2")
    c("var_arg_x_not_unescaped", "ngx.var", r"ngx.say(ngx.var.arg_x, ' ', tostring(ngx.var.arg_y), ' ', tostring(ngx.var.arg_z), ' ', tostring(ngx.var.arg_X))", path="?x=hello%20world+1&y&X=upper")
    c("var_arg_repeated_first_wins", "ngx.var", r"ngx.say(ngx.var.arg_a)", path="?a=1&a=2")
    c("var_http_x_foo", "ngx.var", r"ngx.say(ngx.var.http_x_foo, ' ', ngx.var.http_user_agent, ' ', tostring(ngx.var.http_x_missing))",
      headers={"X-Foo": "bar", "User-Agent": "test-agent/1.0"})
    c("var_http_repeated_header", "ngx.var", r"ngx.say(ngx.var.http_x_rep)", headers={"X-Rep": ["one", "two"]})
    c("var_cookie", "ngx.var", r"ngx.say(ngx.var.cookie_session, ' ', ngx.var.cookie_a, ' ', tostring(ngx.var.cookie_none), ' ', ngx.var.http_cookie)",
      headers={"Cookie": "a=1; session=xyz"})
    c("var_request_method_post", "ngx.var", r"ngx.say(ngx.var.request_method)", method="POST", body="x")
    c("var_request_uri", "ngx.var", r"ngx.say(ngx.var.request_uri)", path="/p?x=1&y=%2F")
    c("var_scheme_protocol", "ngx.var", r"ngx.say(ngx.var.scheme, ' ', ngx.var.server_protocol, ' ', ngx.var.request)")
    c("var_host_default", "ngx.var", r"ngx.say(ngx.var.host, ' ', ngx.var.http_host)")
    c("var_host_lowercase_strip_port", "ngx.var", r"ngx.say(ngx.var.host, ' ', ngx.var.http_host)", headers={"Host": "Example.COM:8080"})
    c("var_server_port_type", "ngx.var", r"ngx.say(type(ngx.var.server_port), ' ', tonumber(ngx.var.server_port) > 20000, ' ', ngx.var.server_addr)")
    c("var_remote_addr", "ngx.var", r"ngx.say(ngx.var.remote_addr, ' ', type(ngx.var.remote_port), ' ', ngx.var.binary_remote_addr == '\127\0\0\1')")
    c("var_query_string_is_args", "ngx.var", r"ngx.say(ngx.var.query_string, ' [', ngx.var.is_args, ']')", path="?a=b")
    c("var_is_args_empty", "ngx.var", r"ngx.say('[', ngx.var.is_args, '] ', tostring(ngx.var.args), ' ', tostring(ngx.var.query_string))")
    c("var_content_length_post", "ngx.var", r"ngx.say(ngx.var.content_length, ' ', type(ngx.var.content_length), ' ', tostring(ngx.var.content_type))",
      method="POST", body="hello", headers={"Content-Type": "text/x-test"})
    c("var_content_length_get", "ngx.var", r"ngx.say(tostring(ngx.var.content_length))")
    c("var_missing_is_nil", "ngx.var", r"ngx.say(tostring(ngx.var.nonexistent_var_xyz), ' ', tostring(ngx.var.http_nope))")
    c("var_set_undefined_errors", "ngx.var", STRIP + r"""
local ok, err = pcall(function() ngx.var.foo_undefined = 'x' end)
ngx.say(tostring(ok), ' ', strip(err))
""")
    c("var_set_args", "ngx.var", r"ngx.var.args = 'z=9&w'; ngx.say(ngx.var.args, ' ', ngx.var.arg_z, ' ', ngx.var.request_uri)", path="?a=1")
    c("var_name_case_insensitive", "ngx.var", r"ngx.say(tostring(ngx.var.URI), ' ', tostring(ngx.var.Http_X_Foo))", headers={"X-Foo": "bar"})
    c("var_underscore_header_dropped", "ngx.var", r"ngx.say(tostring(ngx.var.http_x_under), ' ', tostring(ngx.req.get_headers()['x_under']), ' ', ngx.var.http_x_ok)",
      headers={"X_Under": "1", "X-Ok": "2"})
    c("var_request_length_and_misc", "ngx.var", r"ngx.say(type(ngx.var.request_time), ' ', ngx.var.document_uri, ' ', ngx.var.https == '', ' ', ngx.var.server_name == '')")
    # ---- ngx.req ---------------------------------------------------------------------------
    c("req_get_method_get", "ngx.req.get_method", r"ngx.say(ngx.req.get_method())")
    c("req_get_method_post", "ngx.req.get_method", r"ngx.say(ngx.req.get_method())", method="POST", body="")
    c("req_get_method_head", "ngx.req.get_method", r"ngx.header.X_Method = ngx.req.get_method(); ngx.say('body not sent for HEAD')", method="HEAD", hdrs=["x-method"])
    c("req_get_method_custom", "ngx.req.get_method", r"ngx.say(ngx.req.get_method())", method="PURGE")
    c("req_set_method", "ngx.req.set_method", r"""
ngx.req.set_method(ngx.HTTP_PUT)
ngx.say(ngx.req.get_method(), ' ', ngx.var.request_method)
local ok, err = pcall(ngx.req.set_method, 12345)
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("req_get_headers_lowercase", "ngx.req.get_headers", DUMP + r"dump(ngx.req.get_headers())",
      headers={"X-Foo": "bar", "X-BAR": "Baz", "Accept": "*/*"})
    c("req_get_headers_multi_values", "ngx.req.get_headers", r"""
local h = ngx.req.get_headers()
local v = h['x-multi']
ngx.say(type(v), ' ', #v, ' ', table.concat(v, '|'))
""", headers={"X-Multi": ["a", "b", "c"]})
    c("req_get_headers_underscore_lookup", "ngx.req.get_headers", r"""
local h = ngx.req.get_headers()
ngx.say(tostring(h.x_foo), ' ', tostring(h['X-Foo']), ' ', tostring(h['X_FOO']), ' ', tostring(rawget(h, 'x_foo')))
""", headers={"X-Foo": "bar"})
    c("req_get_headers_raw", "ngx.req.get_headers", DUMP + r"dump(ngx.req.get_headers(0, true))", headers={"X-Foo": "bar", "x-lower": "1"})
    c("req_get_headers_max", "ngx.req.get_headers", r"""
local h, err = ngx.req.get_headers(2)
local n = 0
for _ in pairs(h) do n = n + 1 end
ngx.say(n, ' ', tostring(err))
""", headers={"X-A": "1", "X-B": "2", "X-C": "3"})
    c("req_get_headers_default_limit", "ngx.req.get_headers", r"""
local h, err = ngx.req.get_headers()
local n = 0
for _ in pairs(h) do n = n + 1 end
ngx.say(n, ' ', tostring(err))
""", headers={f"X-H{i}": str(i) for i in range(105)})
    c("req_set_header_seen_in_var", "ngx.req.set_header", r"""
ngx.req.set_header('X-New', 'v1')
ngx.say(ngx.var.http_x_new, ' ', ngx.req.get_headers()['x-new'])
""")
    c("req_set_header_replaces", "ngx.req.set_header", r"""
ngx.req.set_header('X_Foo', 'replaced')
ngx.say(ngx.var.http_x_foo, ' ', tostring(ngx.req.get_headers()['x-foo']))
""", headers={"X-Foo": "orig"})
    c("req_set_header_table", "ngx.req.set_header", r"""
ngx.req.set_header('X-L', {'a', 'b'})
local v = ngx.req.get_headers()['x-l']
ngx.say(type(v), ' ', table.concat(v, ','), ' ', ngx.var.http_x_l)
""")
    c("req_clear_header", "ngx.req.clear_header", r"""
ngx.req.clear_header('X-Foo')
ngx.say(tostring(ngx.var.http_x_foo), ' ', tostring(ngx.req.get_headers()['x-foo']), ' ', ngx.var.http_x_keep)
""", headers={"X-Foo": "bar", "X-Keep": "k"})
    c("req_set_header_nil_clears", "ngx.req.set_header", r"""
ngx.req.set_header('X-Foo', nil)
ngx.say(tostring(ngx.var.http_x_foo))
""", headers={"X-Foo": "bar"})
    c("req_set_header_in_access_seen_in_content", "ngx.req.set_header", r"ngx.req.set_header('X-From-Access', 'yes')",
      phase="access", content_code=r"ngx.say(ngx.var.http_x_from_access)")
    c("req_get_uri_args_mixed", "ngx.req.get_uri_args", DUMP + r"dump(ngx.req.get_uri_args())",
      path="?a=1&b=2&a=3&c&d=&e=%20x+y&%66=f")
    c("req_get_uri_args_types", "ngx.req.get_uri_args", r"""
local args = ngx.req.get_uri_args()
ngx.say(type(args.a), ' ', type(args.c), ' ', tostring(args.c), ' ', type(args.d), ' [', args.d, ']')
""", path="?a=1&a=2&c&d=")
    c("req_get_uri_args_empty", "ngx.req.get_uri_args", r"""
local args, err = ngx.req.get_uri_args()
ngx.say(type(args), ' ', tostring(next(args)), ' ', tostring(err))
""")
    c("req_get_uri_args_max", "ngx.req.get_uri_args", r"""
local args, err = ngx.req.get_uri_args(2)
local n = 0
for _ in pairs(args) do n = n + 1 end
ngx.say(n, ' ', tostring(err), ' ', tostring(args.a), ' ', tostring(args.b), ' ', tostring(args.c))
""", path="?a=1&b=2&c=3")
    c("req_get_uri_args_odd_escapes", "ngx.req.get_uri_args", DUMP + r"dump(ngx.req.get_uri_args())",
      path="?x=%zz&y=%4&z=%E4%BD%A0&=v&&k==")
    c("req_set_uri_args_string", "ngx.req.set_uri_args", r"""
ngx.req.set_uri_args('x=1&y=2')
ngx.say(ngx.var.args, ' ', ngx.var.arg_y, ' ', ngx.req.get_uri_args().x)
""", path="?old=1")
    c("req_set_uri_args_table", "ngx.req.set_uri_args", r"""
ngx.req.set_uri_args({a = {'1', '3'}})
ngx.say(ngx.var.args)
ngx.req.set_uri_args({flag = true})
ngx.say(ngx.var.args)
ngx.req.set_uri_args({q = 'a b&c=d/é'})
ngx.say(ngx.var.args)
ngx.req.set_uri_args({n = 12})
ngx.say(ngx.var.args)
""")
    c("req_set_uri_in_content", "ngx.req.set_uri", r"""
ngx.req.set_uri('/new/path')
ngx.say(ngx.var.uri, ' ', ngx.var.request_uri)
""", path="?a=1")
    c("req_set_uri_escapes_question_mark", "ngx.req.set_uri", r"""
ngx.req.set_uri('/foo?x=1 y')
ngx.say(ngx.var.uri, ' ', tostring(ngx.var.args))
""")
    c("req_set_uri_jump_in_content_errors", "ngx.req.set_uri", r"""
local ok, err = pcall(ngx.req.set_uri, '/other', true)
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("req_set_uri_in_rewrite_no_jump", "ngx.req.set_uri", r"ngx.req.set_uri('/t_req_set_uri_in_rewrite_no_jump/changed')",
      phase="rewrite", content_code=r"ngx.say(ngx.var.uri, ' ', ngx.var.request_uri)")
    c("req_set_uri_empty_errors", "ngx.req.set_uri", r"""
local ok, err = pcall(ngx.req.set_uri, '')
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("req_http_version", "ngx.req.http_version", r"ngx.say(ngx.req.http_version(), ' ', type(ngx.req.http_version()))")
    c("req_read_body_get_body_data", "ngx.req.get_body_data", r"""
ngx.req.read_body()
local data = ngx.req.get_body_data()
ngx.say(type(data), ' ', data, ' ', tostring(ngx.req.get_body_file()))
""", method="POST", body="hello=world&a=b")
    c("req_get_body_data_without_read", "ngx.req.get_body_data", r"""
ngx.say(tostring(ngx.req.get_body_data()))
""", method="POST", body="abc")
    c("req_get_body_data_get_request", "ngx.req.get_body_data", r"""
ngx.req.read_body()
ngx.say(tostring(ngx.req.get_body_data()))
""")
    c("req_get_post_args", "ngx.req.get_post_args", DUMP + r"""
ngx.req.read_body()
local args, err = ngx.req.get_post_args()
dump(args)
ngx.say(tostring(err))
""", method="POST", body="a=1&b=2&a=3&c&d=%20x+y", headers={"Content-Type": "application/x-www-form-urlencoded"})
    c("req_get_post_args_not_read", "ngx.req.get_post_args", r"""
local args, err = ngx.req.get_post_args()
ngx.say(tostring(args), ' ', tostring(err))
""", method="POST", body="a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    c("req_get_post_args_other_content_type", "ngx.req.get_post_args", DUMP + r"""
ngx.req.read_body()
local args, err = ngx.req.get_post_args()
dump(args)
ngx.say(tostring(err))
""", method="POST", body="a=1&b=2", headers={"Content-Type": "application/json"})
    c("req_set_body_data", "ngx.req.set_body_data", r"""
ngx.req.read_body()
ngx.req.set_body_data('replaced')
ngx.say(ngx.req.get_body_data(), ' ', ngx.var.http_content_length)
""", method="POST", body="orig")
    c("req_start_time", "ngx.req.start_time", r"""
local t = ngx.req.start_time()
ngx.say(type(t), ' ', t <= ngx.now(), ' ', ngx.now() - t < 5)
""")
    c("req_raw_header", "ngx.req.raw_header", r"ngx.print(ngx.req.raw_header())", path="?q=1", headers={"X-Foo": "bar"})
    c("req_raw_header_no_request_line", "ngx.req.raw_header", r"ngx.print(ngx.req.raw_header(true))", headers={"X-Foo": "bar"})
    c("req_is_internal", "ngx.req.is_internal", r"ngx.say(tostring(ngx.req.is_internal()))")

    # ---- ngx.ctx / ngx.get_phase --------------------------------------------------------
    c("ctx_in_content", "ngx.ctx", r"""
ngx.ctx.a = 1
ngx.ctx.t = {x = 'y'}
ngx.say(ngx.ctx.a, ' ', ngx.ctx.t.x, ' ', type(ngx.ctx), ' ', tostring(ngx.ctx.missing))
""")
    c("ctx_replace_table", "ngx.ctx", STRIP + r"""
ngx.ctx = {b = 2}
ngx.say(ngx.ctx.b)
local ok, err = pcall(function() ngx.ctx = 'str' end)
ngx.say(tostring(ok), ' ', strip(err))
""")
    c("ctx_access_to_content", "ngx.ctx", r"ngx.ctx.user = 'alice'; ngx.ctx.n = (ngx.ctx.n or 0) + 1",
      phase="access", content_code=r"ngx.say(ngx.ctx.user, ' ', ngx.ctx.n)")
    c("ctx_rewrite_to_content", "ngx.ctx", r"ngx.ctx.route = 'r1'",
      phase="rewrite", content_code=r"ngx.say(tostring(ngx.ctx.route))")
    c("ctx_content_to_header_filter", "ngx.ctx", r"ngx.header['X-Ctx'] = ngx.ctx.x",
      phase="header_filter", content_code=r"ngx.ctx.x = 'from-content'; ngx.say('body')", hdrs=["x-ctx"])
    c("ctx_fresh_per_request", "ngx.ctx", r"ngx.ctx.count = (ngx.ctx.count or 0) + 1; ngx.say(ngx.ctx.count)")
    c("get_phase_content", "ngx.get_phase", r"ngx.say(ngx.get_phase())")
    c("get_phase_access", "ngx.get_phase", r"ngx.header['X-Phase'] = ngx.get_phase()", phase="access", hdrs=["x-phase"])
    c("get_phase_rewrite", "ngx.get_phase", r"ngx.header['X-Phase'] = ngx.get_phase()", phase="rewrite", hdrs=["x-phase"])
    c("get_phase_header_filter", "ngx.get_phase", r"ngx.header['X-Phase'] = ngx.get_phase()", phase="header_filter", hdrs=["x-phase"])

    # ---- ngx.null ------------------------------------------------------------------------
    c("null_tostring_type", "ngx.null", r"""
ngx.say(tostring(ngx.null), ' ', type(ngx.null), ' ', tostring(ngx.null == nil), ' ', tostring(not ngx.null))
local cjson = require 'cjson'
ngx.say(tostring(ngx.null == cjson.null), ' ', tostring(cjson.null))
""")

    # ---- cjson -----------------------------------------------------------------------------
    c("cjson_encode_object", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode({a = 1}))
ngx.say(cjson.encode({key = 'v', }))
""")
    c("cjson_encode_array", "cjson.encode", r"local cjson = require 'cjson'; ngx.say(cjson.encode({1, 2, 3}), ' ', cjson.encode({'a', {'b'}}))")
    c("cjson_encode_empty_table", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode({}), ' ', cjson.encode({{}}), ' ', type(cjson.empty_array), ' ', type(cjson.encode_empty_table_as_object))
""")
    c("cjson_encode_nested", "cjson.encode", r"local cjson = require 'cjson'; ngx.say(cjson.encode({a = {b = {1, 2, {c = true}}}}))")
    c("cjson_encode_string_escapes", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode('a/b "q" \\ é 😀'))
ngx.say(cjson.encode('\n\r\t\b\f\0\1\31\127'))
ngx.say(cjson.encode('\226\128\168'))
""")
    c("cjson_encode_numbers", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode({0.1, 1/3, 100, 3.0, -0, 1e20, 2^53, 2^63, 123456789012345, 1e-7}))
""")
    c("cjson_encode_inf_nan", "cjson.encode", r"""
local cjson = require 'cjson'
local ok, err = pcall(cjson.encode, 1/0)
ngx.say(tostring(ok), ' ', tostring(err))
ok, err = pcall(cjson.encode, {0/0})
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("cjson_encode_number_precision", "cjson.encode_number_precision", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode_number_precision())
local ok, err = pcall(cjson.encode_number_precision, 16)
ngx.say(tostring(ok), ' ', tostring(err))
cjson.encode_number_precision(3)
ngx.say(cjson.encode({0.1, 1/3, 2^53, 12345}))
cjson.encode_number_precision(14)
ngx.say(cjson.encode({0.1, 1/3, 2^53, 12345}))
""")
    c("cjson_encode_sparse_array_ok", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode({1, nil, 3}), ' ', cjson.encode({[1] = 'a', [4] = 'd'}))
""")
    c("cjson_encode_sparse_array_excessive", "cjson.encode", r"""
local cjson = require 'cjson'
local ok, err = pcall(cjson.encode, {[1] = 1, [20] = 2})
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("cjson_encode_sparse_array_convert", "cjson.encode_sparse_array", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode_sparse_array())
cjson.encode_sparse_array(true)
ngx.say(cjson.encode({[20] = 2}))
cjson.encode_sparse_array(false)
ngx.say(cjson.encode_sparse_array())
""")
    c("cjson_encode_null_and_booleans", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode({ngx.null, true, false}), ' ', cjson.encode(ngx.null), ' ', cjson.encode(true), ' ', cjson.encode({x = cjson.null}))
""")
    c("cjson_encode_scalars", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode('s'), ' ', cjson.encode(1), ' ', cjson.encode(nil), ' ', cjson.encode(''))
""")
    c("cjson_encode_function_error", "cjson.encode", r"""
local cjson = require 'cjson'
local ok, err = pcall(cjson.encode, {f = print})
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("cjson_safe_encode_error", "cjson.safe", r"""
local cjson_safe = require 'cjson.safe'
local s, err = cjson_safe.encode({f = function() end})
ngx.say(tostring(s), ' ', tostring(err))
""")
    c("cjson_encode_mixed_keys", "cjson.encode", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode({[1.5] = 'x'}), ' ', cjson.encode({[2] = 'y'}), ' ', cjson.encode({[-1] = 'z'}))
""")
    c("cjson_encode_deep_nesting", "cjson.encode", r"""
local cjson = require 'cjson'
local t = {}
local cur = t
for i = 1, 1001 do cur[1] = {}; cur = cur[1] end
local ok, err = pcall(cjson.encode, t)
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("cjson_version_fields", "cjson", r"""
local cjson = require 'cjson'
ngx.say(type(cjson._VERSION), ' ', cjson._NAME, ' ', type(cjson.new), ' ', type(require('cjson.safe').decode))
""")
    c("cjson_decode_object", "cjson.decode", r"""
local cjson = require 'cjson'
local t = cjson.decode('{"a":1,"b":[1,2,{"c":null}],"s":"x\\/y"}')
ngx.say(t.a, ' ', #t.b, ' ', tostring(t.b[3].c == cjson.null), ' ', tostring(t.b[3].c == ngx.null), ' ', t.s, ' ', math.type and 'mt' or type(t.a))
""")
    c("cjson_decode_array_numbers", "cjson.decode", r"""
local cjson = require 'cjson'
local t = cjson.decode('[1, 2.5, -0, 1e3, 12345678901234567890, "x", true, false]')
for i = 1, #t do ngx.say(tostring(t[i])) end
""")
    c("cjson_decode_invalid", "cjson.decode", r"""
local cjson = require 'cjson'
for _, s in ipairs({'{bad}', '[1,]', '[1] x', '', '{"a":1', 'nul', '"\\x"', "{'a':1}", '[1,2', '{"a" 1}', '01', '"abc'}) do
  local ok, err = pcall(cjson.decode, s)
  ngx.say(tostring(ok), ' ', tostring(err))
end
ngx.say(tostring(cjson.decode('[1e400]')[1]), ' ', tostring(cjson.decode('[-1e400]')[1]))
""")
    c("cjson_safe_decode_invalid", "cjson.safe", r"""
local cjson = require 'cjson.safe'
local v, err = cjson.decode('{"a":')
ngx.say(tostring(v), ' ', tostring(err))
ngx.say(cjson.decode('[1]')[1])
""")
    c("cjson_decode_unicode", "cjson.decode", r"""
local cjson = require 'cjson'
local s = cjson.decode('"\\u00e9\\ud83d\\ude00\\u0041"')
ngx.say(#s, ' ', s)
""")
    c("cjson_decode_top_level_scalars", "cjson.decode", r"""
local cjson = require 'cjson'
ngx.say(tostring(cjson.decode('null') == ngx.null), ' ', cjson.decode('"s"'), ' ', cjson.decode('12'), ' ', tostring(cjson.decode('true')))
""")
    c("cjson_decode_empty_structures", "cjson.decode", r"""
local cjson = require 'cjson'
local o = cjson.decode('{}')
local a = cjson.decode('[]')
ngx.say(type(o), ' ', tostring(next(o)), ' ', type(a), ' ', #a, ' ', cjson.encode(a), ' ', tostring(getmetatable(a)))
""")
    c("cjson_roundtrip", "cjson", r"""
local cjson = require 'cjson'
ngx.say(cjson.encode(cjson.decode('["a/b","\\u2028",1.0,0.5]')))
""")
    # ---- ngx.re --------------------------------------------------------------------------
    c("re_match_captures", "ngx.re.match", r"""
local m, err = ngx.re.match('hello 1234 world', '(\\d+)\\s+(\\w+)')
ngx.say(m[0], '|', m[1], '|', m[2], '|', tostring(m[3]), '|', tostring(err), '|', #m)
""")
    c("re_match_named_captures", "ngx.re.match", r"""
local m = ngx.re.match('date: 2024-05-17', '(?<year>\\d{4})-(?<mon>\\d{2})-(\\d{2})')
ngx.say(m[0], ' ', m.year, ' ', m[1], ' ', m.mon, ' ', m[2], ' ', m[3], ' ', #m)
""")
    c("re_match_unmatched_group_false", "ngx.re.match", r"""
local m = ngx.re.match('ab', 'a(x)?(b)')
ngx.say(type(m[1]), ' ', tostring(m[1]), ' ', m[2])
local n = ngx.re.match('b', '(?<opt>a)?b')
ngx.say(tostring(n.opt), ' ', tostring(n[1]))
""")
    c("re_match_no_match_nil", "ngx.re.match", r"""
local m, err = ngx.re.match('abc', 'z')
ngx.say(tostring(m), ' ', tostring(err))
""")
    c("re_match_flag_i", "ngx.re.match", r"ngx.say(ngx.re.match('HELLO', 'hello', 'i')[0], ' ', tostring(ngx.re.match('HELLO', 'hello')))")
    c("re_match_flags_jo", "ngx.re.match", r"ngx.say(ngx.re.match('abc', 'b+', 'jo')[0])")
    c("re_match_flag_x", "ngx.re.match", r"ngx.say(ngx.re.match('abc', ' a  b # comment', 'x')[0])")
    c("re_match_flag_s", "ngx.re.match", r"ngx.say(tostring(ngx.re.match('a\nb', 'a.b')), ' ', #ngx.re.match('a\nb', 'a.b', 's')[0])")
    c("re_match_flag_m", "ngx.re.match", r"ngx.say(tostring(ngx.re.match('x\ny', '^y')), ' ', ngx.re.match('x\ny', '^y', 'm')[0])")
    c("re_match_flag_u", "ngx.re.match", r"""
local a = ngx.re.match('é', '^.$')
local b = ngx.re.match('é', '^.$', 'u')
ngx.say(tostring(a), ' ', b and #b[0])
""")
    c("re_match_flag_d_longest", "ngx.re.match", r"ngx.say(ngx.re.match('abc', 'a|ab', 'd')[0], ' ', ngx.re.match('abc', 'a|ab')[0])")
    c("re_match_bad_regex", "ngx.re.match", r"""
local m, err = ngx.re.match('a', '(')
ngx.say(tostring(m), ' ', tostring(err))
""")
    c("re_match_unknown_flag", "ngx.re.match", STRIP + r"""
local ok, err = pcall(ngx.re.match, 'a', 'a', 'Q')
ngx.say(tostring(ok), ' ', strip(err))
""")
    c("re_match_ctx_pos", "ngx.re.match", r"""
local ctx = {pos = 3}
local m = ngx.re.match('abcabc', 'b', '', ctx)
ngx.say(m[0], ' ', ctx.pos)
local ctx2 = {}
ngx.re.match('xxab', 'a', '', ctx2)
ngx.say(ctx2.pos)
""")
    c("re_match_anchor_a", "ngx.re.match", r"ngx.say(tostring(ngx.re.match('xab', 'ab', 'a')), ' ', ngx.re.match('abx', 'ab', 'a')[0])")
    c("re_match_non_string_subject", "ngx.re.match", r"""
ngx.say(ngx.re.match(12345, '3(4)')[1])
local ok, err = pcall(ngx.re.match, nil, 'a')
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("re_find", "ngx.re.find", r"""
local from, to, err = ngx.re.find('hello 1234', '\\d+')
ngx.say(from, ' ', to, ' ', tostring(err))
local f2, t2 = ngx.re.find('ab12cd', '([a-z])(\\d)', 'jo', nil, 2)
ngx.say(f2, ' ', t2)
ngx.say(tostring(ngx.re.find('abc', 'z')))
""")
    c("re_gsub_template", "ngx.re.gsub", r"""
local s, n, err = ngx.re.gsub('hello world', '(o)', '[$1]')
ngx.say(s, ' ', n, ' ', tostring(err))
""")
    c("re_gsub_function", "ngx.re.gsub", r"""
local s, n = ngx.re.gsub('a1b22c333', '\\d+', function(m) return '<' .. m[0] .. '>' end)
ngx.say(s, ' ', n)
""")
    c("re_gsub_template_forms", "ngx.re.gsub", r"""
local s, n = ngx.re.gsub('abc', '(b)', '${1}x$0$$')
ngx.say(s, ' ', n)
""")
    c("re_gsub_bad_template", "ngx.re.gsub", r"""
local ok, a, b, c = pcall(ngx.re.gsub, 'abc', 'b', 'x$')
ngx.say(tostring(ok), ' ', tostring(a), ' ', tostring(b), ' ', tostring(c))
""")
    c("re_gsub_empty_pattern", "ngx.re.gsub", r"local s, n = ngx.re.gsub('abc', '', '-'); ngx.say(s, ' ', n)")
    c("re_gsub_function_returns_nonstring", "ngx.re.gsub", r"""
local s, n = ngx.re.gsub('a1b2', '\\d', function(m) return tonumber(m[0]) * 2 end)
ngx.say(s, ' ', n)
""")
    c("re_sub", "ngx.re.sub", r"""
local s, n = ngx.re.sub('aaa', 'a', 'b')
ngx.say(s, ' ', n)
local s2, n2 = ngx.re.sub('aaa', 'z', 'b')
ngx.say(s2, ' ', n2)
local s3, n3 = ngx.re.sub('John Smith', '(\\w+) (\\w+)', '$2, $1')
ngx.say(s3, ' ', n3)
""")
    c("re_gmatch", "ngx.re.gmatch", r"""
for m in ngx.re.gmatch('a1b2c3', '([a-z])(\\d)') do
  ngx.say(m[0], ' ', m[1], ' ', m[2])
end
""")
    c("re_gmatch_empty_matches", "ngx.re.gmatch", r"""
local n = 0
for m in ngx.re.gmatch('abc', '') do n = n + 1; ngx.print('[', m[0], ']') end
ngx.say(' ', n)
""")
    c("re_gmatch_iterator_manual", "ngx.re.gmatch", r"""
local it, err = ngx.re.gmatch('x=1,y=2', '(\\w)=(\\d)')
local m1 = it()
local m2 = it()
local m3 = it()
ngx.say(m1[1], m1[2], ' ', m2[1], m2[2], ' ', tostring(m3), ' ', tostring(err))
""")
    c("re_split", "ngx.re.split", r"""
local re = require 'ngx.re'
local res, err = re.split('a,b,,c', ',')
ngx.say(#res, ' ', table.concat(res, '|'), ' ', tostring(err))
""")
    c("re_split_max_and_captures", "ngx.re.split", r"""
local re = require 'ngx.re'
local r1 = re.split('a,b,c,d', ',', nil, nil, 2)
ngx.say(#r1, ' ', table.concat(r1, '|'))
local r2 = re.split('a1b2c', '(\\d)')
ngx.say(#r2, ' ', table.concat(r2, '|'))
local r3 = re.split(',a,b,', ',')
ngx.say(#r3, ' ', table.concat(r3, '|'))
local r4 = re.split('abc', '')
ngx.say(#r4, ' ', table.concat(r4, '|'))
local r5 = re.split('', ',')
ngx.say(#r5)
""")
    c("re_opt_flags", "ngx.re.opt", r"""
local re = require 'ngx.re'
ngx.say(type(re.opt), ' ', type(re.split))
""")

    # ---- encoding / hashing ---------------------------------------------------------------
    c("base64_encode", "ngx.encode_base64", r"""
ngx.say(ngx.encode_base64('hello'), ' ', ngx.encode_base64(''), ' [', ngx.encode_base64('a', true), '] ', ngx.encode_base64('\255\254\253'))
""")
    c("base64_encode_non_string", "ngx.encode_base64", r"""
ngx.say(ngx.encode_base64(123))
local ok, err = pcall(ngx.encode_base64, nil)
ngx.say(tostring(ok), ' ', tostring(err))
local ok2, res2 = pcall(ngx.encode_base64, {})
ngx.say(tostring(ok2), ' ', ngx.decode_base64(res2):match('^table: ') ~= nil)
ngx.say(ngx.encode_base64(true), ' ', ngx.encode_base64(1.5))
""")
    c("base64_decode", "ngx.decode_base64", r"""
ngx.say(ngx.decode_base64('aGVsbG8='), ' ', tostring(ngx.decode_base64('!!!')), ' ', tostring(ngx.decode_base64('YQ')), ' ', tostring(ngx.decode_base64('YQ=')), ' [', ngx.decode_base64(''), ']')
ngx.say(tostring(ngx.decode_base64('aGVs bG8=')), ' ', tostring(ngx.decode_base64('_-8')), ' ', tostring(ngx.decode_base64('YWJj\n')))
""")
    c("base64url_module", "ngx.base64", r"""
local b64 = require 'ngx.base64'
local e = b64.encode_base64url('\255\254\253\252?>')
ngx.say(e, ' ', b64.decode_base64url(e) == '\255\254\253\252?>')
local d, err = b64.decode_base64url('!!')
ngx.say(tostring(d), ' ', tostring(err))
""")
    c("md5_and_bin_lengths", "ngx.md5", r"""
ngx.say(ngx.md5('hello'), ' ', ngx.md5(''), ' ', #ngx.md5_bin('hello'), ' ', #ngx.sha1_bin('hello'))
local function hex(s) return (s:gsub('.', function(ch) return string.format('%02x', ch:byte()) end)) end
ngx.say(hex(ngx.sha1_bin('hello')), ' ', hex(ngx.md5_bin('abc')))
ngx.say(ngx.md5(123))
""")
    c("hmac_sha1", "ngx.hmac_sha1", r"""
local d = ngx.hmac_sha1('key', 'The quick brown fox jumps over the lazy dog')
ngx.say(#d, ' ', ngx.encode_base64(d))
""")
    c("crc32", "ngx.crc32_long", r"ngx.say(ngx.crc32_long('hello'), ' ', ngx.crc32_short('hello'), ' ', ngx.crc32_long(''), ' ', ngx.crc32_long('The quick brown fox jumps over the lazy dog'))")
    c("escape_uri", "ngx.escape_uri", r"""
ngx.say(ngx.escape_uri('a b+c/é?&=~-_.!*\'()'))
ngx.say(ngx.escape_uri(123), ' [', ngx.escape_uri(''), ']')
local ok, r = pcall(ngx.escape_uri, 'a b/c?', 0)
ngx.say(tostring(ok), ' ', tostring(r))
""")
    c("escape_uri_nil", "ngx.escape_uri", r"""
local ok, r = pcall(ngx.escape_uri, nil)
ngx.say(tostring(ok), ' [', tostring(r), ']')
""")
    c("unescape_uri", "ngx.unescape_uri", r"""
ngx.say(ngx.unescape_uri('a%20b+c%2Fz'), '|', ngx.unescape_uri('%zz%'), '|', ngx.unescape_uri('%E4%BD%A0'), '|', ngx.unescape_uri('%4'), '|', ngx.unescape_uri(12))
""")
    c("encode_args", "ngx.encode_args", r"""
ngx.say(ngx.encode_args({a = 1}))
ngx.say(ngx.encode_args({a = {1, 2}}))
ngx.say(ngx.encode_args({b = true}))
ngx.say('[', ngx.encode_args({c = false}), ']')
ngx.say(ngx.encode_args({q = 'a b&c=d/é'}))
ngx.say('[', ngx.encode_args({}), ']')
ngx.say(ngx.encode_args({['k y'] = 'v'}))
local ok, err = pcall(ngx.encode_args, {a = {x = 1}})
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("decode_args", "ngx.decode_args", DUMP + r"""
dump(ngx.decode_args('a=1&b=2&a=3&c&d=&e=%20x+y'))
local t, err = ngx.decode_args('x=1&y=2&z=3', 2)
local n = 0
for _ in pairs(t) do n = n + 1 end
ngx.say(n, ' ', tostring(err))
""")
    c("quote_sql_str", "ngx.quote_sql_str", r"""
ngx.say(ngx.quote_sql_str("it's \"x\"\n\r\t\0\\\26"))
ngx.say(ngx.quote_sql_str(''), ' ', ngx.quote_sql_str(12))
""")

    # ---- time ------------------------------------------------------------------------------
    c("http_time_cookie_time", "ngx.http_time", r"""
ngx.say(ngx.http_time(0))
ngx.say(ngx.cookie_time(0))
ngx.say(ngx.http_time(1700000000))
ngx.say(ngx.cookie_time(1700000000))
ngx.say(ngx.http_time(1.9))
""")
    c("parse_http_time", "ngx.parse_http_time", r"""
ngx.say(ngx.parse_http_time('Thu, 01 Jan 1970 00:00:00 GMT'))
ngx.say(ngx.parse_http_time('Tue, 14 Nov 2023 22:13:20 GMT'))
ngx.say(tostring(ngx.parse_http_time('bad')))
ngx.say(tostring(ngx.parse_http_time('Tuesday, 14-Nov-23 22:13:20 GMT')))
ngx.say(tostring(ngx.parse_http_time('Tue Nov 14 22:13:20 2023')))
""")
    c("today_localtime_utctime_shape", "ngx.today", r"""
local d, lt, ut = ngx.today(), ngx.localtime(), ngx.utctime()
ngx.say(#d, ' ', d:match('^%d%d%d%d%-%d%d%-%d%d$') ~= nil)
ngx.say(#lt, ' ', lt:match('^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$') ~= nil)
ngx.say(#ut, ' ', ut:match('^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$') ~= nil)
""")
    c("now_time_update_time_types", "ngx.now", r"""
local now, t = ngx.now(), ngx.time()
ngx.say(type(now), ' ', type(t), ' ', t - math.floor(now) <= 1, ' ', math.floor(t) == t)
ngx.say(select('#', ngx.update_time()), ' ', ngx.now() >= now)
ngx.say(math.floor(now * 1000 + 0.5) % 1 == 0, ' ', now > 1600000000)
""")
    c("sleep_then_output", "ngx.sleep", r"""
local t0 = ngx.now()
ngx.sleep(0.01)
ngx.update_time()
ngx.say('slept ', ngx.now() - t0 >= 0.005)
local r = ngx.sleep(0)
ngx.say(select('#', ngx.sleep(0)))
""")
    c("sleep_bad_args", "ngx.sleep", r"""
local ok, err = pcall(ngx.sleep, -1)
ngx.say(tostring(ok), ' ', tostring(err))
ok, err = pcall(ngx.sleep, 'x')
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("sleep_in_header_filter_forbidden", "ngx.sleep", r"ngx.sleep(0.01)", phase="header_filter")
    c("sleep_in_header_filter_pcall", "ngx.sleep", r"""
local ok, err = pcall(ngx.sleep, 0.01)
ngx.header['X-Err'] = tostring(err)
""", phase="header_filter", hdrs=["x-err"])
    c("say_in_header_filter_pcall", "ngx.say", r"""
local ok, err = pcall(ngx.say, 'x')
ngx.header['X-Err'] = tostring(err)
""", phase="header_filter", hdrs=["x-err"])
    c("exit_in_header_filter", "ngx.exit", r"ngx.exit(403)", phase="header_filter")
    c("redirect_in_header_filter_pcall", "ngx.redirect", r"""
local ok, err = pcall(ngx.redirect, '/x')
ngx.header['X-Err'] = tostring(err)
""", phase="header_filter", hdrs=["x-err", "location"])
    c("read_body_in_header_filter_pcall", "ngx.req.read_body", r"""
local ok, err = pcall(ngx.req.read_body)
ngx.header['X-Err'] = tostring(err)
""", phase="header_filter", hdrs=["x-err"])
    # ---- ngx.shared.DICT ---------------------------------------------------------------
    c("shdict_set_get", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:flush_all()
local ok, err, forcible = dogs:set('k', 'v')
ngx.say(tostring(ok), ' ', tostring(err), ' ', tostring(forcible))
local v, flags = dogs:get('k')
ngx.say(v, ' ', tostring(flags))
ngx.say(tostring(dogs:get('missing')))
""")
    c("shdict_value_types", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('n', 42); dogs:set('f', 1.5); dogs:set('b', false); dogs:set('s', ''); dogs:set('t', true)
for _, k in ipairs({'n', 'f', 'b', 's', 't'}) do
  local v = dogs:get(k)
  ngx.say(k, ' ', type(v), ' [', tostring(v), ']')
end
local ok, err = dogs:set('tbl', {})
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("shdict_add_exists", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:delete('a')
ngx.say(tostring(dogs:add('a', 1)))
local ok, err, forcible = dogs:add('a', 2)
ngx.say(tostring(ok), ' ', tostring(err), ' ', tostring(forcible), ' ', dogs:get('a'))
""")
    c("shdict_replace_not_found", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:delete('r')
local ok, err, forcible = dogs:replace('r', 1)
ngx.say(tostring(ok), ' ', tostring(err), ' ', tostring(forcible))
dogs:set('r', 1)
ok, err = dogs:replace('r', 2)
ngx.say(tostring(ok), ' ', tostring(err), ' ', dogs:get('r'))
""")
    c("shdict_incr", "ngx.shared.DICT", STRIP + r"""
local dogs = ngx.shared.dogs
dogs:delete('c')
ngx.say(tostring(dogs:incr('c', 1)), ' ', select(2, dogs:incr('c', 1)))
local v, err, forcible = dogs:incr('c', 1, 10)
ngx.say(v, ' ', tostring(err), ' ', tostring(forcible))
ngx.say(dogs:incr('c', -20), ' ', dogs:incr('c', 0.5))
dogs:set('str', 'abc')
local v2, err2 = dogs:incr('str', 1)
ngx.say(tostring(v2), ' ', tostring(err2))
local ok, err3 = pcall(dogs.incr, dogs, 'c', 'x')
ngx.say(tostring(ok), ' ', strip(err3))
""")
    c("shdict_incr_numeric_string_value", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('ns', '5')
local v, err = dogs:incr('ns', 1)
ngx.say(tostring(v), ' ', tostring(err))
local ok, err2 = pcall(dogs.incr, dogs, 'ns2', '2', 1)
ngx.say(tostring(ok), ' ', tostring(err2))
""")
    c("shdict_delete", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('d', 1)
ngx.say(select('#', dogs:delete('d')), ' ', tostring(dogs:get('d')), ' ', tostring(dogs:delete('never')))
dogs:set('d2', 1)
dogs:set('d2', nil)
ngx.say(tostring(dogs:get('d2')))
""")
    c("shdict_flags", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('fl', 'v', 0, 42)
local v, flags = dogs:get('fl')
ngx.say(v, ' ', flags)
dogs:set('fl0', 'v', 0, 0)
ngx.say(select('#', dogs:get('fl0')), ' ', select('#', dogs:get('missing_flag_key')))
""")
    c("shdict_ttl_expire", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('tt', 'v', 10)
local ttl = dogs:ttl('tt')
ngx.say(type(ttl), ' ', ttl <= 10 and ttl > 9)
dogs:set('nt', 'v')
ngx.say(dogs:ttl('nt'))
dogs:delete('gone')
ngx.say(tostring(dogs:ttl('gone')), ' ', select(2, dogs:ttl('gone')))
ngx.say(tostring(dogs:expire('nt', 100)), ' ', dogs:ttl('nt') > 99)
local ok, err = dogs:expire('gone', 1)
ngx.say(tostring(ok), ' ', tostring(err))
ngx.say(tostring(dogs:expire('nt', 0)), ' ', dogs:ttl('nt'))
""")
    c("shdict_get_stale", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('st', 'old', 0.001, 7)
ngx.sleep(0.01)
ngx.say(tostring(dogs:get('st')))
local v, flags, stale = dogs:get_stale('st')
ngx.say(tostring(v), ' ', tostring(flags), ' ', tostring(stale))
dogs:set('fresh', 'f')
ngx.say(tostring(select(3, dogs:get_stale('fresh'))))
""")
    c("shdict_get_keys", "ngx.shared.DICT", r"""
local cats = ngx.shared.cats
cats:flush_all()
cats:set('a', 1); cats:set('b', 2); cats:set('c', 3)
local keys = cats:get_keys()
table.sort(keys)
ngx.say(#keys, ' ', table.concat(keys, ','))
ngx.say(#cats:get_keys(2), ' ', #cats:get_keys(0))
cats:flush_all()
ngx.say(#cats:get_keys(), ' ', tostring(cats:get('a')))
ngx.say(cats:flush_expired())
""")
    c("shdict_capacity_free_space", "ngx.shared.DICT", r"""
local dogs, cats = ngx.shared.dogs, ngx.shared.cats
ngx.say(dogs:capacity(), ' ', cats:capacity(), ' ', type(dogs:free_space()), ' ', dogs:free_space() <= dogs:capacity())
""")
    c("shdict_safe_set_no_memory", "ngx.shared.DICT", r"""
local cats = ngx.shared.cats
cats:flush_all()
cats:flush_expired()
local big = string.rep('x', 4000)
local last_err
for i = 1, 100 do
  local ok, err = cats:safe_set('k' .. i, big)
  if not ok then last_err = err; break end
end
ngx.say(tostring(last_err))
local ok, err, forcible = cats:set('other', big)
ngx.say(tostring(ok), ' ', tostring(err), ' ', tostring(forcible))
local ok2, err2 = cats:safe_add('other2', big)
ngx.say(tostring(ok2), ' ', tostring(err2))
cats:flush_all()
cats:flush_expired()
""")
    c("shdict_value_too_big", "ngx.shared.DICT", r"""
local cats = ngx.shared.cats
local ok, err, forcible = cats:set('huge', string.rep('x', 200000))
ngx.say(tostring(ok), ' ', tostring(err), ' ', tostring(forcible))
""")
    c("shdict_list_ops", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:delete('l')
ngx.say(dogs:lpush('l', 'a'), ' ', dogs:rpush('l', 'b'), ' ', dogs:lpush('l', 'c'), ' ', dogs:rpush('l', 1))
ngx.say(dogs:llen('l'))
ngx.say(dogs:lpop('l'), ' ', dogs:rpop('l'), ' ', type(dogs:rpop('l')) )
ngx.say(dogs:llen('l'), ' ', dogs:lpop('l'), ' ', tostring(dogs:lpop('l')), ' ', dogs:llen('l'))
""")
    c("shdict_list_wrong_type", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:set('sv', 'string')
local n, err = dogs:lpush('sv', 'x')
ngx.say(tostring(n), ' ', tostring(err))
ngx.say(tostring(select(2, dogs:llen('sv'))), ' ', tostring(select(2, dogs:lpop('sv'))))
dogs:delete('lv')
dogs:rpush('lv', 'x')
local v, err2 = dogs:get('lv')
ngx.say(tostring(v), ' ', tostring(err2))
local v3, err3 = dogs:incr('lv', 1)
ngx.say(tostring(v3), ' ', tostring(err3))
local ok, err4 = pcall(dogs.lpush, dogs, 'lv', {})
ngx.say(tostring(ok), ' ', tostring(err4))
dogs:delete('lv')
""")
    c("shdict_list_missing_and_llen", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
dogs:delete('nolist')
ngx.say(tostring(dogs:lpop('nolist')), ' ', dogs:llen('nolist'))
""")
    c("shdict_missing_dict_and_bad_keys", "ngx.shared.DICT", r"""
ngx.say(tostring(ngx.shared.missing), ' ', type(ngx.shared.dogs))
local dogs = ngx.shared.dogs
local ok, err = pcall(dogs.get, dogs, nil)
ngx.say(tostring(ok), ' ', tostring(err))
local v, e = dogs:get('')
ngx.say(tostring(v), ' ', tostring(e))
local ok2, e2 = dogs:set('', 1)
ngx.say(tostring(ok2), ' ', tostring(e2))
local ok3, e3 = dogs:set(string.rep('k', 70000), 1)
ngx.say(tostring(ok3), ' ', tostring(e3))
local ok4, e4 = pcall(dogs.get, nil, 'k')
ngx.say(tostring(ok4), ' ', tostring(e4))
ngx.say(tostring(dogs:set(123, 'numkey')), ' ', dogs:get('123'))
""")
    c("shdict_set_exptime_negative", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
local ok, err = pcall(dogs.set, dogs, 'neg', 1, -1)
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("shdict_name_and_methods", "ngx.shared.DICT", r"""
local dogs = ngx.shared.dogs
ngx.say(type(dogs.get), ' ', type(dogs.safe_set), ' ', type(dogs.flush_expired), ' ', type(dogs.get_keys))
""")

    # ---- worker / config -------------------------------------------------------------------
    c("worker_info", "ngx.worker", r"""
ngx.say(ngx.worker.id(), ' ', ngx.worker.count(), ' ', type(ngx.worker.pid()), ' ', tostring(ngx.worker.exiting()))
""")
    c("config_info", "ngx.config", r"""
ngx.say(ngx.config.subsystem, ' ', type(ngx.config.ngx_lua_version), ' ', type(ngx.config.nginx_version), ' ', type(ngx.config.debug), ' ', type(ngx.config.prefix()), ' ', type(ngx.config.nginx_configure()))
ngx.say(ngx.config.ngx_lua_version >= 10000, ' ', ngx.config.nginx_version >= 1000000, ' ', ngx.config.prefix():sub(-1))
""")
    c("process_module", "ngx.process", r"""
local process = require 'ngx.process'
ngx.say(tostring(process.type()), ' ', type(process.get_master_pid()))
""")

    # ---- threads / timers / semaphores -----------------------------------------------------
    c("thread_spawn_wait", "ngx.thread.spawn", r"""
local t = ngx.thread.spawn(function(a, b) return a + b, 'x' end, 1, 2)
local ok, r1, r2 = ngx.thread.wait(t)
ngx.say(tostring(ok), ' ', r1, ' ', r2, ' ', type(t))
""")
    c("thread_output_order", "ngx.thread.spawn", r"""
ngx.say('before')
local t = ngx.thread.spawn(function() ngx.say('in thread'); ngx.sleep(0.001); ngx.say('thread resumed') end)
ngx.say('after spawn')
ngx.thread.wait(t)
ngx.say('after wait')
""")
    c("thread_error", "ngx.thread.wait", r"""
local t = ngx.thread.spawn(function() error('thread boom', 0) end)
local ok, err = ngx.thread.wait(t)
ngx.say(tostring(ok), ' ', tostring(err))
""")
    c("thread_kill", "ngx.thread.kill", r"""
local t = ngx.thread.spawn(function() ngx.sleep(1); ngx.say('never') end)
local ok, err = ngx.thread.kill(t)
ngx.say(tostring(ok), ' ', tostring(err))
local ok2, err2 = ngx.thread.kill(t)
ngx.say(tostring(ok2), ' ', tostring(err2))
local ok3, err3 = ngx.thread.wait(t)
ngx.say(tostring(ok3), ' ', tostring(err3))
""")
    c("thread_wait_first", "ngx.thread.wait", r"""
local slow = ngx.thread.spawn(function() ngx.sleep(0.05); return 'slow' end)
local fast = ngx.thread.spawn(function() ngx.sleep(0.001); return 'fast' end)
local ok, r = ngx.thread.wait(slow, fast)
ngx.say(tostring(ok), ' ', r)
ngx.thread.kill(slow)
""")
    c("coroutine_yield_across_sleep", "coroutine", r"""
local co = coroutine.create(function(a)
  ngx.sleep(0.001)
  local b = coroutine.yield(a + 1)
  return b * 2
end)
local ok1, v1 = coroutine.resume(co, 1)
local ok2, v2 = coroutine.resume(co, 10)
ngx.say(tostring(ok1), ' ', v1, ' ', tostring(ok2), ' ', v2, ' ', coroutine.status(co))
""")
    c("timer_at_writes_shdict", "ngx.timer.at", r"""
local dogs = ngx.shared.dogs
dogs:delete('timer_result')
local ok, err = ngx.timer.at(0, function(premature, a, b)
  dogs:set('timer_result', tostring(premature) .. ' ' .. a .. ' ' .. b .. ' ' .. ngx.get_phase())
end, 'x', 42)
ngx.say(tostring(ok), ' ', tostring(err))
ngx.sleep(0.05)
ngx.say(dogs:get('timer_result'))
""")
    c("timer_counts_and_bad_args", "ngx.timer.at", r"""
ngx.say(type(ngx.timer.running_count()), ' ', type(ngx.timer.pending_count()))
local ok, err = pcall(ngx.timer.at, -1, function() end)
ngx.say(tostring(ok), ' ', tostring(err))
local ok2, err2 = pcall(ngx.timer.at, 0, 'notafunction')
ngx.say(tostring(ok2), ' ', tostring(err2))
""")
    c("timer_every", "ngx.timer.every", r"""
local dogs = ngx.shared.dogs
dogs:set('every_n', 0)
local ok, err = ngx.timer.every(0.01, function(premature)
  if premature then return end
  dogs:incr('every_n', 1)
end)
ngx.say(tostring(ok), ' ', tostring(err))
ngx.sleep(0.1)
ngx.say(dogs:get('every_n') >= 3)
local ok2, err2 = pcall(ngx.timer.every, 0, function() end)
ngx.say(tostring(ok2), ' ', tostring(err2))
""")
    c("semaphore_post_wait", "ngx.semaphore", r"""
local semaphore = require 'ngx.semaphore'
local sema = semaphore.new(0)
ngx.thread.spawn(function() ngx.sleep(0.001); sema:post(1) end)
local ok, err = sema:wait(1)
ngx.say(tostring(ok), ' ', tostring(err), ' ', sema:count())
""")
    c("semaphore_timeout_and_count", "ngx.semaphore", r"""
local semaphore = require 'ngx.semaphore'
local sema = semaphore.new(2)
ngx.say(sema:count())
ngx.say(tostring(sema:wait(0)), ' ', sema:count())
sema:wait(0)
local ok, err = sema:wait(0.01)
ngx.say(tostring(ok), ' ', tostring(err), ' ', sema:count())
sema:post(3)
ngx.say(sema:count())
""")

    # ---- LuaJIT / tables / errors ---------------------------------------------------------
    c("table_new_clear", "table.new", r"""
local new_tab = require 'table.new'
local clear_tab = require 'table.clear'
local t = new_tab(4, 4)
ngx.say(type(t), ' ', #t, ' ', tostring(next(t)))
t[1] = 'a'; t.x = 'b'
clear_tab(t)
ngx.say(#t, ' ', tostring(next(t)), ' ', type(table.new), ' ', type(table.clear))
""")
    c("table_extensions_luajit2", "table.nkeys", r"""
for _, m in ipairs({'table.nkeys', 'table.isempty', 'table.isarray', 'table.clone'}) do
  local ok, f = pcall(require, m)
  ngx.say(m, ' ', tostring(ok), ' ', type(f))
end
local nkeys = require 'table.nkeys'
ngx.say(nkeys({1, 2, x = 3}))
""")
    # ---- body_filter / ngx.arg / ngx.balancer outside its phase --------------------------
    bf = "body_filter"
    c("body_filter_upper", "ngx.arg", r"ngx.arg[1] = string.upper(ngx.arg[1])", phase=bf)
    c("body_filter_calls_and_trailer", "ngx.arg", r"""
local ctx = ngx.ctx
ctx.calls = (ctx.calls or '') .. '[' .. #ngx.arg[1] .. ',' .. tostring(ngx.arg[2]) .. ']'
if ngx.arg[2] then ngx.arg[1] = ngx.arg[1] .. ctx.calls .. '\n' end
""", phase=bf)
    c("body_filter_drop_with_nil", "ngx.arg", r"ngx.arg[1] = nil", phase=bf)
    c("body_filter_table_and_number", "ngx.arg", r"""
if ngx.arg[2] then ngx.arg[1] = 42 else ngx.arg[1] = {'<', ngx.arg[1], '>'} end
""", phase=bf)
    c("body_filter_ends_early", "ngx.arg", r"""
if ngx.arg[2] then ngx.arg[1] = 'never\n' else ngx.arg[1] = ngx.arg[1] .. 'end\n'; ngx.arg[2] = true end
""", phase=bf)
    c("body_filter_arg_reads", "ngx.arg", r"""
ngx.arg[1] = type(ngx.arg) .. ' ' .. #ngx.arg .. ' ' .. type(ngx.arg[2]) .. ' ' .. tostring(ngx.arg[3])
  .. ' ' .. tostring(ngx.arg[0]) .. ' ' .. tostring(ngx.arg['1']) .. '\n'
""", phase=bf)
    c("body_filter_arg_bad_writes", "ngx.arg", STRIP + r"""
if not ngx.arg[2] then return end
local ok, e = pcall(function() ngx.arg[1] = true end)
local ok2, e2 = pcall(function() ngx.arg[3] = 'x' end)
ngx.arg[1] = strip(e) .. '\n' .. strip(e2) .. '\n'
""", phase=bf)
    c("body_filter_disabled_apis", "body_filter", r"""
if not ngx.arg[2] then return end
local out = {}
local function t(name, f, ...) local ok, e = pcall(f, ...); out[#out+1] = name .. '=' .. tostring(ok) .. ',' .. tostring(e) end
t('phase', ngx.get_phase)
t('say', ngx.say, 'x')
t('print', ngx.print, 'x')
t('sleep', ngx.sleep, 0.01)
t('tcp', ngx.socket.tcp)
t('udp', ngx.socket.udp)
t('exit', ngx.exit, 200)
t('redirect', ngx.redirect, '/x')
t('read_body', ngx.req.read_body)
t('flush', ngx.flush)
t('send_headers', ngx.send_headers)
t('thread', ngx.thread.spawn, function() end)
t('timer', ngx.timer.at, 0, function() end)
t('headers_sent', function() return ngx.headers_sent end)
ngx.arg[1] = table.concat(out, '\n') .. '\n'
""", phase=bf)
    c("body_filter_reads_the_response_head", "body_filter", r"""
if not ngx.arg[2] then return end
ngx.header['X-Late'] = 'ignored'
ngx.arg[1] = ngx.status .. ' ' .. tostring(ngx.header.content_type) .. ' ' .. ngx.var.uri .. '\n'
""", phase=bf, hdrs=["x-late"])
    c("body_filter_sees_ctx_from_content", "ngx.ctx", r"""
if ngx.arg[2] then ngx.arg[1] = tostring(ngx.ctx.from) .. '\n' end
""", phase=bf, content_code=r"ngx.ctx.from = 'content'; ngx.say('body')")
    c("body_filter_empty_body_gets_one_call", "ngx.arg", r"""
ngx.arg[1] = '[' .. #ngx.arg[1] .. ',' .. tostring(ngx.arg[2]) .. ']'
""", phase=bf, content_code=r"ngx.print('')")
    c("arg_outside_body_filter", "ngx.arg", STRIP + r"""
local ok, e = pcall(function() return ngx.arg[1] end)
ngx.say(tostring(ok), ' ', strip(e))
local ok2, e2 = pcall(function() ngx.arg[1] = 'x' end)
ngx.say(tostring(ok2), ' ', strip(e2))
""")
    c("balancer_api_without_upstream", "ngx.balancer", r"""
local b = require 'ngx.balancer'
ngx.say(tostring(b.set_current_peer('127.0.0.1', 80)), ' ', select(2, b.set_current_peer('127.0.0.1', 80)))
ngx.say(tostring(select(3, b.get_last_failure())))
ngx.say(tostring(select(2, b.set_more_tries(1))), ' ', tostring(select(2, b.set_timeouts(1, 1, 1))))
""")
    c("error_string_in_content", "error", r"error('boom')")
    c("error_table_in_content", "error", r"error({code = 1})")
    c("error_after_output", "error", r"ngx.say('partial'); ngx.flush(true); error('after output')")
    c("error_after_output_no_flush", "error", r"ngx.say('buffered'); error('after output')")
    c("error_in_access", "error", r"error('access boom')", phase="access")
    c("error_in_rewrite", "error", r"error('rewrite boom')", phase="rewrite")
    c("error_in_header_filter", "error", r"error('hf boom')", phase="header_filter")
    c("error_nil_index_in_content", "error", r"local t = nil; ngx.say(t.x)")
    c("pcall_error_table", "error", r"""
local ok, err = pcall(error, {code = 42})
ngx.say(tostring(ok), ' ', type(err), ' ', err.code)
""")
    c("pcall_error_position_prefix", "error", r"""
local ok, err = pcall(function() error('boom') end)
ngx.say(tostring(err:match('^content_by_lua%(nginx%.conf:%d+%):%d+: boom$') ~= nil))
ngx.say((err:gsub('^.-:%d+: ', '')))
local ok2, err2 = pcall(error, 'lvl0', 0)
ngx.say(err2)
""")
    c("pcall_runtime_error_messages", "error", r"""
local function strip(e) return (tostring(e):gsub('^.-:%d+: ', '')) end
local ok, e1 = pcall(function() undefined_fn() end)
ngx.say(strip(e1))
local ok2, e2 = pcall(function() local t = nil; return t.x end)
ngx.say(strip(e2))
local ok3, e3 = pcall(function() return 1 + {} end)
ngx.say(strip(e3))
local ok4, e4 = pcall(function() return #nil end)
ngx.say(strip(e4))
local ok5, e5 = pcall(function() return 'a' < 1 end)
ngx.say(strip(e5))
""")
    c("xpcall_traceback_type", "error", r"""
local ok, tb = xpcall(function() error('x') end, debug.traceback)
ngx.say(tostring(ok), ' ', type(tb), ' ', tb:find('stack traceback:', 1, true) ~= nil)
""")
    c("global_variable_write", "globals", r"""
my_global_var = 1
ngx.say(my_global_var, ' ', type(_G), ' ', rawget(_G, 'my_global_var'))
""")
    c("global_fresh_per_request", "globals", r"""
ngx.say(tostring(rawget(_G, 'per_request_global')))
per_request_global = 'set'
""")
    c("string_format_q", "string.format", r"""
ngx.say(string.format('%q', 'a\nb"\0c\r\\d\1'))
ngx.say(string.format('%5.2f|%d|%x|%s|%-3s|%05d', 1/3, 3.7, 255, nil, 'a', 42))
ngx.say(string.format('%s %s', 1e100, 2^53))
ngx.say(string.format('%g %g %.3g', 0.1, 1e20, math.pi))
""")
    c("bit_ops", "bit", r"""
ngx.say(bit.band(0xff, 0x0f), ' ', bit.bor(1, 2), ' ', bit.bxor(5, 3), ' ', bit.lshift(1, 31), ' ', bit.rshift(-1, 28), ' ', bit.arshift(-16, 2), ' ', bit.tohex(255), ' ', bit.bnot(0), ' ', bit.tobit(2^32 + 1))
""")
    c("jit_info", "jit", r"""
ngx.say(type(jit.version), ' ', jit.version:match('^LuaJIT 2%.1') ~= nil, ' ', type(jit.version_num), ' ', jit.os, ' ', jit.arch, ' ', require('ffi').sizeof('int'), ' ', _VERSION)
""")
    c("luajit_lua52_compat", "lua", r"""
local ok = pcall(load, 'return 1')
ngx.say(type(table.pack), ' ', type(table.unpack), ' ', type(unpack), ' ', type(setfenv), ' ', type(math.type), ' ', type(string.pack), ' ', type(goto_test))
ngx.say(select('#', 1, nil, 3), ' ', #'é', ' ', ('x'):rep(3, ','), ' ', tostring(load('return 7')()))
""")
    c("tostring_numbers_lua", "lua", r"""
ngx.say(tostring(1e15), ' ', tostring(1e16), ' ', tostring(2^53), ' ', tostring(-0.0), ' ', tostring(0.1 + 0.2), ' ', tostring(1/0), ' ', tonumber('0x10'), ' ', tonumber('1e2'), ' ', tostring(tonumber('abc')), ' ', tonumber(' 5 '))
""")


if __name__ == "__main__":
    main()
