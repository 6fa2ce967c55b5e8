#!/usr/bin/env bash
# The per-core data path, UNPINNED on every core the machine has (no taskset: the
# multi-core case real hosts have; load generators and backends share the cores with
# the proxy). Portico with its data-path workers (one per CPU, the default) vs the
# Portico build before them (PORTICO_BASE, one work-stealing runtime) vs HAProxy with
# `nbthread` = the CPU count; optionally Portico with its main runtime single-threaded
# (MAIN1=1: TOKIO_WORKER_THREADS=1 PORTICO_WORKERS=N, to decide whether the control
# plane's runtime should shrink when workers exist).
#   1. wrk -t2 -c64, HTTP/1.1 keep-alive through an http VIP -> req/s, CPU per request
#   2. iperf3 bulk through a tcp VIP, 1 stream and 4 streams  -> Gbit/s, CPU per GiB
# Interleaved rounds (every system once per round, back to back), median of RUNS with
# the per-run range. Hold `flock /tmp/portico-bench.lock` around it on a shared machine
# (the script takes it itself unless NO_LOCK=1).
# Usage: PORTICO_BASE=/tmp/portico-a17b07c bash bench/cores.sh   (RUNS=5 DURATION=8)
set -euo pipefail
if [[ -z ${NO_LOCK:-} && -z ${CORES_LOCKED:-} ]]; then
    exec env CORES_LOCKED=1 flock /tmp/portico-bench.lock bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-8}
WRK_CONNS=${WRK_CONNS:-64}
CPUS=$(nproc)

need haproxy:haproxy nginx:nginx-light wrk:wrk iperf3:iperf3 curl:curl python3:python3
build_portico
raise_nofile

# ------------------------------------------------------------------ backends
B1=18080 B2=18081 IPERF=25201
mkdir -p "$TMP/nginx-backend"
nginx_backend_conf "$TMP/nginx-backend" $B1 $B2 >"$TMP/nginx-backend.conf"
bg nginx-backend nginx -p "$TMP/nginx-backend" -e stderr -c "$TMP/nginx-backend.conf"
bg iperf3-server iperf3 -s -B 127.0.0.1 -p $IPERF
wait_tcp 127.0.0.1 $B1; wait_tcp 127.0.0.1 $B2; wait_tcp 127.0.0.1 $IPERF

# ------------------------------------------------------------------ proxies
portico_conf() { # portico_conf HTTP_PORT TCP_PORT
    cat <<EOF
[[vip]]
name = "web"
listen = "127.0.0.1:$1"
mode = "http"
backends = [
  { name = "b1", address = "127.0.0.1:$B1" },
  { name = "b2", address = "127.0.0.1:$B2" },
]
probe = { kind = "http", path = "/health", interval = "5s", timeout = "1s" }

[[vip]]
name = "bulk"
listen = "127.0.0.1:$2"
mode = "tcp"
backends = [ { name = "iperf", address = "127.0.0.1:$IPERF" } ]
probe = { kind = "tcp", interval = "5s", timeout = "1s" }
EOF
}
declare -A PID HTTP_PORT TCP_PORT
HTTP_PORT=([portico]=28080 [base]=29080 [main1]=27080 [haproxy]=23080)
TCP_PORT=([portico]=15202 [base]=15203 [main1]=15204 [haproxy]=15205)

cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $CPUS
    maxconn $(((NOFILE - 1000) / 2))
    maxpipes 200
defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend web
    mode http
    timeout http-request 10s
    timeout http-keep-alive 60s
    option http-keep-alive
    option forwardfor
    bind 127.0.0.1:${HTTP_PORT[haproxy]} backlog 4096
    http-request set-header X-Forwarded-Proto http
    default_backend be
backend be
    mode http
    balance roundrobin
    http-reuse always
    option httpchk GET /health
    server b1 127.0.0.1:$B1 check inter 5s
    server b2 127.0.0.1:$B2 check inter 5s
listen bulk
    mode tcp
    option splice-auto
    bind 127.0.0.1:${TCP_PORT[haproxy]}
    server iperf 127.0.0.1:$IPERF check inter 5s
EOF
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy config invalid"

PROXIES=(portico)
STATUS=29100
{ printf '[http]\nlisten = "127.0.0.1:%s"\n\n' "$STATUS"; portico_conf "${HTTP_PORT[portico]}" "${TCP_PORT[portico]}"; } >"$TMP/portico.toml"
bg portico "$PORTICO" run --config "$TMP/portico.toml"; PID[portico]=$BG_PID
if [[ -n ${PORTICO_BASE:-} ]]; then
    [[ -x $PORTICO_BASE ]] || die "PORTICO_BASE=$PORTICO_BASE is not an executable"
    portico_conf "${HTTP_PORT[base]}" "${TCP_PORT[base]}" >"$TMP/base.toml"
    bg base "$PORTICO_BASE" run --config "$TMP/base.toml"; PID[base]=$BG_PID
    PROXIES+=(base)
fi
if [[ -n ${MAIN1:-} ]]; then
    portico_conf "${HTTP_PORT[main1]}" "${TCP_PORT[main1]}" >"$TMP/main1.toml"
    bg main1 env TOKIO_WORKER_THREADS=1 PORTICO_WORKERS="$CPUS" "$PORTICO" run --config "$TMP/main1.toml"; PID[main1]=$BG_PID
    PROXIES+=(main1)
fi
bg haproxy haproxy -db -f "$TMP/haproxy.cfg"; PID[haproxy]=$BG_PID
sleep 0.5; kill -0 "${PID[haproxy]}" 2>/dev/null || { cat "$TMP/haproxy.log" >&2; die "haproxy did not start"; }
PROXIES+=(haproxy)
for px in "${PROXIES[@]}"; do
    wait_tcp 127.0.0.1 "${HTTP_PORT[$px]}"; wait_tcp 127.0.0.1 "${TCP_PORT[$px]}"
done
for i in $(seq 100); do
    ok=1
    for px in "${PROXIES[@]}"; do curl -sfo /dev/null "http://127.0.0.1:${HTTP_PORT[$px]}/" || ok=0; done
    ((ok)) && break
    sleep 0.2
done
((ok)) || die "a proxy does not answer 200"
sleep 1

declare -A RPS CPU_REQ SYS_REQ BULK1 CPU1 BULK4 CPU4
# iperf_run PX STREAMS -> "GBPS MS_CPU_PER_GIB"
iperf_run() {
    local px=$1 p=$2 c0 c1 gbps bytes
    c0=$(cpu_ticks "${PID[$px]}")
    iperf3 -c 127.0.0.1 -p "${TCP_PORT[$px]}" -P "$p" -t "$DURATION" -J >"$TMP/iperf.json" 2>"$TMP/iperf.err" \
        || { cat "$TMP/iperf.json" "$TMP/iperf.err" >&2; die "iperf3 via $px failed"; }
    c1=$(cpu_ticks "${PID[$px]}")
    read -r gbps bytes < <(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]["sum_received"]; print("%.3f %d" % (e["bits_per_second"]/1e9, e["bytes"]))' "$TMP/iperf.json")
    echo "$gbps $(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.1f", t * 1000 / hz / (b / 2^30) }')"
}
for r in $(seq "$RUNS"); do
    for px in "${PROXIES[@]}"; do
        c0=$(cpu_ticks "${PID[$px]}"); k0=$(cpu_ticks "${PID[$px]}" sys)
        wrk -t2 -c"$WRK_CONNS" -d"${DURATION}s" "http://127.0.0.1:${HTTP_PORT[$px]}/" >"$TMP/wrk.out" 2>&1
        c1=$(cpu_ticks "${PID[$px]}"); k1=$(cpu_ticks "${PID[$px]}" sys)
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk.out")
        total=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
        if grep -q 'Non-2xx\|Socket errors' "$TMP/wrk.out"; then log "WARNING ($px): $(grep 'Non-2xx\|Socket errors' "$TMP/wrk.out")"; fi
        RPS[$px]+="$rps "; CPU_REQ[$px]+="$(cpu_us_per_op $((c1 - c0)) "$total") "; SYS_REQ[$px]+="$(cpu_us_per_op $((k1 - k0)) "$total") "
        log "run $r wrk   $px: $rps req/s, $(cpu_us_per_op $((c1 - c0)) "$total") us CPU/req ($(cpu_us_per_op $((k1 - k0)) "$total") kernel)"
        read -r g c < <(iperf_run "$px" 1); BULK1[$px]+="$g "; CPU1[$px]+="$c "
        log "run $r bulk1 $px: $g Gbit/s, $c ms CPU/GiB"
        sleep 1
        read -r g c < <(iperf_run "$px" 4); BULK4[$px]+="$g "; CPU4[$px]+="$c "
        log "run $r bulk4 $px: $g Gbit/s, $c ms CPU/GiB"
        sleep 1
    done
done
# How the kernel spread the connections over Portico's workers.
curl -s "http://127.0.0.1:$STATUS/metrics" | grep '^portico_lb_accepted_total' | sed 's/^/accepted: /' >&2 || true

# ------------------------------------------------------------------ report
# range V...: "MIN-MAX"
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s-%s", a, b }'; }
cell() { # cell "V..." DECIMALS -> "MEDIAN (MIN-MAX)"
    local m; m=$(median $1)
    echo "$(fmt "$m" "$2") ($(range $1 | awk -F- -v d="$2" '{ printf "%.*f-%.*f", d, $1, d, $2 }'))"
}
label() { case $1 in portico) echo "Portico, $CPUS workers";; base) echo "Portico before ($(basename "$PORTICO_BASE"))";; main1) echo "Portico, $CPUS workers, main runtime 1 thread";; haproxy) echo "HAProxy nbthread $CPUS";; esac; }
echo
echo "### Unpinned on $CPUS cores: Portico with per-core workers vs before vs HAProxy $(haproxy -v | awk 'NR==1 {print $3}')"
echo
echo "$(machine_line), WRK_CONNS=$WRK_CONNS (wrk -t2), unpinned: generators, backends and proxy share every core"
echo
echo "| system | HTTP/1.1 keep-alive req/s | CPU µs/req (kernel) | bulk 1 stream Gbit/s | CPU ms/GiB | bulk 4 streams Gbit/s | CPU ms/GiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for px in "${PROXIES[@]}"; do
    echo "| $(label "$px") | $(cell "${RPS[$px]}" 0) | $(fmt "$(median ${CPU_REQ[$px]})" 1) ($(fmt "$(median ${SYS_REQ[$px]})" 1)) | $(cell "${BULK1[$px]}" 2) | $(fmt "$(median ${CPU1[$px]})" 0) | $(cell "${BULK4[$px]}" 2) | $(fmt "$(median ${CPU4[$px]})" 0) |"
done
echo
echo "Per-run ratios, median (range) of the rounds:"
echo
echo "| measure | Portico/HAProxy | Portico/before |$([[ ${PID[main1]:-} ]] && echo " main1/Portico |")"
echo "|---|---:|---:|$([[ ${PID[main1]:-} ]] && echo "---:|")"
for k in RPS CPU_REQ BULK1 CPU1 BULK4 CPU4; do
    declare -n arr=$k
    line="| $k | $(paired_ratio "${arr[portico]}" "${arr[haproxy]}") | $([[ ${PID[base]:-} ]] && paired_ratio "${arr[portico]}" "${arr[base]}" || echo n/a) |"
    [[ ${PID[main1]:-} ]] && line+=" $(paired_ratio "${arr[main1]}" "${arr[portico]}") |"
    echo "$line"
    unset -n arr
done
echo
for k in RPS CPU_REQ BULK1 BULK4; do
    declare -n arr=$k
    line="Per-run $k:"
    for px in "${PROXIES[@]}"; do line+=" $px [${arr[$px]% }]"; done
    echo "$line"
    unset -n arr
done
