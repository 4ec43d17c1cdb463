#!/usr/bin/env bash
# Where a proxied request's CPU goes: user space and kernel, per request, for Debian's nginx
# and the edge side by side (same origin, same workers, same wrk load, interleaved runs).
# It answers "how much of nginx's cost per request is the kernel's own work for the socket
# calls every proxy makes", which bounds what any user-space speed-up can reach.
#
#   bench/cpu-split.sh                    # pass-through of 1 KiB, 64 keep-alive connections
#   CASE=hit REPS=7 bench/cpu-split.sh    # cache hits (nginx proxy_cache on tmpfs)
#   CASE=lua bench/cpu-split.sh           # content_by_lua returning a short string
#   CASE=luaacc bench/cpu-split.sh        # access_by_lua (a shared-dict incr) before proxying
#   SYSCALLS=1 bench/cpu-split.sh         # also count system calls per request (strace -c)
#   CLOSE=1 bench/cpu-split.sh            # a new connection per request (Connection: close)
#   BASELINE_BIN=/tmp/outpost-old bench/cpu-split.sh   # a second edge binary beside them (A/B)
#   OUTPOST_BIN=target/pgo/use/x86_64-unknown-linux-gnu/release/outpost bench/cpu-split.sh
#                                         # the edge from another build (bench/pgo-build.sh's)
#   CASE=lua BARE=1 bench/cpu-split.sh   # also bench/bare-hyper: hyper alone, same answer
#
# Needs: apt-get install -y nginx libnginx-mod-http-lua wrk strace. Builds the release binary.
# Prints medians over REPS of: requests/s, user and system CPU microseconds per request,
# context switches per request (voluntary + involuntary) of the proxy's workers.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CASE="${CASE:-pass}" REPS="${REPS:-5}" DURATION="${DURATION:-5}" CONNS="${CONNS:-64}"
WORKERS="${WORKERS:-$(nproc)}" NICE="${BENCH_NICE:-0}" PORT_BASE="${PORT_BASE:-19000}"
(cd "$ROOT" && cargo build --release -p outpost >&2)

RUN="$(mktemp -d)"
PIDS_TO_KILL=()
cleanup() {
  for p in "${PIDS_TO_KILL[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5; [ "${KEEP_RUNDIR:-0}" = 1 ] && echo "run dir kept: $RUN" >&2 || rm -rf "$RUN"
}
trap cleanup EXIT

ORIGIN=$((PORT_BASE + 1)) NGINX=$((PORT_BASE + 2)) EDGE=$((PORT_BASE + 3)) ADMIN=$((PORT_BASE + 4))
EDGE_CACHE=$((PORT_BASE + 5)) EDGE_LUA=$((PORT_BASE + 6)) EDGE_LUA_ACCESS=$((PORT_BASE + 7))
mkdir -p "$RUN/www" "$RUN/tmp" "$RUN/cache"
head -c 1024 /dev/zero | tr '\0' 'x' > "$RUN/www/1k.bin"
# As root, the workers stay root so they can read the run dir (mktemp makes it private).
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
common="$USER_LINE pid RUNDIR/NAME.pid; error_log RUNDIR/NAME.err warn; events { worker_connections 8192; }"
cat > "$RUN/origin.conf" <<EOF
${common//NAME/origin}
worker_processes $WORKERS;
http { access_log off; keepalive_requests 10000000;
  client_body_temp_path $RUN/tmp/ob; proxy_temp_path $RUN/tmp/op; fastcgi_temp_path $RUN/tmp/of;
  uwsgi_temp_path $RUN/tmp/ou; scgi_temp_path $RUN/tmp/os;
  server { listen 127.0.0.1:$ORIGIN backlog=4096; root $RUN/www;
    location / { add_header Cache-Control "max-age=3600"; } } }
EOF
cat > "$RUN/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
${common//NAME/nginx}
worker_processes $WORKERS;
http { access_log off; tcp_nodelay on; keepalive_requests 10000000; lua_shared_dict ratelimit 10m;
  client_body_temp_path $RUN/tmp/b; proxy_temp_path $RUN/tmp/p; fastcgi_temp_path $RUN/tmp/f;
  uwsgi_temp_path $RUN/tmp/u; scgi_temp_path $RUN/tmp/s;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 256; keepalive_requests 10000000; }
  proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_cache_path $RUN/cache levels=1:2 keys_zone=edge:16m max_size=1g inactive=60m use_temp_path=off;
  server { listen 127.0.0.1:$NGINX backlog=4096;
    location = /hit/1k.bin { proxy_cache edge; proxy_cache_valid 200 1h; proxy_pass http://origin/1k.bin; }
    location = /lua { default_type text/plain; content_by_lua_block { ngx.say("hello from lua") } }
    location = /luaacc/1k.bin {
      access_by_lua_block {
        local n, err = ngx.shared.ratelimit:incr(ngx.var.remote_addr, 1, 0)
        if not n then ngx.log(ngx.ERR, "incr failed: ", err); return ngx.exit(500) end
        if n < 0 then return ngx.exit(429) end
      }
      proxy_pass http://origin/1k.bin; }
    location / { proxy_pass http://origin; } } }
EOF
sed -i "s|RUNDIR|$RUN|g" "$RUN/origin.conf" "$RUN/nginx.conf"
# The cache directory on tmpfs when there is one, as the shared harness has it.
if [ -d /dev/shm ]; then ln -sfn "$(mktemp -d /dev/shm/cpusplit.XXXXXX)" "$RUN/shm"; sed -i "s|$RUN/cache|$RUN/shm|" "$RUN/nginx.conf"; fi

# Everything in the foreground of this session: a daemon would get a scheduling group of its
# own (autogroup) and so a different share of the CPUs than the edge and wrk.
nice -n "$NICE" nginx -c "$RUN/origin.conf" -g 'daemon off;' & PIDS_TO_KILL+=("$!")
nice -n "$NICE" nginx -c "$RUN/nginx.conf" -g 'daemon off;' & PIDS_TO_KILL+=("$!")
ORIGIN_HOSTPORT="127.0.0.1:$ORIGIN" nice -n "$NICE" "$ROOT/bench/run-edge.sh" "$EDGE" "$ADMIN" "$WORKERS" \
  "$EDGE_CACHE" "$EDGE_LUA" "$EDGE_LUA_ACCESS" > "$RUN/edge.log" 2>&1 &
PIDS_TO_KILL+=("$!")
if [ -n "${BASELINE_BIN:-}" ]; then
  B=$((PORT_BASE + 10))
  ORIGIN_HOSTPORT="127.0.0.1:$ORIGIN" OUTPOST_BIN="$BASELINE_BIN" nice -n "$NICE" \
    "$ROOT/bench/run-edge.sh" "$B" $((B + 1)) "$WORKERS" $((B + 2)) $((B + 3)) $((B + 4)) \
    > "$RUN/baseline.log" 2>&1 &
  PIDS_TO_KILL+=("$!")
fi
BARE_PORT=$((PORT_BASE + 20))
if [ "${BARE:-0}" = 1 ]; then
  [ "$CASE" = lua ] || { echo "BARE=1 goes with CASE=lua (it answers what the Lua case does)" >&2; exit 2; }
  (cd "$ROOT/bench/bare-hyper" && cargo build --release >&2)
  nice -n "$NICE" "$ROOT/bench/bare-hyper/target/release/bare-hyper" "127.0.0.1:$BARE_PORT" "$WORKERS" &
  PIDS_TO_KILL+=("$!")
  BARE_PID=$!
fi
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$EDGE/1k.bin" && [ -s "$RUN/nginx.pid" ] && break; sleep 0.1; done

case "$CASE" in
  pass) NGINX_URL="http://127.0.0.1:$NGINX/1k.bin"; EDGE_URL="http://127.0.0.1:$EDGE/1k.bin"
        BASE_URL="http://127.0.0.1:$((PORT_BASE + 10))/1k.bin" ;;
  hit) NGINX_URL="http://127.0.0.1:$NGINX/hit/1k.bin"; EDGE_URL="http://127.0.0.1:$EDGE_CACHE/1k.bin"
       BASE_URL="http://127.0.0.1:$((PORT_BASE + 12))/1k.bin" ;;
  lua) NGINX_URL="http://127.0.0.1:$NGINX/lua"; EDGE_URL="http://localhost:$EDGE_LUA/"
       BASE_URL="http://localhost:$((PORT_BASE + 13))/" ;;
  luaacc) NGINX_URL="http://127.0.0.1:$NGINX/luaacc/1k.bin"; EDGE_URL="http://127.0.0.2:$EDGE_LUA_ACCESS/1k.bin"
          BASE_URL="http://127.0.0.2:$((PORT_BASE + 14))/1k.bin" ;;
  *) echo "CASE is pass, hit, lua or luaacc" >&2; exit 2 ;;
esac
TARGETS="nginx outpost"
if [ -n "${BASELINE_BIN:-}" ]; then
  TARGETS="nginx outpost baseline"
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$BASE_URL" && break; sleep 0.1; done
  curl -fs -o /dev/null "$BASE_URL"
fi
if [ "${BARE:-0}" = 1 ]; then
  TARGETS="$TARGETS bare"
  for _ in $(seq 1 50); do curl -fs -o /dev/null "http://127.0.0.1:$BARE_PORT/" && break; sleep 0.1; done
fi
for u in "$NGINX_URL" "$EDGE_URL"; do curl -fs -o /dev/null "$u"; curl -fs -o /dev/null "$u"; done

# The workers (and the cache manager, which serves no request), not the cache loader, which
# exits a minute after the start.
nginx_workers() { pgrep -P "$(cat "$RUN/nginx.pid")" -f "worker process|cache manager" | tr '\n' ' '; }
edge_pid() { pgrep -f "edge --config .* --admin 127.0.0.1:$1" | head -1; }
# utime, stime (ticks) and context switches of every thread of the given processes.
sample() {
  local u=0 s=0 cs=0 p t f
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      read -r -a f < <(sed 's/.*) //' "$t/stat")
      u=$((u + f[11])) s=$((s + f[12]))
      cs=$((cs + $(awk '/ctxt_switches/ { n += $2 } END { print n }' "$t/status")))
    done
  done
  echo "$u $s $cs"
}
HZ="$(getconf CLK_TCK)"
WRK_ARGS=(-t2 -c"$CONNS" -d"${DURATION}s")
[ "${CLOSE:-0}" = 1 ] && WRK_ARGS+=(-H "Connection: close")
measure() {  # name url pids...
  local name="$1" url="$2"; shift 2
  local b a out req
  read -r -a b < <(sample "$@")
  out="$(nice -n "$NICE" wrk "${WRK_ARGS[@]}" "$url")"
  read -r -a a < <(sample "$@")
  req="$(awk '/requests in/ { print $1 }' <<< "$out")"
  awk -v n="$name" -v r="$req" -v d="$DURATION" -v u=$((a[0] - b[0])) -v s=$((a[1] - b[1])) \
      -v c=$((a[2] - b[2])) -v hz="$HZ" 'BEGIN {
        printf "%s\t%.0f\t%.3f\t%.3f\t%.3f\n", n, r / d, u / hz * 1e6 / r, s / hz * 1e6 / r, c / r }'
}
rows="$RUN/rows.tsv"
for rep in $(seq 1 "$REPS"); do
  # Rotate who goes first.
  read -r -a order <<< "$TARGETS"
  n=${#order[@]}
  for ((k = 0; k < n; k++)); do
    who="${order[$(( (k + rep - 1) % n ))]}"
    case "$who" in
      # shellcheck disable=SC2046
      nginx) measure nginx "$NGINX_URL" $(nginx_workers) >> "$rows" ;;
      outpost) measure outpost "$EDGE_URL" "$(edge_pid "$ADMIN")" >> "$rows" ;;
      baseline) measure baseline "$BASE_URL" "$(edge_pid $((PORT_BASE + 11)))" >> "$rows" ;;
      bare) measure bare "http://127.0.0.1:$BARE_PORT/" "$BARE_PID" >> "$rows" ;;
    esac
    sleep 1
  done
done

echo "# CASE=$CASE, CLOSE=${CLOSE:-0}, $CONNS connections, $WORKERS workers, $REPS x ${DURATION}s, medians"
python3 - "$rows" <<'PY'
import sys, statistics as st
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
by = {}
for n, rps, u, s, c in rows:
    by.setdefault(n, []).append((float(rps), float(u), float(s), float(c)))
print("target   req/s    user_us/req  sys_us/req  total_us/req  ctx_switches/req")
med = {}
for n, v in by.items():
    m = [st.median(x[i] for x in v) for i in range(4)]
    med[n] = m
    print(f"{n:8} {m[0]:8.0f} {m[1]:12.2f} {m[2]:11.2f} {m[1]+m[2]:13.2f} {m[3]:17.3f}")
if "nginx" in med and "outpost" in med:
    n, o = med["nginx"], med["outpost"]
    print(f"outpost/nginx requests per CPU-second: {(n[1]+n[2])/(o[1]+o[2]):.2f}x")
    print(f"outpost's kernel time per request as a share of nginx's total: {o[2]/(n[1]+n[2]):.2f}")
if "bare" in med and "nginx" in med:
    n, b = med["nginx"], med["bare"]
    print(f"bare hyper/nginx requests per CPU-second: {(n[1]+n[2])/(b[1]+b[2]):.2f}x")
if "baseline" in med and "outpost" in med:
    b, o = med["baseline"], med["outpost"]
    print(f"outpost/baseline requests per CPU-second: {(b[1]+b[2])/(o[1]+o[2]):.2f}x")
PY

if [ "${SYSCALLS:-0}" = 1 ]; then
  for who in nginx outpost; do
    if [ "$who" = nginx ]; then pids="$(nginx_workers)"; url="$NGINX_URL"; else pids="$(edge_pid "$ADMIN")"; url="$EDGE_URL"; fi
    args=(); for p in $pids; do args+=(-p "$p"); done
    strace -f -c -o "$RUN/strace.$who" "${args[@]}" 2>/dev/null & sp=$!
    sleep 1
    req="$(wrk "${WRK_ARGS[@]}" "$url" | awk '/requests in/ { print $1 }')"
    kill -INT "$sp"; wait "$sp" 2>/dev/null || true
    awk -v w="$who" -v r="$req" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
        n = $4; printf "%s syscalls/req %-14s %.2f\n", w, $NF, n / r }' "$RUN/strace.$who" |
      awk '$4 >= 0.05'
  done
fi
