#!/usr/bin/env bash
# Runs the HTTP caching test suite http-tests/cache-tests against the edge's cache and, for
# comparison, Apache Traffic Server, nginx proxy_cache and Varnish; writes one JSON per
# implementation and SUMMARY.md. The suite is not part of this repository:
#
#   git clone https://github.com/http-tests/cache-tests && (cd cache-tests && npm install)
#   SUITE=$PWD/cache-tests bench/cache-conformance/run.sh
#   SUITE=... IMPLS="outpost" OUTPOST_BIN=/path/to/outpost bench/cache-conformance/run.sh
#   SUITE=... IMPLS=outpost OUTPOST_STALE_IF_ERROR=600 bench/cache-conformance/run.sh
#
# SUITE (required), OUTPOST_BIN (default target/release/outpost; not built here), IMPLS
# (default "outpost ats nginx varnish"), RESULTS_DIR (default: a new temporary directory),
# OUTPOST_STALE_IF_ERROR (stale_if_error_seconds for the cache rule; default unset),
# COMPARE_WITH (results directories of earlier runs, for the stability table), PORT_BASE
# (default 18000). Needs node >= 20 and python3; peers not installed are skipped
# (apt-get install -y trafficserver nginx varnish). Everything listens on 127.0.0.1.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

die() { echo "run.sh: $*" >&2; exit 2; }
[ -n "${SUITE:-}" ] || die "set SUITE to a checkout of https://github.com/http-tests/cache-tests (after npm install in it)"
SUITE="$(cd "$SUITE" 2>/dev/null && pwd)" || die "SUITE directory not found"
for f in test-engine/cli.mjs test-engine/server/server.mjs tests/index.mjs; do
  [ -f "$SUITE/$f" ] || die "$SUITE/$f missing: SUITE must be a checkout of https://github.com/http-tests/cache-tests"
done
[ -d "$SUITE/node_modules" ] || die "$SUITE/node_modules missing: run npm install in $SUITE"
command -v node >/dev/null || die "node not found (Node.js 20 or newer)"
command -v python3 >/dev/null || die "python3 not found"

OUTPOST_BIN=${OUTPOST_BIN:-$ROOT/target/release/outpost}
IMPLS=${IMPLS:-"outpost ats nginx varnish"}
for impl in $IMPLS; do
  case $impl in outpost|ats|nginx|varnish) ;; *) die "unknown implementation '$impl' in IMPLS (outpost ats nginx varnish)";; esac
done
RES=${RESULTS_DIR:-$(mktemp -d -t cache-conformance.XXXXXX)}
PORT_BASE=${PORT_BASE:-18000}
ORIGIN_PORT=$PORT_BASE
OUTPOST_PORT=$((PORT_BASE + 80)); OUTPOST_ADMIN=$((PORT_BASE + 81))
ATS_PORT=$((PORT_BASE + 90))
NGINX_PORT=$((PORT_BASE + 100))
VARNISH_PORT=$((PORT_BASE + 110)); VARNISH_ADMIN=$((PORT_BASE + 111))
mkdir -p "$RES/logs" || die "cannot create $RES"
RES="$(cd "$RES" && pwd)"
LOGS=$RES/logs
RUN=$(mktemp -d -t cache-conformance-run.XXXXXX)
chmod 755 "$RUN"   # nginx workers and varnishd drop privileges

log() { echo "[cache-conformance $(date +%T)] $*" >&2; }

wait_port() { # port [seconds]
  local i
  for i in $(seq 1 $((${2:-20} * 10))); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

stop_pid() { # pidfile
  [ -f "$1" ] || return 0
  local p; p=$(cat "$1")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  fi
  rm -f "$1"
}

version() { echo "$1: $2" >> "$RES/versions.txt"; }

# ---------- the suite's origin server ----------
start_origin() {
  port_free "$ORIGIN_PORT" || die "port $ORIGIN_PORT is busy (set PORT_BASE)"
  ( cd "$SUITE" && npm_config_protocol=http npm_config_port=$ORIGIN_PORT \
      npm_config_pidfile=$RUN/origin.npmpid \
      exec node --import "$HERE/bind-localhost.mjs" test-engine/server/server.mjs ) > "$LOGS/origin.log" 2>&1 &
  echo $! > "$RUN/origin.pid"
  wait_port "$ORIGIN_PORT" || die "the suite's origin did not start; see $LOGS/origin.log"
  log "origin on 127.0.0.1:$ORIGIN_PORT"
}

run_client() { # impl port
  log "running the suite against $1 (127.0.0.1:$2)"
  ( cd "$SUITE" && npm_config_base="http://127.0.0.1:$2" npm_config_id= npm_package_config_id= \
      timeout 900 node --no-warnings test-engine/cli.mjs ) > "$RES/$1.json" 2> "$LOGS/$1-client.err"
  log "$1: $(python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(len(d),'tests,',sum(v is True for v in d.values()),'passed')" "$RES/$1.json" 2>&1)"
}

# ---------- outpost ----------
start_outpost() {
  [ -x "$OUTPOST_BIN" ] || { log "skipping outpost: $OUTPOST_BIN not found (cargo build --release -p outpost, or set OUTPOST_BIN)"; return 1; }
  local rule=""
  [ -n "${OUTPOST_STALE_IF_ERROR:-}" ] && rule="stale_if_error_seconds: $OUTPOST_STALE_IF_ERROR"
  sed -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/" -e "s/@PROXY_PORT@/$OUTPOST_PORT/" -e "s/@CACHE_RULE@/$rule/" \
    "$HERE/outpost.yaml.tpl" > "$RES/outpost.yaml"
  local built=""
  [ "$OUTPOST_BIN" = "$ROOT/target/release/outpost" ] && built=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/, checkout /')
  version outpost "$("$OUTPOST_BIN" --version 2>&1 | head -1) ($OUTPOST_BIN$built); cache rule {$rule}"
  setsid "$OUTPOST_BIN" edge --config "$RES/outpost.yaml" --workers 1 \
    --admin "127.0.0.1:$OUTPOST_ADMIN" --access-log off > "$LOGS/outpost.log" 2>&1 &
  echo $! > "$RUN/outpost.pid"
  wait_port $OUTPOST_PORT
}
stop_outpost() { stop_pid "$RUN/outpost.pid"; }

# ---------- Apache Traffic Server ----------
start_ats() {
  command -v traffic_server >/dev/null && command -v traffic_layout >/dev/null \
    || { log "skipping ats: not installed (apt-get install -y trafficserver)"; return 1; }
  local R=$RUN/ats
  traffic_layout init --path "$R" >/dev/null 2>&1 || { log "traffic_layout init failed"; return 1; }
  rm -rf "$R/etc" "$R/cache" "$R/run" "$R/log"; mkdir -p "$R/etc" "$R/cache" "$R/run" "$R/log"
  cp -r /etc/trafficserver/* "$R/etc/"
  sed -i -e "s#^sysconfdir:.*#sysconfdir: $R/etc#" -e "s#^runtimedir:.*#runtimedir: $R/run#" \
    -e "s#^logdir:.*#logdir: $R/log#" -e "s#^cachedir:.*#cachedir: $R/cache#" \
    -e "s#^datadir:.*#datadir: $R/cache#" "$R/runroot.yaml"
  # The stock records.config plus reverse-proxy overrides (the last value wins).
  sed "s/@PORT@/$ATS_PORT/" "$HERE/ats-records.override" >> "$R/etc/records.config"
  echo "map http://127.0.0.1:$ATS_PORT/ http://127.0.0.1:$ORIGIN_PORT/" > "$R/etc/remap.config"
  echo "$R/cache 128M" > "$R/etc/storage.config"
  version ats "$(traffic_server --version 2>/dev/null | head -1)$(dpkg-query -W -f=' (Debian package ${Version})' trafficserver 2>/dev/null)"
  setsid traffic_server --run-root="$R/runroot.yaml" > "$LOGS/ats.log" 2>&1 &
  echo $! > "$RUN/ats.pid"
  wait_port $ATS_PORT 30
}
stop_ats() { stop_pid "$RUN/ats.pid"; }

# ---------- nginx ----------
start_nginx() {
  local NGINX; NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null) \
    || { log "skipping nginx: not installed (apt-get install -y nginx)"; return 1; }
  local R=$RUN/nginx
  mkdir -p "$R/cache/tmp" "$R/logs"
  sed -e "s#@R@#$R#g" -e "s/@PORT@/$NGINX_PORT/" -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/" \
    "$HERE/nginx.conf.tpl" > "$R/nginx.conf"
  version nginx "$("$NGINX" -v 2>&1)$(dpkg-query -W -f=' (Debian package ${Version})' nginx 2>/dev/null)"
  setsid "$NGINX" -p "$R/" -c "$R/nginx.conf" -g 'daemon off;' > "$LOGS/nginx.log" 2>&1 &
  echo $! > "$RUN/nginx.pid"
  wait_port $NGINX_PORT
}
stop_nginx() { stop_pid "$RUN/nginx.pid"; }

# ---------- Varnish ----------
start_varnish() {
  local VARNISHD; VARNISHD=$(command -v varnishd || ls /usr/sbin/varnishd 2>/dev/null) \
    || { log "skipping varnish: not installed (apt-get install -y varnish)"; return 1; }
  local R=$RUN/varnish
  mkdir -p "$R"
  sed -e "s/@ORIGIN_PORT@/$ORIGIN_PORT/" "$HERE/varnish.vcl.tpl" > "$R/default.vcl"
  version varnish "$("$VARNISHD" -V 2>&1 | head -1)$(dpkg-query -W -f=' (Debian package ${Version})' varnish 2>/dev/null)"
  # The parameters of the suite's docker/serve.sh.
  setsid "$VARNISHD" -F -n "$R/work" -a "127.0.0.1:$VARNISH_PORT" -T "127.0.0.1:$VARNISH_ADMIN" \
    -f "$R/default.vcl" -p default_ttl=0 -p default_grace=0 -p default_keep=3600 -s malloc,64M \
    > "$LOGS/varnish.log" 2>&1 &
  echo $! > "$RUN/varnish.pid"
  wait_port $VARNISH_PORT 30
}
stop_varnish() { stop_pid "$RUN/varnish.pid"; }

port_of() { case $1 in outpost) echo $OUTPOST_PORT;; ats) echo $ATS_PORT;; nginx) echo $NGINX_PORT;; varnish) echo $VARNISH_PORT;; esac; }

cleanup() {
  for i in outpost ats nginx varnish; do "stop_$i" 2>/dev/null; done
  stop_pid "$RUN/origin.pid"
  rm -rf "$RUN"
}
trap cleanup EXIT

rm -f "$RES/versions.txt"
version suite "$SUITE$(git -C "$SUITE" rev-parse --short HEAD 2>/dev/null | sed 's/^/ @ /')"
version node "$(node --version)"
start_origin
ran=""
for impl in $IMPLS; do
  for p in $(port_of "$impl") $OUTPOST_ADMIN $VARNISH_ADMIN; do
    port_free "$p" || { log "port $p is busy (set PORT_BASE)"; continue 2; }
  done
  if "start_$impl"; then
    sleep 1
    run_client "$impl" "$(port_of "$impl")"
    ran="$ran $impl"
  elif [ -f "$RUN/$impl.pid" ]; then
    log "$impl did not start; see $LOGS/$impl.log"
  fi
  "stop_$impl"
done
stop_pid "$RUN/origin.pid"
[ -n "$ran" ] || die "no implementation ran; see $LOGS"
# shellcheck disable=SC2086
python3 "$HERE/summarize.py" --results "$RES" --suite "$SUITE" --out "$RES/SUMMARY.md" \
  --repeats ${COMPARE_WITH:-} && log "wrote $RES/SUMMARY.md"
echo "results: $RES"
