#!/usr/bin/env bash
# End-to-end load bench: levee beside nginx and HAProxy in the same run, through
# ../shared/bench/peers.sh (wrk for HTTP/1.1 keep-alive, h2load for h2c), each proxy pinned to one
# core with one worker, the load generator and origins on the other core.
#
#   benches/e2e.sh                 # levee (full resilience stack) vs nginx vs HAProxy
#   STACK=bare benches/e2e.sh      # levee with the optional layers off
#   AB_STACK=1 benches/e2e.sh      # two runs: full stack, then bare, for the on/off ratio
#   ROUNDS=5 DURATION=15s ...      # anything peers.sh takes
#
# Quote ratios and CPU µs/request from one run, never absolute numbers across runs.
# For every scenario of issue 8 (64 KiB, uploads, 1000 conns, new conns, TLS, memory) see
# benches/scenarios.sh and docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${PEERS_SH:-../shared/bench/peers.sh}
[ -x "$peers" ] || [ -f "$peers" ] || { echo "peers.sh not found at $peers (set PEERS_SH)" >&2; exit 1; }

need=()
for bin in wrk nginx haproxy h2load; do command -v "$bin" >/dev/null || need+=("$bin"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  pkgs=()
  for b in "${need[@]}"; do case $b in h2load) pkgs+=(nghttp2-client) ;; *) pkgs+=("$b") ;; esac; done
  if [ "$(id -u)" = 0 ]; then apt-get install -y "${pkgs[@]}" >/dev/null
  else sudo apt-get install -y "${pkgs[@]}" >/dev/null; fi
fi

cargo build --release --locked
export PEERS=${PEERS:-"nginx haproxy"}
run() {
  STACK=$1 OURS_NAME="levee-$1" OURS_CMD="STACK=$1 $PWD/benches/levee-for-peers.sh" bash "$peers"
}
if [ "${AB_STACK:-0}" = 1 ]; then
  run full
  PEERS="" run bare
else
  run "${STACK:-full}"
fi
