#!/usr/bin/env bash
# Regenerates docs/dashboard.png: starts `levee demo` on free ports, drives traffic until the
# flaky upstream's breaker opens, and screenshots the dashboard with headless Chromium.
#
#   docs/screenshot.sh            # from the repository root; needs curl and chromium
#
# LEVEE=path/to/levee uses that binary instead of building one; CHROMIUM=path overrides the browser.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chromium" ]; then
    echo "screenshot.sh: chromium not found (Debian: apt-get install -y chromium)" >&2
    exit 1
fi
if [ -z "${LEVEE:-}" ]; then
    cargo build --quiet
    LEVEE="${CARGO_TARGET_DIR:-target}/debug/levee"
fi

work=$(mktemp -d)
demo_pid=""
cleanup() {
    if [ -n "$demo_pid" ]; then kill "$demo_pid" 2>/dev/null || true; wait "$demo_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM

"$LEVEE" demo --bind 127.0.0.1:0 --admin 127.0.0.1:0 >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 100); do
    grep -q '^  proxy ' "$work/demo.out" 2>/dev/null && break
    sleep 0.1
done
proxy=$(sed -n 's/^  proxy *http:\/\/\([^ ]*\).*/\1/p' "$work/demo.out")
admin=$(sed -n 's/^  dashboard: http:\/\/\([^/]*\)\/.*/\1/p' "$work/demo.out")
if [ -z "$proxy" ] || [ -z "$admin" ]; then
    echo "screenshot.sh: levee demo did not start:" >&2
    cat "$work/demo.out" "$work/demo.err" >&2
    exit 1
fi
echo "demo: proxy $proxy, dashboard http://$admin/"

# `hits N PATH`: N requests in parallel; waits for those (a bare `wait` would wait for the demo).
hits() {
    local pids=()
    for _ in $(seq "$1"); do
        curl -s -o /dev/null -m 3 "http://$proxy$2" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
}

# ~30 s of mixed traffic, so every sparkline has a shape: the app route (retried onto the healthy
# backend), bursts over the rate limit, and the flaky route until its breaker opens.
for round in $(seq 30); do
    hits $((4 + round % 5)) / &
    p1=$!
    hits $((round % 4 * 3)) /limited &
    p2=$!
    hits 3 /flaky
    wait "$p1" "$p2" || true
    sleep 0.7
done
# Make sure the flaky breaker is open when the picture is taken.
for _ in $(seq 60); do
    if curl -s "http://$admin/status" | grep -q '"state":"open"'; then break; fi
    hits 5 /flaky
done

"$chromium" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --disable-quic --hide-scrollbars \
    --user-data-dir="$work/chromium" --window-size=1280,900 --virtual-time-budget=5000 \
    --screenshot=docs/dashboard.png "http://$admin/" 2>"$work/chromium.err" || {
    cat "$work/chromium.err" >&2
    exit 1
}
echo "wrote docs/dashboard.png"
