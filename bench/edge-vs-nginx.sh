#!/usr/bin/env bash
# The edge beside Debian's nginx (and the origin served directly), through the shared
# peer harness: same origin, same number of workers, wrk, interleaved repetitions.
#
#   bench/edge-vs-nginx.sh                      # pass_1k, pass_100k; c64 and c64close
#   CASES="hit_1k hit_100k" PEERS="nginx varnish candidate" bench/edge-vs-nginx.sh   # cache hits
#   CASES="lua_content lua_access" PEERS="nginx candidate" bench/edge-vs-nginx.sh     # Lua
#   REPS=5 DURATION=10 bench/edge-vs-nginx.sh   # any knob of ../shared/bench/compare.sh
#   OUTPOST_BIN=target/pgo/use/x86_64-unknown-linux-gnu/release/outpost bench/edge-vs-nginx.sh
#                                               # the edge from another build (bench/pgo-build.sh's)
#
# Needs: apt-get install -y nginx wrk curl python3. Builds the release binary first.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HARNESS="${HARNESS:-$ROOT/../shared/bench/compare.sh}"
[ -x "$HARNESS" ] || { echo "peer harness not found at $HARNESS (set HARNESS=...)" >&2; exit 2; }

(cd "$ROOT" && cargo build --release -p outpost)

# The shared harness's awk scripts use names gawk reserves (`load`): when gawk is the system
# awk (installing mariadb-server makes it so), run them with mawk.
if awk --version 2>/dev/null | grep -q "GNU Awk" && command -v mawk >/dev/null; then
  SHIM="$(mktemp -d)"; ln -s "$(command -v mawk)" "$SHIM/awk"; export PATH="$SHIM:$PATH"
fi

export WORKERS="${WORKERS:-$(nproc)}"
export PORT_BASE="${PORT_BASE:-18000}"
EDGE_PORT=$((PORT_BASE + 501))
ADMIN_PORT=$((PORT_BASE + 509))
export CANDIDATE_NAME="${CANDIDATE_NAME:-outpost-edge}"
CACHE_PORT=$((PORT_BASE + 502))
export CANDIDATE_PASS_URL="http://127.0.0.1:$EDGE_PORT"
export CANDIDATE_CACHE_URL="http://127.0.0.1:$CACHE_PORT"
LUA_PORT=$((PORT_BASE + 503))
LUA_ACCESS_PORT=$((PORT_BASE + 504))
export CANDIDATE_LUA_URL="http://localhost:$LUA_PORT/"
export CANDIDATE_LUA_ACCESS_URL="http://127.0.0.2:$LUA_ACCESS_PORT"
# The harness exports ORIGIN_HOSTPORT before starting the candidate; the wrapper writes the
# config from it. Access log off, as the nginx peer has it.
export CANDIDATE_CMD="$ROOT/bench/run-edge.sh $EDGE_PORT $ADMIN_PORT $WORKERS $CACHE_PORT $LUA_PORT $LUA_ACCESS_PORT"
export CASES="${CASES:-direct_1k pass_1k pass_100k direct_100k}"
export LOADS="${LOADS:-c64 c64close}"
export PEERS="${PEERS:-origin nginx candidate}"
exec "$HARNESS"
