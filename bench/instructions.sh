#!/usr/bin/env bash
# User-space instructions per request of an edge binary, counted by valgrind's callgrind.
#
# The shared machine's CPU times move by several percent from run to run (and it has no
# hardware counters), which hides a change worth 1-3%. An instruction count does not move
# with the neighbours: run two binaries one after the other and compare. It is no speed
# (memory stalls, syscalls and the kernel are not in it); `bench/cpu-split.sh` measures those.
#
#   bench/instructions.sh lua target/release/outpost /tmp/outpost-before
#   CASE names: lua (content_by_lua), luaacc (access_by_lua + proxy), hit (1 KiB), pass (1 KiB)
#   KEEP_PROFILE=/tmp/prof bench/instructions.sh lua BIN   # keeps each dump for callgrind_annotate
#   LOCKED=1 bench/instructions.sh lua BIN   # also locked (atomic) instructions per request,
#                                            # by function (bench/locked-instructions.py)
#
# Needs: apt-get install -y valgrind nginx wrk. Each binary runs under callgrind with one
# worker; after a warm-up, the counters are zeroed, wrk sends DURATION seconds of requests over
# 8 connections, and the counters are dumped. Prints instructions per request for each binary.
set -euo pipefail
CASE="${1:?usage: bench/instructions.sh CASE BINARY...}"; shift
[ "$#" -ge 1 ] || { echo "usage: bench/instructions.sh CASE BINARY..." >&2; exit 2; }
DURATION="${DURATION:-4}" PORT_BASE="${PORT_BASE:-19800}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="$(mktemp -d)"
ORIGIN=$((PORT_BASE + 1)) EDGE=$((PORT_BASE + 3)) ADMIN=$((PORT_BASE + 4))
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "valgrind.*$RUN" 2>/dev/null || true
  sleep 0.5; rm -rf "$RUN"
}
trap cleanup EXIT

. "$ROOT/bench/origin-conf.sh"
write_origin "$RUN" "$ORIGIN"
nginx -c "$RUN/origin.conf" -g 'daemon off;' & PIDS+=("$!")

case "$CASE" in
  lua) URL="http://localhost:$((PORT_BASE + 6))/" ;;
  luaacc) URL="http://127.0.0.2:$((PORT_BASE + 7))/1k.bin" ;;
  hit) URL="http://127.0.0.1:$((PORT_BASE + 5))/1k.bin" ;;
  pass) URL="http://127.0.0.1:$EDGE/1k.bin" ;;
  *) echo "CASE is lua, luaacc, hit or pass" >&2; exit 2 ;;
esac

kept=0
VG_DUMP_INSTR=""; [ "${LOCKED:-0}" = 1 ] && VG_DUMP_INSTR="--dump-instr=yes"
for bin in "$@"; do
  bin="$(readlink -f "$bin")"
  cat > "$RUN/wrap.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind $VG_DUMP_INSTR --callgrind-out-file=$RUN/cg.out.%p "$bin" "\$@"
EOF
  chmod +x "$RUN/wrap.sh"
  rm -f "$RUN"/cg.out.*
  ORIGIN_HOSTPORT="127.0.0.1:$ORIGIN" OUTPOST_BIN="$RUN/wrap.sh" "$ROOT/bench/run-edge.sh" \
    "$EDGE" "$ADMIN" 1 $((PORT_BASE + 5)) $((PORT_BASE + 6)) $((PORT_BASE + 7)) \
    > "$RUN/edge.log" 2>&1 &
  edge_job=$!
  # Under valgrind the edge takes a while to start: wait for its first answer (bounded).
  for _ in $(seq 1 120); do curl -s -o /dev/null -m 2 "$URL" && break; sleep 1; done
  vg="$(pgrep -f "valgrind.*$RUN" | head -1)"
  wrk -t1 -c8 -d3s "$URL" > /dev/null
  callgrind_control -z "$vg" > /dev/null 2>&1
  n="$(wrk -t1 -c8 -d"${DURATION}s" "$URL" | awk '/requests in/ { print $1 }')"
  callgrind_control -d "$vg" > /dev/null 2>&1
  sleep 1
  dump="$(ls -t "$RUN"/cg.out.*.* | head -1)"
  total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
  printf '%s %s: %s requests, %s instructions per request\n' "$CASE" "$bin" "$n" "$((total / n))"
  if [ "${LOCKED:-0}" = 1 ]; then
    python3 "$ROOT/bench/locked-instructions.py" "$dump" "$n" 15
  fi
  # KEEP_PROFILE=DIR keeps each dump for callgrind_annotate (named CASE.N.callgrind).
  if [ -n "${KEEP_PROFILE:-}" ]; then
    mkdir -p "$KEEP_PROFILE"; cp "$dump" "$KEEP_PROFILE/$CASE.$((++kept)).callgrind"
  fi
  kill "$vg" 2>/dev/null || true
  wait "$edge_job" 2>/dev/null || true
done
