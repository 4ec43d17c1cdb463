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
connection with Python's http.client, records status / headers / exact body bytes, and
stops that nginx (SIGQUIT to the pid it started) at the end.

Recorded with (Debian bookworm packages):
    nginx 1.22.1 (1.22.1-9+deb12u11)
    libnginx-mod-http-lua 0.10.23 (1:0.10.23-1+deb12u1), ngx.config.ngx_lua_version == 10023
    lua-resty-core 0.1.25 (0.1.25-1), lua-resty-lrucache 0.13
    LuaJIT: libluajit2-5.1-2 2.1-20230119-1 (OpenResty's branch), jit.version == "LuaJIT 2.1.0-beta3"
    lua-cjson 2.1.0 (2.1.0+dfsg-2.2) -- Debian's is UPSTREAM mpx lua-cjson, not OpenResty's fork
    (no cjson.empty_array, no encode_empty_table_as_object, "/" is escaped as "\\/")

Case layout (mirrors what the Rust harness runs):
  phase "content":       location has `content_by_lua_block { <code> }`
  phase "access":        `access_by_lua_block { <code> }` + `content_by_lua_block { ngx.say("content") }`
  phase "rewrite":       `rewrite_by_lua_block { <code> }` + same content
  phase "header_filter": `content_by_lua_block { ngx.say("body") }` + `header_filter_by_lua_block { <code> }`
  Optional "content_code": for access/rewrite/header_filter cases, replaces the default
  content code above (used to show ngx.ctx etc. crossing phases).

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
  * Location headers for relative redirects are made absolute by nginx with the Host header
    and the listening port: the port here is PORT (28417).
"""

import argparse
import http.client
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

CASES = []


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


def send(port, c):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    path = "/t_" + c["name"] + c["path"]
    body = c["body"].encode() if isinstance(c["body"], str) else c["body"]
    conn.putrequest(c["method"], path, skip_host=True, skip_accept_encoding=True)
    for k, v in c["headers"].items():
        for x in (v if isinstance(v, list) else [v]):
            conn.putheader(k, x)
    conn.endheaders(body)
    result = {}
    try:
        r = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError) as e:
        conn.close()
        return {"status": None, "closed_without_response": True, "error": type(e).__name__}, []
    result["status"] = r.status
    raw_headers = r.getheaders()
    incomplete = False
    try:
        data = r.read()
    except http.client.IncompleteRead as e:
        data = e.partial
        incomplete = True
    conn.close()
    result["body_bytes"] = data
    result["incomplete"] = incomplete
    return result, raw_headers


def record(c, res, raw_headers):
    req = {"method": c["method"], "path": "/t_" + c["name"] + c["path"],
           "headers": c["headers"], "body": c["body"]}
    out = {"name": c["name"], "api": c["api"], "phase": c["phase"], "code": c["code"]}
    if c["content_code"]:
        out["content_code"] = c["content_code"]
    out["request"] = req
    if res.get("closed_without_response"):
        out["expected"] = {"status": None, "closed_without_response": True, "body": None,
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
    pass  # CASES-BEGIN


if __name__ == "__main__":
    main()
