#!/usr/bin/env bash
# Started by the peer harness (with ORIGIN_HOSTPORT exported): writes a pass-through config
# for the edge and runs it in the foreground.
set -euo pipefail
port="$1" admin="$2" workers="$3" cache_port="${4:-}" lua_port="${5:-}" lua_access_port="${6:-}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
conf="$(mktemp -d)/edge.yaml"
cat > "$conf" <<YAML
version: 1
shared_dicts: [{name: ratelimit, capacity_bytes: 10485760}]
upstreams:
  - name: origin
    peers: [{address: "${ORIGIN_HOSTPORT}"}]
    keepalive: 256
applications:
  - name: bench
    domains: [bench.localhost]
    is_default: true
    listeners: [{address: "127.0.0.1:${port}"}]
    upstream: origin
YAML
# A second application on its own listener caches everything (memory tier).
if [ -n "$cache_port" ]; then
cat >> "$conf" <<YAML
  - name: cached
    domains: ["127.0.0.1"]
    listeners: [{address: "127.0.0.1:${cache_port}"}]
    upstream: origin
    cache_rules: [{}]
YAML
fi
# The peer harness's Lua cases, as its nginx-lua peer has them. Domains are unique across
# applications here, so each listener is reached under its own host name.
if [ -n "$lua_port" ]; then
cat >> "$conf" <<YAML
  - name: lua-content
    domains: [localhost]
    listeners: [{address: "127.0.0.1:${lua_port}"}]
    lua: {content: {inline: "ngx.say('hello from lua')"}}
  - name: lua-access
    domains: ["127.0.0.2"]
    listeners: [{address: "127.0.0.2:${lua_access_port}"}]
    upstream: origin
    lua:
      access:
        inline: |
          local n, err = ngx.shared.ratelimit:incr(ngx.var.remote_addr, 1, 0)
          if not n then
              ngx.log(ngx.ERR, "incr failed: ", err)
              return ngx.exit(500)
          end
          if n < 0 then return ngx.exit(429) end
YAML
fi
exec "${OUTPOST_BIN:-$ROOT/target/release/outpost}" edge --config "$conf" --workers "$workers" \
  --admin "127.0.0.1:${admin}" --access-log off
