#!/usr/bin/env bash
# A release build of `outpost` with profile-guided optimisation (PGO): build it instrumented,
# serve a training load with it, and build it again with the profile, so that the compiler
# knows which paths are hot (inlining, block order, hot and cold code apart).
#
#   bench/pgo-build.sh            # prints the optimised binary's path at the end
#   TRAIN_SECONDS=10 bench/pgo-build.sh
#
# The training load is the edge's common work, one case after the other through one edge
# with one worker: 1 KiB proxied without caching, 1 KiB from the memory cache, a
# content_by_lua answer, and an access_by_lua shared-dict count before proxying (the
# configuration `bench/run-edge.sh` writes). These are also the cases `bench/cpu-split.sh`
# and the peer harness measure: docs/benchmarks.md gives figures for both builds.
#
# Needs: the Rust toolchain with rustup (it adds the llvm-tools component), nginx (the
# origin) and wrk. Two release builds in their own target directories under target/pgo/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TRAIN_SECONDS="${TRAIN_SECONDS:-5}" PORT_BASE="${PORT_BASE:-19840}"
TRIPLE="$(rustc -vV | awk '/^host:/ { print $2 }')"
PGO="$ROOT/target/pgo"
DATA="$PGO/profiles"

rustup component add llvm-tools >/dev/null 2>&1 || true
PROFDATA="$(find "$(rustc --print sysroot)" -name llvm-profdata -type f | head -1)"
[ -n "$PROFDATA" ] || { echo "llvm-profdata not found: rustup component add llvm-tools" >&2; exit 1; }

# An explicit --target keeps RUSTFLAGS off build scripts and proc macros: only the binary
# is instrumented, and only it gets the profile.
build() { # build TARGET_DIR RUSTFLAGS
  (cd "$ROOT" && RUSTFLAGS="$2" cargo build --release -p outpost --target "$TRIPLE" \
    --target-dir "$1" >&2)
}

echo "== instrumented build" >&2
rm -rf "$DATA"; mkdir -p "$DATA"
build "$PGO/gen" "-Cprofile-generate=$DATA"

echo "== training, ${TRAIN_SECONDS}s per case" >&2
RUN="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5; rm -rf "$RUN"
}
trap cleanup EXIT
ORIGIN=$((PORT_BASE + 1)) EDGE=$((PORT_BASE + 3)) ADMIN=$((PORT_BASE + 4))
CACHE=$((PORT_BASE + 5)) LUA=$((PORT_BASE + 6)) LUA_ACCESS=$((PORT_BASE + 7))
. "$ROOT/bench/origin-conf.sh"
write_origin "$RUN" "$ORIGIN"
nginx -c "$RUN/origin.conf" -g 'daemon off;' & PIDS+=("$!")
ORIGIN_HOSTPORT="127.0.0.1:$ORIGIN" OUTPOST_BIN="$PGO/gen/$TRIPLE/release/outpost" \
  "$ROOT/bench/run-edge.sh" "$EDGE" "$ADMIN" 1 "$CACHE" "$LUA" "$LUA_ACCESS" \
  > "$RUN/edge.log" 2>&1 &
edge=$!
URLS=("http://127.0.0.1:$EDGE/1k.bin" "http://127.0.0.1:$CACHE/1k.bin"
  "http://localhost:$LUA/" "http://127.0.0.2:$LUA_ACCESS/1k.bin")
for _ in $(seq 1 100); do curl -s -o /dev/null -m 1 "${URLS[2]}" && break; sleep 0.2; done
for url in "${URLS[@]}"; do
  wrk -t1 -c16 -d"${TRAIN_SECONDS}s" "$url" | awk -v u="$url" '/Requests\/sec/ { print u, $2 }' >&2
done
# The profile is written when the process exits: a graceful stop, as SIGTERM gives.
kill -TERM "$edge"; wait "$edge" || true
ls "$DATA"/*.profraw > /dev/null || { echo "no profile written" >&2; exit 1; }
"$PROFDATA" merge -o "$PGO/merged.profdata" "$DATA"

echo "== optimised build" >&2
# Generic functions instantiated in several crates share a name but not a body: LLVM warns
# of each such mismatch, and drops that function's counts. Harmless, and hundreds of lines.
build "$PGO/use" "-Cprofile-use=$PGO/merged.profdata -Cllvm-args=-no-pgo-warn-mismatch"
echo "$PGO/use/$TRIPLE/release/outpost"
