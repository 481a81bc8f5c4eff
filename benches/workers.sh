#!/usr/bin/env bash
# The worker model's mechanism, measured on a small box (docs/benchmarks.md, "Many cores"):
# for each binary, levee with WORKERS workers behind wrk, and per request
#   - futex system calls (strace -f -c: cross-thread wakeups and lock waits),
#   - context switches (perf stat, else /proc voluntary+nonvoluntary switches),
#   - CPU µs (user+sys of levee's threads from /proc; noisy on a shared box);
# and, with CALLGRIND=1, user-space instructions per request at --workers 1 (callgrind, counters
# zeroed after a warm-up, then wrk -c10 for DURATION s, then dumped; noise-free).
#
#   BINS="/work/levee-before target/release/levee" WORKERS=2 DURATION=8 benches/workers.sh
#   CALLGRIND=1 BINS="..." benches/workers.sh
#
# Topology: nginx origin (1 worker) and wrk -t1 -c50 on LOAD_CPU=0; levee unpinned. Route with
# STACK=full (retry, a rate limit that never triggers, breaker, outlier detection) or bare.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
BINS=${BINS:-target/release/levee}; WORKERS=${WORKERS:-2}; DURATION=${DURATION:-8}
LOAD_CPU=${LOAD_CPU:-0}; B=${BASE_PORT:-18600}; STACK=${STACK:-full}; CALLGRIND=${CALLGRIND:-0}
ORIGIN="127.0.0.1:$((B + 1))"; LISTEN="127.0.0.1:$((B + 13))"; ADMIN="127.0.0.1:$((B + 113))"
work=$(mktemp -d); chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/origin.conf" <<CONF
daemon off; worker_processes 1; pid $work/origin.pid; error_log $work/origin.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen $ORIGIN backlog=4096; location = / { return 200 "hello\n"; } } }
CONF
taskset -c "$LOAD_CPU" nginx -e "$work/origin.err" -p "$work" -c "$work/origin.conf" &
pids+=($!)

cat >"$work/levee.toml" <<CONF
[admin]
bind = "$ADMIN"

[[listener]]
name = "main"
bind = "$LISTEN"

[[route]]
name = "all"
upstream = "origin"
CONF
if [ "$STACK" = full ]; then cat >>"$work/levee.toml" <<CONF

[route.retry]
attempts = 2

[route.rate_limit]
rps = 100000000.0
burst = 100000000
CONF
fi
cat >>"$work/levee.toml" <<CONF

[[upstream]]
name = "origin"
endpoints = ["$ORIGIN"]
CONF
if [ "$STACK" = full ]; then cat >>"$work/levee.toml" <<CONF

[upstream.circuit_breaker]
failure_rate_threshold = 0.5
consecutive_failures = 5

[upstream.outlier_detection]
consecutive_failures = 5
failure_rate_threshold = 0.5
CONF
fi

wait_up() { for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "workers.sh: $1 did not come up" >&2; return 1; }
wait_up "http://$ORIGIN/"

requests() { awk '/requests in/ {print $1}' "$1"; }
ticks() { local t=0 v; for s in /proc/"$1"/task/*/stat; do
  v=$(awk '{print $14 + $15}' "$s" 2>/dev/null) && t=$((t + ${v:-0})); done; echo "$t"; }
ctxsw() { local t=0 v; for s in /proc/"$1"/task/*/status; do
  v=$(awk '/ctxt_switches/ {n += $2} END {print n}' "$s" 2>/dev/null) && t=$((t + ${v:-0})); done; echo "$t"; }
load() { taskset -c "$LOAD_CPU" wrk -t1 -c"${2:-50}" -d"$1"s "http://$LISTEN/" >"$3" 2>&1; }
hz=$(getconf CLK_TCK)

printf '%-28s %8s %10s %12s %10s %10s\n' binary workers req/s futex/req ctxsw/req cpu_us/req
for bin in $BINS; do
  case $bin in /*) ;; *) bin=$repo/$bin ;; esac
  if [ "$CALLGRIND" = 1 ]; then
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
      "$bin" run --config "$work/levee.toml" --workers 1 --log-level warn 2>"$work/vg.err" &
    vpid=$!; pids+=($vpid)
    for _ in $(seq 300); do curl -fsS -o /dev/null "http://$LISTEN/" 2>/dev/null && break; sleep 0.2; done
    load 3 10 "$work/warm"
    callgrind_control -z "$vpid" >/dev/null
    load "$DURATION" 10 "$work/cg.wrk"
    callgrind_control -d "$vpid" >/dev/null
    kill "$vpid"; wait "$vpid" 2>/dev/null || true
    # The dump holds what ran between zeroing the counters and dumping them.
    ir=$(awk '/^totals:/ {print $2}' "$work"/cg.*.1)
    n=$(requests "$work/cg.wrk")
    echo "$(basename "$bin"): $((ir / n)) instructions per request (user space, --workers 1, $n requests)"
    [ -n "${KEEP_WORK:-}" ] || rm -f "$work"/cg.*
    continue
  fi
  "$bin" run --config "$work/levee.toml" --workers "$WORKERS" --log-level warn &
  lpid=$!; pids+=($lpid)
  wait_up "http://$LISTEN/"
  load 2 50 "$work/warm"
  # Context switches and CPU, undisturbed.
  c0=$(ctxsw "$lpid"); t0=$(ticks "$lpid")
  load "$DURATION" 50 "$work/plain"
  c1=$(ctxsw "$lpid"); t1=$(ticks "$lpid")
  n=$(requests "$work/plain")
  # futex calls under strace (which slows levee: only the count per request matters).
  strace -f -c -e trace=futex -p "$lpid" -o "$work/strace" &
  spid=$!
  sleep 0.5
  load "$DURATION" 50 "$work/traced"
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  nt=$(requests "$work/traced")
  futex=$(awk '$NF == "futex" {print $4}' "$work/strace"); futex=${futex:-0}
  kill "$lpid"; wait "$lpid" 2>/dev/null || true
  awk -v b="$(basename "$bin")" -v w="$WORKERS" -v n="$n" -v d="$DURATION" -v f="$futex" -v nt="$nt" \
    -v c=$((c1 - c0)) -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {
    printf "%-28s %8d %10.0f %12.3f %10.3f %10.1f\n", b, w, n / d, f / nt, c / n, t / hz * 1e6 / n }'
done
