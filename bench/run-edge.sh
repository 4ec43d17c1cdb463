#!/usr/bin/env bash
# Started by the peer harness (with ORIGIN_HOSTPORT exported): writes a pass-through config
# for the edge and runs it in the foreground.
set -euo pipefail
port="$1" admin="$2" workers="$3" cache_port="${4:-}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
conf="$(mktemp -d)/edge.yaml"
cat > "$conf" <<YAML
version: 1
upstreams:
  - name: origin
    peers: [{address: "${ORIGIN_HOSTPORT}"}]
    keepalive: 256
applications:
  - name: bench
    domains: [localhost]
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
exec "$ROOT/target/release/outpost" edge --config "$conf" --workers "$workers" \
  --admin "127.0.0.1:${admin}" --access-log off
