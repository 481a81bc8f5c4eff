#!/usr/bin/env bash
# Started by ../shared/bench/peers.sh as OURS_CMD: writes a levee config for ORIGIN1/ORIGIN2 and
# OURS_PORT (from peers.sh's environment) and execs levee with one worker.
# STACK=full (default) puts the whole resilience stack on the route (breaker, outlier detection,
# retry with budget, a rate limit that never triggers); STACK=bare keeps only what cannot be off.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cfg=$(mktemp /tmp/levee-bench.XXXXXX.toml)
STACK=${STACK:-full}
admin_port=${ADMIN_PORT:-$((OURS_PORT + 100))}
{
  echo "[admin]"
  echo "bind = \"127.0.0.1:$admin_port\""
  echo "[[listener]]"
  echo "name = \"bench\""
  echo "bind = \"127.0.0.1:$OURS_PORT\""
  if [ -n "${OURS_H2_PORT:-}" ]; then :; fi
  echo "[[route]]"
  echo "name = \"all\""
  echo "upstream = \"origins\""
  if [ "$STACK" = full ]; then
    echo "[route.retry]"
    echo "attempts = 2"
    echo "[route.rate_limit]"
    echo "rps = 100000000"
    echo "burst = 100000000"
  fi
  echo "[[upstream]]"
  echo "name = \"origins\""
  echo "endpoints = [\"$ORIGIN1\", \"$ORIGIN2\"]"
  echo "balance = \"round_robin\""
  if [ "$STACK" = bare ]; then
    echo "[upstream.outlier_detection]"
    echo "consecutive_failures = 0"
  fi
} > "$cfg"
exec "${LEVEE_BIN:-$here/target/release/levee}" run --workers 1 --log-level warn --config "$cfg"
