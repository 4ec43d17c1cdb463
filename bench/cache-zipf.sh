#!/usr/bin/env bash
# A Zipf-distributed workload larger than the caches: the edge's cache beside nginx
# proxy_cache and Varnish, each given the same total capacity, reporting hit ratio and the
# requests that reached the origin. See docs/benchmarks.md for results and how to read them.
#
#   bench/cache-zipf.sh                                 # 50,000 x 10 KiB objects, 192 MiB caches
#   REPS=3 OBJECTS=50000 ZIPF_S=1.0 CACHE_MB=192 OUTPOST_MEMORY_MB=64 bench/cache-zipf.sh
#   PEERS="outpost outpost-memory" bench/cache-zipf.sh  # two tiers vs all of it in memory
#
# One repetition runs every peer once (start position rotated each repetition). For each:
# a fresh, empty cache is started; WARM_REQUESTS Zipf requests warm it; then REQUESTS Zipf
# requests (another seed, the same for every peer in the repetition) are measured. Counted
# for the measured phase: origin requests (lines of the origin's access log), the hits the
# cache itself reports (X-Cache / Cache-Status per response, plus Outpost's metrics and
# varnishstat), requests/s, latency, and the proxy's own CPU time from /proc.
#
# The origin is nginx on 127.0.0.1 serving /obj/<i> (one OBJECT_KIB file behind every URL,
# Cache-Control: max-age=3600). Clients: the `zipf_load` example of outpost-edge-node.
# Needs: apt-get install -y nginx varnish curl python3. Everything listens on 127.0.0.1;
# everything started is stopped by PID on exit.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

OBJECTS="${OBJECTS:-50000}"
OBJECT_KIB="${OBJECT_KIB:-10}"
ZIPF_S="${ZIPF_S:-1.0}"
SEED="${SEED:-1}"
WARM_REQUESTS="${WARM_REQUESTS:-200000}"
REQUESTS="${REQUESTS:-200000}"
MAX_SECONDS="${MAX_SECONDS:-120}"          # per phase: a slow peer is cut off (reported)
CONNS="${CONNS:-64}"
CLIENT_THREADS="${CLIENT_THREADS:-2}"
REPS="${REPS:-3}"
PEERS="${PEERS:-nginx varnish outpost}"
WORKERS="${WORKERS:-$(nproc)}"
CACHE_MB="${CACHE_MB:-192}"                 # total capacity of every cache
OUTPOST_MEMORY_MB="${OUTPOST_MEMORY_MB:-64}"
OUTPOST_DISK_MB="${OUTPOST_DISK_MB:-$((CACHE_MB - OUTPOST_MEMORY_MB))}"
CACHE_PARENT="${CACHE_PARENT:-${TMPDIR:-/tmp}}"   # nginx's and Outpost's cache files
PORT_BASE="${PORT_BASE:-18700}"
BENCH_NICE="${BENCH_NICE:-0}"
QUIET_MAX_CORES="${QUIET_MAX_CORES:-0.3}"
QUIET_WAIT="${QUIET_WAIT:-20}"
RESULTS="${RESULTS:-$ROOT/target/bench-zipf.tsv}"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export CARGO_TARGET_DIR

ORIGIN_PORT=$((PORT_BASE + 1))
PROXY_PORT=$((PORT_BASE + 2))
ADMIN_PORT=$((PORT_BASE + 9))
ORIGIN_HOSTPORT="127.0.0.1:$ORIGIN_PORT"

log() { printf '[zipf %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in nginx curl python3; do command -v "$tool" >/dev/null || die "$tool not found"; done
[[ " $PEERS " == *" varnish "* ]] && { command -v varnishd >/dev/null || die "varnishd not found"; }

(cd "$ROOT" && cargo build --release -p outpost && \
  cargo build --release -p outpost-edge-node --example zipf_load) >&2
LOADGEN="$CARGO_TARGET_DIR/release/examples/zipf_load"
OUTPOST="$CARGO_TARGET_DIR/release/outpost"

RUN="$(mktemp -d "${TMPDIR:-/tmp}/cache-zipf.XXXXXX")"
chmod 755 "$RUN"
STARTED=()
CACHEDIRS=()
HZ="$(getconf CLK_TCK)"

descendants() {
  ps -e -o pid=,ppid= | awk -v r="$1" '{p[$1]=$2} END {
      s[r]=1; ch=1; while (ch) { ch=0; for (x in p) if (!(x in s) && (p[x] in s)) { s[x]=1; ch=1 } }
      for (x in s) print x }'
}
cpu_ticks() {  # utime+stime of a process tree (all threads), in clock ticks
  local t=0 pid line rest
  for pid in $(descendants "$1"); do
    [ -r "/proc/$pid/stat" ] || continue
    read -r line < "/proc/$pid/stat" || continue
    rest="${line##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
sys_busy_ticks() { local _c u n s i w irq sirq st _r; read -r _c u n s i w irq sirq st _r < /proc/stat; echo $((u + n + s + irq + sirq + st)); }
wait_quiet() {  # bounded wait for other jobs on the machine to calm down
  local waited=0 b0 b1
  while [ "$waited" -lt "$QUIET_WAIT" ]; do
    b0=$(sys_busy_ticks); sleep 1; b1=$(sys_busy_ticks)
    awk -v d=$((b1 - b0)) -v hz="$HZ" -v m="$QUIET_MAX_CORES" 'BEGIN { exit !(d / hz <= m) }' && return 0
    waited=$((waited + 1))
  done
  log "machine still busy after ${QUIET_WAIT}s; measuring anyway"
}
kill_tree() {
  local p pids alive
  pids="$(descendants "$1" 2>/dev/null || true)"
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.3
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  local i
  set +e  # stop everything even if one step fails
  [ -z "${SAMPLER:-}" ] || kill "$SAMPLER" 2>/dev/null || true
  for ((i=${#STARTED[@]}-1; i>=0; i--)); do kill_tree "${STARTED[$i]}"; done
  for d in "${CACHEDIRS[@]}"; do rm -rf "$d"; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() {  # logname cmd... ; sets BG_PID
  local name="$1"; shift
  nice -n "$BENCH_NICE" "$@" > "$RUN/$name.log" 2>&1 &
  BG_PID=$!
  STARTED+=("$BG_PID")
}
stop_bg() {
  local i
  kill_tree "$1"
  for i in "${!STARTED[@]}"; do [ "${STARTED[$i]}" = "$1" ] && unset 'STARTED[i]'; done
  STARTED=("${STARTED[@]}")
}
wait_http() {  # url [secs]
  local i
  for ((i=0; i<${2:-30}*10; i++)); do
    curl -fs -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  return 1
}
for p in "$ORIGIN_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
  ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || die "port $p in use (set PORT_BASE)"
done
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"

# ---------------------------------------------------------------- origin ----
mkdir -p "$RUN/www" "$RUN/tmp"
head -c $((OBJECT_KIB * 1024)) /dev/urandom > "$RUN/www/blob.bin"
cat > "$RUN/origin.conf" <<NGINX
$USER_LINE
worker_processes $WORKERS;
pid $RUN/origin.pid;
error_log $RUN/origin.error.log warn;
events { worker_connections 8192; }
http {
    client_body_temp_path $RUN/tmp/body; proxy_temp_path $RUN/tmp/proxy;
    fastcgi_temp_path $RUN/tmp/fastcgi; uwsgi_temp_path $RUN/tmp/uwsgi; scgi_temp_path $RUN/tmp/scgi;
    keepalive_requests 10000000;
    log_format uri '\$request_uri';
    server {
        listen $ORIGIN_HOSTPORT backlog=4096;
        root $RUN/www;
        # Every request that reaches the origin is one line here: the origin's count.
        location /obj/ {
            access_log $RUN/origin.access.log uri;
            rewrite ^ /blob.bin break;
            add_header Cache-Control "max-age=3600";
        }
        location = /probe { access_log off; add_header Cache-Control "no-store"; return 200 "ok\n"; }
    }
}
NGINX
start_bg origin nginx -p "$RUN" -e "$RUN/origin.error.log" -c "$RUN/origin.conf" -g 'daemon off;'
ORIGIN_PID=$BG_PID
wait_http "http://$ORIGIN_HOSTPORT/probe" || die "origin did not start: $(cat "$RUN/origin.log")"
origin_count() { [ -f "$RUN/origin.access.log" ] && wc -l < "$RUN/origin.access.log" || echo 0; }

# ----------------------------------------------------------------- peers ----
# start_peer NAME REP: a fresh, empty cache; sets PEER_PID, PEER_CACHE, PEER_VARNISH_DIR.
start_peer() {
  local name="$1" rep="$2"
  PEER_CACHE="$(mktemp -d "$CACHE_PARENT/cache-zipf-$name.XXXXXX")"
  chmod 777 "$PEER_CACHE"
  CACHEDIRS+=("$PEER_CACHE")
  case "$name" in
    nginx)
      cat > "$RUN/nginx.conf" <<NGINX
$USER_LINE
worker_processes $WORKERS;
pid $RUN/nginx.pid;
error_log $RUN/nginx.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_requests 10000000;
    client_body_temp_path $RUN/tmp/body; proxy_temp_path $RUN/tmp/proxy;
    fastcgi_temp_path $RUN/tmp/fastcgi; uwsgi_temp_path $RUN/tmp/uwsgi; scgi_temp_path $RUN/tmp/scgi;
    upstream origin { server $ORIGIN_HOSTPORT; keepalive 256; keepalive_requests 10000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # manager_files: by default the cache manager removes at most 100 files per 50 ms pass,
    # slower than misses arrive here, and the cache grows far past max_size.
    proxy_cache_path $PEER_CACHE levels=1:2 keys_zone=zipf:16m max_size=${CACHE_MB}m inactive=60m use_temp_path=off
        manager_files=10000;
    server {
        listen 127.0.0.1:$PROXY_PORT backlog=4096;
        location / {
            proxy_cache zipf;
            add_header X-Cache \$upstream_cache_status;
            proxy_pass http://origin;
        }
    }
}
NGINX
      start_bg "nginx-$rep" nginx -p "$RUN" -e "$RUN/nginx.error.log" -c "$RUN/nginx.conf" -g 'daemon off;';;
    varnish)
      PEER_VARNISH_DIR="$RUN/varnish-$rep"
      cat > "$RUN/zipf.vcl" <<VCL
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
sub vcl_deliver {
    if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; }
}
VCL
      start_bg "varnish-$rep" varnishd -F -j none -n "$PEER_VARNISH_DIR" -f "$RUN/zipf.vcl" \
        -a "127.0.0.1:$PROXY_PORT,HTTP" -s "malloc,${CACHE_MB}m" -p thread_pools="$WORKERS" \
        -p thread_pool_min=200 -p thread_pool_max=5000;;
    outpost|outpost-memory)
      # outpost-memory: the whole capacity in the memory tier, no disk tier (for comparison).
      if [ "$name" = outpost ]; then
        storage="memory_bytes: $((OUTPOST_MEMORY_MB << 20))
    disk_path: \"$PEER_CACHE\"
    disk_bytes: $((OUTPOST_DISK_MB << 20))"
      else
        storage="memory_bytes: $((CACHE_MB << 20))"
      fi
      cat > "$RUN/edge.yaml" <<YAML
version: 1
server:
  cache:
    $storage
upstreams:
  - name: origin
    peers: [{address: "$ORIGIN_HOSTPORT"}]
    keepalive: 256
applications:
  - name: zipf
    domains: ["127.0.0.1"]
    is_default: true
    listeners: [{address: "127.0.0.1:$PROXY_PORT"}]
    upstream: origin
    cache_rules: [{}]
YAML
      start_bg "$name-$rep" "$OUTPOST" edge --config "$RUN/edge.yaml" --workers "$WORKERS" \
        --admin "127.0.0.1:$ADMIN_PORT" --access-log off;;
    *) die "unknown peer $name";;
  esac
  PEER_PID=$BG_PID
  wait_http "http://127.0.0.1:$PROXY_PORT/probe" 60 || die "$name did not start: $(tail -20 "$RUN/$name-$rep.log")"
}

# The cache's own count of hits and lookups, as "hits lookups" (empty if it has none).
self_counts() {
  case "$1" in
    outpost*) curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
        /^outpost_edge_cache_requests_total\{/ && /application="zipf"/ {
          n += $NF; if ($0 ~ /result="hit"/) h += $NF } END { print h + 0, n + 0 }';;
    varnish) varnishstat -n "$PEER_VARNISH_DIR" -1 -f MAIN.cache_hit -f MAIN.cache_miss 2>/dev/null | awk '
        $1 == "MAIN.cache_hit" { h = $2 } $1 == "MAIN.cache_miss" { m = $2 } END { print h + 0, h + m }';;
    *) echo "";;
  esac
}
# What the cache holds at the end, for the record.
cache_held() {
  case "$1" in
    outpost*) curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
        /^outpost_edge_cache_size_bytes\{/ { split($0, a, "tier=\""); split(a[2], t, "\""); b[t[1]] = $NF }
        /^outpost_edge_cache_objects\{/ { split($0, a, "tier=\""); split(a[2], t, "\""); o[t[1]] = $NF }
        END { printf "mem %.0fMiB/%d disk %.0fMiB/%d", b["memory"] / 1048576, o["memory"], b["disk"] / 1048576, o["disk"] }';;
    nginx) printf '%.0fMiB/%d files' "$(du -sk "$PEER_CACHE" | awk '{print $1 / 1024}')" \
        "$(find "$PEER_CACHE" -type f | wc -l)";;
    varnish) varnishstat -n "$PEER_VARNISH_DIR" -1 -f SMA.s0.g_bytes -f MAIN.n_object -f MAIN.n_lru_nuked 2>/dev/null | awk '
        $1 == "SMA.s0.g_bytes" { b = $2 } $1 == "MAIN.n_object" { o = $2 } $1 == "MAIN.n_lru_nuked" { n = $2 }
        END { printf "%.0fMiB/%d nuked %d", b / 1048576, o, n }';;
  esac
}

# Objects held now (Outpost: memory plus disk, which may overlap).
held_objects() {
  case "$1" in
    outpost*) curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
        /^outpost_edge_cache_objects\{/ { n += $NF } END { print n + 0 }';;
    nginx) find "$PEER_CACHE" -type f -not -name '*.0*' 2>/dev/null | wc -l;;
    varnish) varnishstat -n "$PEER_VARNISH_DIR" -1 -f MAIN.n_object 2>/dev/null | awk '{ n = $2 } END { print n + 0 }';;
  esac
}
# Samples held_objects twice a second (bounded) and keeps the peak in $RUN/peak: nginx's cache
# manager enforces max_size only when it wakes, so the end state can hide an overshoot.
sample_peak() {
  local max=0 n i
  echo 0 > "$RUN/peak"
  for ((i=0; i<MAX_SECONDS*2+10; i++)); do
    n="$(held_objects "$1")"
    [ "${n:-0}" -gt "$max" ] && { max="$n"; echo "$max" > "$RUN/peak"; }
    sleep 0.5
  done
}

load() {  # seed requests -> "ZIPF {...}" line, then "CPU user sys"
  local TIMEFORMAT='CPU %U %S'
  { time nice -n "$BENCH_NICE" timeout $((MAX_SECONDS + 30)) "$LOADGEN" --url "http://127.0.0.1:$PROXY_PORT" --objects "$OBJECTS" \
      --s "$ZIPF_S" --seed "$1" --requests "$2" --conns "$CONNS" --threads "$CLIENT_THREADS" \
      --max-seconds "$MAX_SECONDS" --expect-bytes $((OBJECT_KIB * 1024)) ; } 2>&1
}
json() { python3 -c 'import json,sys; print(json.loads(sys.argv[1].split(" ",1)[1])[sys.argv[2]])' "$1" "$2"; }

mkdir -p "$(dirname "$RESULTS")"
printf 'rep\tpeer\trequests\terrors\tduration_s\trps\tp50_ms\tp99_ms\torigin_requests\thit_ratio\theader_hits\tself_hits\tself_lookups\tproxy_cpu_s\tother_cpu_s\twarm_rps\twarm_origin\tdeadline_hit\theld\tpeak_objects\n' > "$RESULTS"
read -r -a PEER_LIST <<< "$PEERS"
n=${#PEER_LIST[@]}
log "run dir $RUN; $OBJECTS objects x $OBJECT_KIB KiB, Zipf s=$ZIPF_S; caches ${CACHE_MB} MiB" \
    "(outpost ${OUTPOST_MEMORY_MB} MiB memory + ${OUTPOST_DISK_MB} MiB disk); warm $WARM_REQUESTS," \
    "measure $REQUESTS requests; $REPS reps x ${PEERS}"

for ((rep=1; rep<=REPS; rep++)); do
  for ((k=0; k<n; k++)); do
    peer="${PEER_LIST[$(( (k + rep - 1) % n ))]}"
    wait_quiet
    start_peer "$peer" "$rep"
    ow0=$(origin_count)
    warm="$(load $((SEED * 1000 + rep * 2)) "$WARM_REQUESTS")"
    warm_line="$(grep '^ZIPF ' <<< "$warm")" || die "$peer: load generator failed: $warm"
    sleep 1   # let nginx's cache manager and moka's maintenance catch up, as they would between bursts
    o0=$(origin_count); read -r sh0 sl0 <<< "$(self_counts "$peer") "
    p0=$(cpu_ticks "$PEER_PID"); b0=$(sys_busy_ticks); g0=$(cpu_ticks "$ORIGIN_PID")
    sample_peak "$peer" & SAMPLER=$!
    out="$(load $((SEED * 1000 + rep * 2 + 1)) "$REQUESTS")"
    p1=$(cpu_ticks "$PEER_PID"); b1=$(sys_busy_ticks); g1=$(cpu_ticks "$ORIGIN_PID")
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    peak="$(cat "$RUN/peak")"
    sleep 0.3  # the origin writes its log line after the response
    o1=$(origin_count); read -r sh1 sl1 <<< "$(self_counts "$peer") "
    line="$(grep '^ZIPF ' <<< "$out")" || die "$peer: load generator failed: $out"
    lcpu="$(awk '/^CPU /{print $2 + $3}' <<< "$out")"
    held="$(cache_held "$peer")"
    stop_bg "$PEER_PID"
    row="$(python3 - "$line" "$warm_line" "$rep" "$peer" $((o1 - o0)) "${sh0:-}" "${sl0:-}" "${sh1:-}" "${sl1:-}" \
        $((p1 - p0)) $((b1 - b0)) $((g1 - g0)) "$lcpu" "$HZ" $((o0 - ow0)) "$held" "$peak" <<'PY'
import json, sys
a = sys.argv[1:]
m = json.loads(a[0].split(" ", 1)[1]); w = json.loads(a[1].split(" ", 1)[1])
rep, peer, origin = a[2], a[3], int(a[4])
sh0, sl0, sh1, sl1 = a[5:9]
pcpu, busy, ocpu, lcpu, hz = int(a[9]), int(a[10]), int(a[11]), float(a[12]), int(a[13])
held, peak = a[15], a[16]
self_h = str(int(sh1) - int(sh0)) if sh0 and sh1 else "NA"
self_l = str(int(sl1) - int(sl0)) if sl0 and sl1 else "NA"
req = m["requests"]
other = busy / hz - pcpu / hz - ocpu / hz - lcpu
print("\t".join(map(str, [rep, peer, req, m["errors"], m["duration_s"], m["rps"], m["p50_ms"], m["p99_ms"],
    origin, "%.4f" % (1 - origin / req if req else 0), m["hits"], self_h, self_l, "%.2f" % (pcpu / hz),
    "%.2f" % other, w["rps"], a[14], str(m["deadline_hit"] or w["deadline_hit"]).lower(), held, peak])))
PY
)"
    printf '%s\n' "$row" >> "$RESULTS"
    log "$row"
    rm -rf "$PEER_CACHE"
  done
done

log "raw results: $RESULTS"
python3 "$ROOT/bench/cache-zipf-report.py" "$RESULTS"
