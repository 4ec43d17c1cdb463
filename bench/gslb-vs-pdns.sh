#!/usr/bin/env bash
# The GSLB beside PowerDNS with a LUA record (`ifportup`) and Knot (static records), in one run
# on one machine: dnsperf throughput (queries/s and queries per server CPU-second, medians of
# interleaved repetitions), then failover time (an edge killed: how long until answers drop
# it, and after restoring it, until it is back), for Outpost and PowerDNS.
#
#   bench/gslb-vs-pdns.sh            # REPS=3 DURATION=8 ROUNDS=3
#
# Needs: apt-get install -y pdns-server pdns-backend-bind knot dnsperf dnsutils python3
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REPS="${REPS:-3}" DURATION="${DURATION:-8}" ROUNDS="${ROUNDS:-3}" CLIENTS="${CLIENTS:-4}"
P_OUT=18653 P_PDNS=18654 P_KNOT=18655 P_EDGE=18601 P_ADMIN=18659
RUN="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT
log() { echo "[gslb-bench $(date +%T)] $*" >&2; }

(cd "$ROOT" && cargo build --release -p outpost >&2)

# Three "edges": plain HTTP servers on 127.0.0.1-3.
declare -A EDGE
start_edge() { python3 -m http.server --bind "127.0.0.$1" "$P_EDGE" >/dev/null 2>&1 & EDGE[$1]=$!; PIDS+=("$!"); }
for i in 1 2 3; do start_edge "$i"; done

cat > "$RUN/gslb.yaml" <<YAML
zones:
  - name: cdn.test
    soa: {rname: hostmaster.cdn.test}
    ns: [ns1.cdn.test]
    static_records:
      - {name: ns1, type: A, data: [127.0.0.1]}
      - {name: static, type: A, data: [127.0.0.1]}
nodes:
  - {name: e1, address: 127.0.0.1, health: {kind: PROBE_KIND_TCP, port: $P_EDGE}}
  - {name: e2, address: 127.0.0.2, health: {kind: PROBE_KIND_TCP, port: $P_EDGE}}
  - {name: e3, address: 127.0.0.3, health: {kind: PROBE_KIND_TCP, port: $P_EDGE}}
records:
  - {zone: cdn.test, name: www, policy: POLICY_ALL_HEALTHY, pools: [{nodes: [e1, e2, e3]}]}
  # A random policy: its answers are reused less (see docs/gslb.md).
  - {zone: cdn.test, name: w, policy: POLICY_WEIGHTED, pools: [{nodes: [e1, e2, e3]}]}
YAML
RUST_LOG=warn "$ROOT/target/release/outpost" gslb --config "$RUN/gslb.yaml" \
  --listen "127.0.0.1:$P_OUT" --admin "127.0.0.1:$P_ADMIN" >"$RUN/outpost.log" 2>&1 &
OUT_PID=$!; PIDS+=("$OUT_PID")

# PowerDNS: bind backend, LUA records on, defaults otherwise (2 receiver threads as ours has 2 cores).
mkdir -p "$RUN/pdns"
cat > "$RUN/pdns/cdn.test.zone" <<ZONE
\$ORIGIN cdn.test.
@      3600 IN SOA ns1.cdn.test. hostmaster.cdn.test. 1 3600 600 86400 60
@      3600 IN NS  ns1.cdn.test.
ns1    3600 IN A   127.0.0.1
static 3600 IN A   127.0.0.1
www    20   IN LUA A "ifportup($P_EDGE, {'127.0.0.1', '127.0.0.2', '127.0.0.3'}, {selector='all'})"
ZONE
echo "zone \"cdn.test\" { type master; file \"$RUN/pdns/cdn.test.zone\"; };" > "$RUN/pdns/named.conf"
cat > "$RUN/pdns/pdns.conf" <<CONF
launch=bind
bind-config=$RUN/pdns/named.conf
local-address=127.0.0.1
local-port=$P_PDNS
enable-lua-records=yes
daemon=no
guardian=no
socket-dir=$RUN/pdns
receiver-threads=2
CONF
pdns_server --config-dir="$RUN/pdns" >"$RUN/pdns.log" 2>&1 &
PDNS_PID=$!; PIDS+=("$PDNS_PID")

# Knot: the same zone with static records only.
mkdir -p "$RUN/knot"
grep -v LUA "$RUN/pdns/cdn.test.zone" > "$RUN/knot/cdn.test.zone"
echo "www 20 IN A 127.0.0.1" >> "$RUN/knot/cdn.test.zone"
cat > "$RUN/knot/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$P_KNOT
    rundir: $RUN/knot
    udp-workers: 2
    tcp-workers: 2
database:
    storage: $RUN/knot
zone:
  - domain: cdn.test
    storage: $RUN/knot
    file: cdn.test.zone
CONF
knotd -c "$RUN/knot/knot.conf" >"$RUN/knot.log" 2>&1 &
KNOT_PID=$!; PIDS+=("$KNOT_PID")

for port in $P_OUT $P_PDNS $P_KNOT; do
  for _ in $(seq 1 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" static.cdn.test A >/dev/null 2>&1 && break
    sleep 0.1
  done
done
sleep 2 # first probes and PowerDNS's first ifportup checks

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "www.cdn.test A" > "$RUN/q-gslb"
echo "static.cdn.test A" > "$RUN/q-static"
echo "w.cdn.test A" > "$RUN/q-weighted"
HZ=$(getconf CLK_TCK)
RESULTS="$RUN/results.tsv"
# target|port|pid|queryfile
TARGETS=("outpost-gslb|$P_OUT|$OUT_PID|q-gslb" "pdns-lua|$P_PDNS|$PDNS_PID|q-gslb" "knot-static|$P_KNOT|$KNOT_PID|q-static" "outpost-static|$P_OUT|$OUT_PID|q-static" "outpost-weighted|$P_OUT|$OUT_PID|q-weighted")
# ONLY="outpost-gslb knot-static" measures just those (ROUNDS=0 skips the failover part).
if [ -n "${ONLY:-}" ]; then
  kept=(); for t in "${TARGETS[@]}"; do [[ " $ONLY " == *" ${t%%|*} "* ]] && kept+=("$t"); done
  TARGETS=("${kept[@]}")
fi
for rep in $(seq 1 "$REPS"); do
  n=${#TARGETS[@]}
  for k in $(seq 0 $((n - 1))); do
    t="${TARGETS[$(( (k + rep) % n ))]}"
    IFS='|' read -r name port pid qf <<<"$t"
    c0=$(cpu_ticks "$pid")
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$RUN/$qf" -l "$DURATION" -c "$CLIENTS" -q 200 2>&1)
    c1=$(cpu_ticks "$pid")
    qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
    lost=$(echo "$out" | awk '/Queries lost/ {print $3}')
    cpu=$(echo "$c0 $c1 $HZ" | awk '{print ($2 - $1) / $3}')
    echo -e "$rep\t$name\t$qps\t$cpu\t$lost" >> "$RESULTS"
    log "rep $rep $name: $qps q/s, server CPU ${cpu}s, lost $lost"
  done
done

echo
echo "## dnsperf, $REPS reps x ${DURATION}s, $CLIENTS clients (medians)"
echo "| target | queries/s | queries per server CPU-second |"
echo "|---|---|---|"
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.0f", v[int((NR + 1) / 2)] }'; }
for name in outpost-gslb pdns-lua knot-static outpost-static outpost-weighted; do
  q=$(awk -F'\t' -v n="$name" '$2 == n { print $3 }' "$RESULTS" | median)
  c=$(awk -F'\t' -v n="$name" -v d="$DURATION" '$2 == n { print $3 * d / ($4 > 0 ? $4 : 1e-9) }' "$RESULTS" | median)
  echo "| $name | $q | $c |"
done

# Failover: kill edge 2, time until answers lose 127.0.0.2; restore, time until it is back.
now_ms() { date +%s%3N; }
wait_for() { # port, want (absent|present); prints ms waited
  local port=$1 want=$2 t0; t0=$(now_ms)
  for _ in $(seq 1 1200); do
    local ans; ans=$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" www.cdn.test A 2>/dev/null || true)
    if [ "$want" = absent ] && ! grep -q '^127.0.0.2$' <<<"$ans" && [ -n "$ans" ]; then echo $(( $(now_ms) - t0 )); return; fi
    if [ "$want" = present ] && grep -q '^127.0.0.2$' <<<"$ans"; then echo $(( $(now_ms) - t0 )); return; fi
    sleep 0.02
  done
  echo "timeout"
}
echo
echo "## failover, $ROUNDS rounds (ms): edge 127.0.0.2 killed -> gone from answers; restored -> back"
echo "| server | gone | back |"
echo "|---|---|---|"
declare -A GONE=([out]="" [pdns]="") BACK=([out]="" [pdns]="")
for r in $(seq 1 "$ROUNDS"); do
  # Both servers are watched at the same time, from the same event.
  kill "${EDGE[2]}"; wait "${EDGE[2]}" 2>/dev/null || true
  wait_for $P_OUT absent > "$RUN/g_out" & w1=$!
  wait_for $P_PDNS absent > "$RUN/g_pdns" & w2=$!
  wait $w1 $w2
  start_edge 2
  wait_for $P_OUT present > "$RUN/b_out" & w1=$!
  wait_for $P_PDNS present > "$RUN/b_pdns" & w2=$!
  wait $w1 $w2
  g_out=$(cat "$RUN/g_out"); g_pdns=$(cat "$RUN/g_pdns"); b_out=$(cat "$RUN/b_out"); b_pdns=$(cat "$RUN/b_pdns")
  GONE[out]+="$g_out "; GONE[pdns]+="$g_pdns "; BACK[out]+="$b_out "; BACK[pdns]+="$b_pdns "
  log "round $r: outpost gone ${g_out} back ${b_out}; pdns gone ${g_pdns} back ${b_pdns}"
  sleep 3
done
echo "| outpost | ${GONE[out]}| ${BACK[out]}|"
echo "| powerdns (defaults) | ${GONE[pdns]}| ${BACK[pdns]}|"
