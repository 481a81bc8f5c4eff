#!/usr/bin/env bash
# End-to-end load scenarios: levee beside nginx and HAProxy in one run, alternating rounds.
#
#   benches/scenarios.sh                                   # every scenario, ROUNDS=2 DURATION=8s
#   SCENARIOS="small stack" ROUNDS=3 DURATION=10s benches/scenarios.sh
#   SCENARIOS=memory IDLE_CONNS=10000 benches/scenarios.sh
#   STACK=bare LEVEE_BIN=/path/to/levee KEEP_WORK=1 benches/scenarios.sh
#
# Scenarios (SCENARIOS, default all, in this order):
#   small      GET / keep-alive, wrk -t1 -c50 (also direct to the origin, for the origin's CPU/req)
#   big        GET /64k (64 KiB body), wrk -t1 -c50
#   upload     1 MiB POST to /upload, wrk -t1 -c16
#   conns1000  GET /, wrk -t1 -c1000
#   newconn    GET / with `Connection: close` (a new TCP connection per request), wrk -t1 -c50
#   h2         h2c prior knowledge, h2load -t1 -c50 -m10 (proxies speak HTTP/1.1 upstream)
#   tls        GET / over TLS keep-alive (rustls vs OpenSSL), wrk -t1 -c50
#   stack      levee STACK=full vs STACK=bare on `small`
#   memory     RSS at start-up, after the load scenarios, and with IDLE_CONNS idle keep-alive
#              connections (benches/idle_conns.py); runs last so the load tables' RSS excludes it
#
# Topology (2 cores): the load generator (wrk/h2load) and the origins (one nginx, one worker) on
# LOAD_CPU=0; each proxy on PROXY_CPU=1, one worker each (nginx worker_processes 1, HAProxy
# nbthread 1, levee --workers 1). Only one proxy is under load at a time; the others sit idle.
# CPU µs/request = user+sys ticks of the proxy's process tree (from /proc) over the measured
# window, divided by the requests the load generator completed. On this box the load core
# saturates first, so CPU/request separates proxies better than req/s. Quote ratios from one run.
#
# Env (defaults): ROUNDS=2 DURATION=8s WARMUP=1s LOAD_CPU=0 PROXY_CPU=1 BASE_PORT=18400
#   STACK=full (levee under test: full = breaker + outlier + retry attempts 2 + a rate limit that
#   never triggers; bare = no retry, no rate limit, outlier off; the breaker is always on in levee)
#   LEVEE_BIN=target/release/levee (relative to the repo) IDLE_CONNS=10000 KEEP_WORK (keep logs)
# Ports (B=BASE_PORT): origins B+1, B+2; nginx B+10 (h2c B+20, TLS B+30); HAProxy B+11 (h2c B+21,
# TLS B+31); levee B+13 (h1 + h2c; TLS B+33; admin B+113); second levee for `stack` B+14 (B+114).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-8s}; WARMUP=${WARMUP:-1s}
LOAD_CPU=${LOAD_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; B=${BASE_PORT:-18400}
STACK=${STACK:-full}; IDLE_CONNS=${IDLE_CONNS:-10000}
SCENARIOS=${SCENARIOS:-small big upload conns1000 newconn h2 tls stack memory}
LEVEE_BIN=${LEVEE_BIN:-target/release/levee}
case $LEVEE_BIN in /*) ;; *) LEVEE_BIN=$repo/$LEVEE_BIN ;; esac
case $STACK in full) OTHER_STACK=bare ;; bare) OTHER_STACK=full ;; *) echo "STACK must be full or bare" >&2; exit 2 ;; esac
DUR_S=${DURATION%s}
ORIGIN1="127.0.0.1:$((B + 1))"; ORIGIN2="127.0.0.1:$((B + 2))"

die() { echo "scenarios.sh: $*" >&2; exit 1; }
has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for s in $SCENARIOS; do
  case $s in memory|small|big|upload|conns1000|newconn|h2|tls|stack) ;; *) die "unknown scenario '$s'" ;; esac
done

# ---------------------------------------------------------------- tools (installed if missing)
find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }
need=()
for b in wrk nginx haproxy h2load openssl curl python3 taskset; do [ -n "$(find_bin "$b")" ] || need+=("$b"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for b in "${need[@]}"; do
    case $b in h2load) pkgs+=(nghttp2-client) ;; taskset) pkgs+=(util-linux) ;; *) pkgs+=("$b") ;; esac
  done
  echo "installing: ${pkgs[*]}" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y "${pkgs[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y "${pkgs[@]}" >/dev/null; } ||
    die "could not install ${pkgs[*]}"
fi
WRK=$(find_bin wrk); NGINX=$(find_bin nginx); HAPROXY=$(find_bin haproxy); H2LOAD=$(find_bin h2load)
[ -x "$LEVEE_BIN" ] || die "levee binary not found at $LEVEE_BIN (cargo build --release, or set LEVEE_BIN)"

# 1000 client connections, 10 000 idle ones, and their upstream sides need more than 1024 fds.
# Some containers refuse to raise the hard limit even to root; then take the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
! has memory || [ "$NOFILE" -gt $((IDLE_CONNS + 2000)) ] || die "open-file limit $NOFILE is too low for IDLE_CONNS=$IDLE_CONNS"

PIN=0
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=1; fi
on() { local c=$1; shift; if [ "$PIN" = 1 ]; then exec taskset -c "$c" "$@"; else exec "$@"; fi; }

work=$(mktemp -d "${TMPDIR:-/tmp}/levee-scenarios.XXXXXX")
chmod 755 "$work"   # nginx workers (user nobody) read the origin's files
declare -a PIDS=(); declare -A PID=(); LOADPID=
cleanup() {
  local p pg i alive
  trap - EXIT INT TERM
  [ -n "$LOADPID" ] && kill -TERM "$LOADPID" 2>/dev/null
  for p in "${PIDS[@]}"; do
    pg=$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ') || true
    if [ "$pg" = "$p" ]; then kill -TERM -- "-$p" 2>/dev/null || true; else kill -TERM "$p" 2>/dev/null || true; fi
  done
  for i in $(seq 50); do
    alive=0; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

# start NAME CPU CMD...: CMD in its own session and process group, pinned, logs to $work/NAME.log.
# The subshell execs taskset, which execs setsid (no fork: a background job is not a group
# leader), which execs CMD, so $! is CMD's PID.
start() {
  local name=$1 cpu=$2; shift 2
  ( on "$cpu" setsid "$@" >"$work/$name.log" 2>&1 ) &
  PIDS+=("$!"); PID[$name]=$!
}
# runload OUTFILE CMD...: the load generator on LOAD_CPU, in the background so that a signal to
# this script is handled at once (bash defers traps while a foreground child runs)
runload() { local f=$1; shift; ( on "$LOAD_CPU" "$@" ) >"$f" 2>&1 & LOADPID=$!; wait "$LOADPID" || true; LOADPID=; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_up NAME URL TIMEOUT_S [curl args]: until URL answers 200, or fail loudly with NAME's log
wait_up() {
  local name=$1 url=$2 n=$(( $3 * 10 )) i; shift 3
  for i in $(seq "$n"); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' "$@" "$url" || true)" = 200 ] && return 0
    kill -0 "${PID[$name]}" 2>/dev/null || break; sleep 0.1
  done
  echo "$name is not answering 200 at $url; its log:" >&2; tail -20 "$work/$name.log" >&2 || true
  exit 1
}

# ---------------------------------------------------------------- files and configs
mkdir -p "$work/www"
head -c 65536 /dev/zero | tr '\0' 'x' >"$work/www/64k"
echo ok >"$work/www/upload"
head -c 1048576 /dev/zero | tr '\0' 'u' >"$work/upload.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -days 1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null || die "openssl req failed"
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"
cat >"$work/upload.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("u", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# Origins: one nginx, one worker, two ports whose `/` bodies differ by one byte so the balance
# check sees both. /upload reads the whole body before it answers: the mirror module reads it
# (into one 2 MiB buffer, no temp file) in the precontent phase; the static handler then refuses
# POST with 405, which error_page turns into the 200 of a named location.
origin_server() {
  cat <<CONF
  server { listen $1 backlog=4096; root $work/www;
    client_max_body_size 2m; client_body_buffer_size 2m;
    location = / { return 200 "hello $2\n"; }
    location = /64k { }
    location = /upload { mirror /_sink; mirror_request_body on; error_page 405 =200 @ok; }
    location = /_sink { internal; return 204; }
    location @ok { return 200 "ok\n"; } }
CONF
}
cat >"$work/origin.conf" <<CONF
daemon off; worker_processes 1; worker_rlimit_nofile $NOFILE; pid $work/origin.pid; error_log $work/origin.err warn;
events { worker_connections 16384; }
http { access_log off; sendfile on; keepalive_requests 10000000; keepalive_timeout 300s;
  default_type application/octet-stream;
$(origin_server "$ORIGIN1" 1)
$(origin_server "$ORIGIN2" 2) }
CONF

# nginx as proxy: upstream keepalive; the request body streams to the origin (as levee and
# HAProxy do) instead of being spooled to a temp file first.
cat >"$work/nginx.conf" <<CONF
daemon off; worker_processes 1; worker_rlimit_nofile $NOFILE; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections $((NOFILE - 64)); }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  upstream origins { server $ORIGIN1; server $ORIGIN2; keepalive 1024; keepalive_requests 10000000; }
  server { listen 127.0.0.1:$((B + 10)) backlog=4096; listen 127.0.0.1:$((B + 20)) http2 backlog=4096;
    listen 127.0.0.1:$((B + 30)) ssl backlog=4096;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 2m;
    location / { proxy_pass http://origins; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_request_buffering off; } } }
CONF

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  ulimit-n $NOFILE
  maxconn $((IDLE_CONNS + 1500))
  # HAProxy sizes for 2 fds per connection; the memory scenario needs only 1 (client side) per
  # idle connection, so a 20 000-fd container limit must not be fatal
  no strict-limits
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$((B + 11))
  bind 127.0.0.1:$((B + 21)) proto h2
  bind 127.0.0.1:$((B + 31)) ssl crt $work/haproxy.pem alpn h2,http/1.1
  default_backend origins
backend origins
  balance roundrobin
  server o1 $ORIGIN1
  server o2 $ORIGIN2
CONF

# levee_config STACK PORT TLS_PORT ADMIN_PORT
levee_config() {
  local stack=$1 port=$2 tls_port=$3 admin=$4
  cat <<CONF
[admin]
bind = "127.0.0.1:$admin"

[[listener]]
name = "plain"
bind = "127.0.0.1:$port"
header_read_timeout = "300s"
max_connections = 30000
CONF
  if [ -n "$tls_port" ]; then
    cat <<CONF

[[listener]]
name = "tls"
bind = "127.0.0.1:$tls_port"
header_read_timeout = "300s"
max_connections = 30000
tls = { certificates = [{ cert = "$work/cert.pem", key = "$work/key.pem" }] }
CONF
  fi
  cat <<CONF

[[route]]
name = "all"
upstream = "origins"
CONF
  if [ "$stack" = full ]; then
    cat <<CONF

[route.retry]
attempts = 2

[route.rate_limit]
rps = 100000000.0
burst = 100000000
CONF
  fi
  cat <<CONF

[[upstream]]
name = "origins"
endpoints = ["$ORIGIN1", "$ORIGIN2"]
balance = "round_robin"
CONF
  if [ "$stack" = full ]; then
    cat <<CONF

[upstream.circuit_breaker]
failure_rate_threshold = 0.5
consecutive_failures = 5

[upstream.outlier_detection]
consecutive_failures = 5
failure_rate_threshold = 0.5
CONF
  else
    cat <<CONF

[upstream.outlier_detection]
consecutive_failures = 0
failure_rate_threshold = 0.0
CONF
  fi
}
levee_config "$STACK" "$((B + 13))" "$((B + 33))" "$((B + 113))" >"$work/levee.toml"
"$LEVEE_BIN" check --config "$work/levee.toml" >"$work/levee-check.log" 2>&1 ||
  { cat "$work/levee-check.log" >&2; die "levee check failed for $work/levee.toml"; }
if has stack; then
  levee_config "$OTHER_STACK" "$((B + 14))" "" "$((B + 114))" >"$work/levee_other.toml"
  "$LEVEE_BIN" check --config "$work/levee_other.toml" >"$work/levee-check.log" 2>&1 ||
    { cat "$work/levee-check.log" >&2; die "levee check failed for $work/levee_other.toml"; }
fi

# ---------------------------------------------------------------- start and check
ports=("$((B + 1))" "$((B + 2))" "$((B + 10))" "$((B + 20))" "$((B + 30))" "$((B + 11))" "$((B + 21))"
  "$((B + 31))" "$((B + 13))" "$((B + 33))" "$((B + 113))")
has stack && ports+=("$((B + 14))" "$((B + 114))")
for p in "${ports[@]}"; do port_busy "$p" && die "port $p is already in use (set BASE_PORT)"; done

"$NGINX" -t -q -e "$work/origin.err" -p "$work" -c "$work/origin.conf" || die "origin nginx config check failed"
"$NGINX" -t -q -e "$work/nginx.err" -p "$work" -c "$work/nginx.conf" || die "nginx config check failed"
"$HAPROXY" -c -q -f "$work/haproxy.cfg" || die "haproxy config check failed"
start origin "$LOAD_CPU" "$NGINX" -e "$work/origin.err" -p "$work" -c "$work/origin.conf"
start nginx "$PROXY_CPU" "$NGINX" -e "$work/nginx.err" -p "$work" -c "$work/nginx.conf"
start haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$work/haproxy.cfg"
start levee "$PROXY_CPU" "$LEVEE_BIN" run --workers 1 --log-level warn --config "$work/levee.toml"
has stack && start levee_other "$PROXY_CPU" "$LEVEE_BIN" run --workers 1 --log-level warn --config "$work/levee_other.toml"

declare -A H1 H2C TLS
H1=([direct]=$((B + 1)) [nginx]=$((B + 10)) [haproxy]=$((B + 11)) [levee]=$((B + 13)) [levee_other]=$((B + 14)))
H2C=([nginx]=$((B + 20)) [haproxy]=$((B + 21)) [levee]=$((B + 13)))
TLS=([nginx]=$((B + 30)) [haproxy]=$((B + 31)) [levee]=$((B + 33)))
PID[direct]=${PID[origin]}
PROXIES=(nginx haproxy levee)

wait_up origin "http://$ORIGIN1/" 10; wait_up origin "http://$ORIGIN2/" 10
for p in "${PROXIES[@]}"; do wait_up "$p" "http://127.0.0.1:${H1[$p]}/" 30; done
has stack && wait_up levee_other "http://127.0.0.1:${H1[levee_other]}/" 30
check_all() {
  local p=$1 port=${H1[$1]} seen out
  # balance: 6 requests reach both origins
  seen=$(for _ in 1 2 3 4 5 6; do curl -fs "http://127.0.0.1:$port/"; done | sort -u | tr '\n' ' ')
  [ "$seen" = "hello 1 hello 2 " ] || die "$p did not reach both origins in 6 requests (saw: $seen)"
  out=$(curl -fs -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/64k") || true
  [ "$out" = "200 65536" ] || die "$p: GET /64k gave '$out', want '200 65536'"
  out=$(curl -fs -o /dev/null -w '%{http_code} %{size_upload}' --data-binary @"$work/upload.bin" \
    -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$port/upload") || true
  [ "$out" = "200 1048576" ] || die "$p: 1 MiB POST /upload gave '$out', want '200 1048576'"
  if [ -n "${TLS[$p]:-}" ]; then
    out=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:${TLS[$p]}/") || true
    [ "$out" = 200 ] || die "$p: TLS port ${TLS[$p]} gave '$out'"
  fi
  if [ -n "${H2C[$p]:-}" ]; then
    out=$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' "http://127.0.0.1:${H2C[$p]}/") || true
    [ "$out" = "200 2" ] || die "$p: h2c port ${H2C[$p]} gave '$out', want '200 2'"
  fi
}
# the origin really reads a 1 MiB body before answering
out=$(curl -fs -o /dev/null -w '%{http_code} %{size_upload}' --data-binary @"$work/upload.bin" "http://$ORIGIN1/upload") || true
[ "$out" = "200 1048576" ] || die "origin: 1 MiB POST /upload gave '$out'"
for p in "${PROXIES[@]}"; do check_all "$p"; done
has stack && check_all levee_other

# ---------------------------------------------------------------- measurement helpers
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000}
  else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /m$/) {sub(/m$/,"",v); print v*60000}
  else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print "nan" }'; }
tree() { local p; echo "$1"; for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$p"; done; }
cpu_ticks() { local t=0 p v; for p in $(tree "$1"); do
  v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) && t=$((t + ${v:-0})); done; echo "$t"; }
rss_kib() { local t=0 p v; for p in $(tree "$1"); do
  v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) && t=$((t + ${v:-0})); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "nan";
  else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a/b; else print "-" }'; }
label() { case $1 in levee) echo "levee ($STACK)" ;; levee_other) echo "levee ($OTHER_STACK)" ;;
  direct) echo "direct (origin)" ;; *) echo "$1" ;; esac; }

declare -A RPS P50 P99 MEAN CPU RSS ERR
# measure SCEN KIND NAME ROUND URL [extra load args]: one measured run of NAME; KIND wrk|h2load
measure() {
  local scen=$1 kind=$2 name=$3 r=$4 url=$5; shift 5
  local pid=${PID[$name]} f="$work/$scen-$name-$r.txt" c0 c1 out reqs rps errs k="$scen:$name"
  c0=$(cpu_ticks "$pid")
  if [ "$kind" = wrk ]; then
    runload "$f" "$WRK" -t1 -d"$DURATION" --latency --timeout 10s "$@" "$url"
  else
    runload "$f" "$H2LOAD" -t1 -D "$DUR_S" --warm-up-time=1 "$@" "$url"
  fi
  c1=$(cpu_ticks "$pid"); out=$(cat "$f")
  if [ "$kind" = wrk ]; then
    reqs=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    [ -n "$rps" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || { echo "wrk failed for $scen/$name:" >&2; echo "$out" >&2; exit 1; }
    errs=$(awk '/Non-2xx/ {e+=$NF} /Socket errors/ {gsub(",",""); e+=$4+$6+$8+$10} END{print e+0}' <<<"$out")
    P50[$k]+=" $(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")"
    P99[$k]+=" $(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
    CPU[$k]+=" $(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.2f", d / hz * 1e6 / n}')"
  else
    rps=$(awk '/^finished in/ {print $4}' <<<"$out"); reqs=$(awk '/^requests:/ {print $8}' <<<"$out")  # succeeded
    [ -n "$rps" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || { echo "h2load failed for $scen/$name:" >&2; echo "$out" | tail -8 >&2; exit 1; }
    errs=$(awk '/^requests:/ {print $10 + $12 + $14}' <<<"$out")
    MEAN[$k]+=" $(to_ms "$(awk '/^time for request:/ {print $6}' <<<"$out")")"
    # CPU covers h2load's 1 s warm-up too; scale the requests of the measured window to match
    CPU[$k]+=" $(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" -v D="$DUR_S" \
      'BEGIN{ printf "%.2f", d / hz * 1e6 / (n * (D + 1) / D) }')"
  fi
  RPS[$k]+=" $rps"; ERR[$k]=$(( ${ERR[$k]:-0} + errs )); RSS[$k]+=" $(rss_kib "$pid")"
  LAST_RPS=$rps
}

# scenario SCEN KIND "TITLE" URLFN TARGETS... -- LOADARGS...: warm-up, then ROUNDS alternating
# rounds (start rotated each round), then a markdown table of medians with levee's ratios.
scenario() {
  local scen=$1 kind=$2 title=$3 urlfn=$4; shift 4
  local targets=() args=() t r k n line name url
  while [ "$1" != -- ]; do targets+=("$1"); shift; done; shift; args=("$@")
  n=${#targets[@]}
  for t in "${targets[@]}"; do
    url=$($urlfn "$t")
    if [ "$kind" = wrk ]; then runload /dev/null "$WRK" -t1 -d"$WARMUP" "${args[@]}" "$url"
    else runload /dev/null "$H2LOAD" -t1 -D 1 "${args[@]}" "$url"; fi
  done
  for r in $(seq "$ROUNDS"); do
    line="# $scen round $r:"
    for k in $(seq 0 $((n - 1))); do
      t=${targets[$(( (k + r - 1) % n ))]}
      measure "$scen" "$kind" "$t" "$r" "$($urlfn "$t")" "${args[@]}"
      line+=" $t=$(printf '%.0f' "$LAST_RPS")"
    done
    echo "$line"
  done
  report "$scen" "$kind" "$title" "${targets[@]}"
}

# report SCEN KIND TITLE TARGETS...: the reference for ratios is levee (or levee_other for stack)
report() {
  local scen=$1 kind=$2 title=$3; shift 3
  local t k rps cpu lrps lcpu
  lrps=$(median "${RPS[$scen:levee]}"); lcpu=$(median "${CPU[$scen:levee]}")
  echo
  echo "### $scen — $title"
  echo
  if [ "$kind" = wrk ]; then
    echo "| target | req/s | p50 ms | p99 ms | CPU µs/req | RSS MiB | errors | levee ÷ target req/s | levee ÷ target CPU/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  else
    echo "| target | req/s | mean ms | CPU µs/req | RSS MiB | errors | levee ÷ target req/s | levee ÷ target CPU/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  fi
  for t in "$@"; do
    k="$scen:$t"; rps=$(median "${RPS[$k]}"); cpu=$(median "${CPU[$k]}")
    local rr cr; rr=$(ratio "$lrps" "$rps"); cr=$(ratio "$lcpu" "$cpu")
    [ "$t" = levee ] && { rr="1"; cr="1"; }
    if [ "$kind" = wrk ]; then
      printf '| %s | %.0f | %.3f | %.3f | %.2f | %.1f | %d | %s | %s |\n' "$(label "$t")" "$rps" \
        "$(median "${P50[$k]}")" "$(median "${P99[$k]}")" "$cpu" \
        "$(awk -v k="$(median "${RSS[$k]}")" 'BEGIN{print k/1024}')" "${ERR[$k]}" "$rr" "$cr"
    else
      printf '| %s | %.0f | %.3f | %.2f | %.1f | %d | %s | %s |\n' "$(label "$t")" "$rps" \
        "$(median "${MEAN[$k]}")" "$cpu" "$(awk -v k="$(median "${RSS[$k]}")" 'BEGIN{print k/1024}')" \
        "${ERR[$k]}" "$rr" "$cr"
    fi
  done
  echo
  if [ "$scen" = small ] && [ -n "${CPU[small:direct]:-}" ]; then
    echo "levee CPU/request = $(ratio "$lcpu" "$(median "${CPU[small:direct]}")")× the origin's" \
      "($(median "${CPU[small:direct]}") µs/req, from the direct row); best peer CPU/request:" \
      "$(awk -v a="$(median "${CPU[small:nginx]}")" -v b="$(median "${CPU[small:haproxy]}")" 'BEGIN{print (a<b?a:b)}') µs."
  fi
  if [ "$scen" = stack ]; then
    local f b; if [ "$STACK" = full ]; then f=levee; b=levee_other; else f=levee_other; b=levee; fi
    echo "full stack ÷ bare: req/s $(ratio "$(median "${RPS[stack:$f]}")" "$(median "${RPS[stack:$b]}")")," \
      "CPU/request $(ratio "$(median "${CPU[stack:$f]}")" "$(median "${CPU[stack:$b]}")")."
  fi
  echo
}

h1url() { echo "http://127.0.0.1:${H1[$1]}/"; }
h1url64k() { echo "http://127.0.0.1:${H1[$1]}/64k"; }
h1urlup() { echo "http://127.0.0.1:${H1[$1]}/upload"; }
h2url() { echo "http://127.0.0.1:${H2C[$1]}/"; }
tlsurl() { echo "https://127.0.0.1:${TLS[$1]}/"; }

sleep 1; declare -A STARTUP_RSS; for p in "${PROXIES[@]}"; do STARTUP_RSS[$p]=$(rss_kib "${PID[$p]}"); done
echo "# scenarios.sh $(date -u +%FT%TZ) $(uname -r) cpus=$(nproc) pin=$PIN load_cpu=$LOAD_CPU proxy_cpu=$PROXY_CPU"
echo "# uptime:$(uptime | sed 's/.*load average/ load average/')"
echo "# ROUNDS=$ROUNDS DURATION=$DURATION STACK=$STACK SCENARIOS=\"$SCENARIOS\""
echo "# $("$NGINX" -v 2>&1 | sed 's/.*: //') haproxy/$("$HAPROXY" -v | awk 'NR==1{print $3}')" \
  "$("$LEVEE_BIN" --version 2>/dev/null || echo levee) $("$WRK" -v 2>&1 | awk 'NR==1{print "wrk/" $2}')" \
  "$("$H2LOAD" --version 2>/dev/null | awk '{print "h2load/" $2}' | head -1)"
echo "# TLS: $(for p in "${PROXIES[@]}"; do printf '%s=%s ' "$p" "$(echo | openssl s_client -connect "127.0.0.1:${TLS[$p]}" 2>/dev/null | awk '/^New,/ {sub(",","",$2); print $2 "/" $NF; exit}')"; done)"

# ---------------------------------------------------------------- scenarios
has small && scenario small wrk "GET / keep-alive, wrk -t1 -c50 -d$DURATION, medians of $ROUNDS rounds" \
  h1url direct nginx haproxy levee -- -c50
has big && scenario big wrk "GET /64k (64 KiB body) keep-alive, wrk -t1 -c50" h1url64k nginx haproxy levee -- -c50
has upload && scenario upload wrk "1 MiB POST to /upload, wrk -t1 -c16" h1urlup nginx haproxy levee -- \
  -c16 -s "$work/upload.lua"
has conns1000 && scenario conns1000 wrk "GET / keep-alive, 1000 connections, wrk -t1 -c1000" h1url \
  nginx haproxy levee -- -c1000
has newconn && scenario newconn wrk "GET / with Connection: close (a new connection per request), wrk -t1 -c50" \
  h1url nginx haproxy levee -- -c50 -H "Connection: close"
has h2 && scenario h2 h2load "h2c prior knowledge, h2load -t1 -c50 -m10 (upstream HTTP/1.1)" h2url \
  nginx haproxy levee -- -c50 -m10
has tls && scenario tls wrk "GET / over TLS keep-alive (rustls vs OpenSSL), wrk -t1 -c50" tlsurl \
  nginx haproxy levee -- -c50
has stack && scenario stack wrk "levee STACK=full vs STACK=bare, GET / keep-alive, wrk -t1 -c50" h1url \
  levee levee_other -- -c50
if has memory; then
  echo
  echo "### memory — RSS idle, and with $IDLE_CONNS idle keep-alive connections (one request each)"
  echo
  echo "| target | RSS at start-up MiB | RSS idle before MiB | RSS with $IDLE_CONNS idle conns MiB | KiB per idle connection | conns still open |"
  echo "|---|---:|---:|---:|---:|---:|"
  for p in "${PROXIES[@]}"; do
    ( on "$LOAD_CPU" python3 "$repo/benches/idle_conns.py" --port "${H1[$p]}" --pid "${PID[$p]}" \
      -n "$IDLE_CONNS" --tsv ) >"$work/memory-$p.txt" 2>&1 & LOADPID=$!
    wait "$LOADPID" || { cat "$work/memory-$p.txt" >&2; die "idle_conns.py failed for $p"; }
    LOADPID=
    read -r before with open_ < <(tail -1 "$work/memory-$p.txt")
    awk -v n="$p" -v s="${STARTUP_RSS[$p]}" -v b="$before" -v w="$with" -v o="$open_" -v c="$IDLE_CONNS" \
      'BEGIN{ printf "| %s | %.1f | %.1f | %.1f | %.1f | %d |\n", n, s/1024, b/1024, w/1024, (w-b)/c, o }'
    sleep 1   # let the proxy close its side before the next one
  done
  echo
fi
hwm_kib() { local t=0 p v; for p in $(tree "$1"); do
  v=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null) && t=$((t + ${v:-0})); done; echo "$t"; }
echo "# peak RSS (VmHWM, process tree) over the whole run:$(for p in "${PROXIES[@]}"; do
  printf ' %s=%.1fMiB' "$p" "$(awk -v k="$(hwm_kib "${PID[$p]}")" 'BEGIN{print k/1024}')"; done)"
echo "# uptime at end:$(uptime | sed 's/.*load average/ load average/')"
