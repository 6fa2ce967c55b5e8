#!/usr/bin/env bash
# DNS benchmark: Portico's gss vs NSD and Knot serving the same zone, all running, each
# driven in turn by dnsperf for the same length, round after round (interleaved, so a
# slow spell of the machine falls on all of them); then the end-to-end failover time of
# Portico and gdnsd (primary's keepalive target dies -> first answer naming the
# secondary).
# System under test on CPU 1, dnsperf, keepalive targets and dig on CPU 0.
# Usage: bash bench/dns.sh   (RUNS=5 DURATION=10 FAILOVER_RUNS=$RUNS)
# FIXED_QPS=N offers a fixed N queries/s (dnsperf -Q) instead of as many as dnsperf can send,
# below every server's saturation: the CPU row is then what each server spends per answer
# at the same load (FAILOVER_RUNS=0 skips the failover rounds).
# PORTICO_BASE=BINARY adds a second Portico build (say, one from before a change) to
# the qps rounds and a "Portico / base" table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
FAILOVER_RUNS=${FAILOVER_RUNS:-$RUNS}
DNSPERF_OUTSTANDING=${DNSPERF_OUTSTANDING:-100}

need /usr/bin/time:time nsd:nsd knotd:knot dnsperf:dnsperf dig:bind9-dnsutils gdnsd:gdnsd taskset:util-linux python3:python3
build_portico
raise_nofile

source "$(dirname "$0")/gss-common.sh"
start_ka $DC1
start_ka $DC2

# ------------------------------------------------------------------ configs
P_PORT=25353 N_PORT=26353 K_PORT=27353 G_PORT=28353 BASE_PORT=29353
portico_conf "$TMP/portico.toml" $P_PORT
if [[ -n ${PORTICO_BASE:-} ]]; then
    [[ -x $PORTICO_BASE ]] || die "PORTICO_BASE=$PORTICO_BASE is not an executable"
    portico_conf "$TMP/portico-base.toml" $BASE_PORT
fi

# The same names as static A records (the answer while dc1 is up) for NSD and Knot.
mkdir -p "$TMP/nsd" "$TMP/knot"
static_zone "$TMP/zone"
cp "$TMP/zone" "$TMP/nsd/$ZONE.zone"
cp "$TMP/zone" "$TMP/knot/$ZONE.zone"

cat >"$TMP/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$N_PORT
    server-count: 1
    reuseport: no
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$TMP/nsd"
    database: ""
    pidfile: "$TMP/nsd/nsd.pid"
    xfrdfile: "$TMP/nsd/xfrd.state"
    xfrdir: "$TMP/nsd"
    zonelistfile: "$TMP/nsd/zone.list"
    logfile: "$TMP/nsd/nsd.log"
    verbosity: 0
    # Debian builds NSD with response rate limiting on (200 qps per /24): off here.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: $ZONE
    zonefile: $ZONE.zone
EOF
nsd-checkconf "$TMP/nsd/nsd.conf" || die "nsd config invalid"

knot_conf "$TMP/knot" $K_PORT

queries_file "$TMP/queries"

# ------------------------------------------------------------------ qps
declare -A PID PORT
PORT=([portico]=$P_PORT [nsd]=$N_PORT [knot]=$K_PORT [base]=$BASE_PORT)
SERVERS=(portico nsd knot)
if [[ -n ${PORTICO_BASE:-} ]]; then SERVERS=(portico base nsd knot); fi
start_server() {
    case $1 in
    portico) run_sut portico "$PORTICO" run --config "$TMP/portico.toml" ;;
    base) run_sut portico-base "$PORTICO_BASE" run --config "$TMP/portico-base.toml" ;;
    nsd) run_sut nsd nsd -d -c "$TMP/nsd/nsd.conf" ;;
    knot) run_sut knot knotd -c "$TMP/knot/knot.conf" ;;
    esac
    PID[$1]=$BG_PID
    local i a
    for i in $(seq 100); do
        a=$(dig +short +time=1 +tries=1 @127.0.0.1 -p "${PORT[$1]}" "smtp.$ZONE" A 2>/dev/null || true)
        [[ $a == "$DC1" ]] && return 0
        sleep 0.2
    done
    die "$1 does not answer smtp.$ZONE with $DC1"
}

declare -A QPS LOST CPU GEN
for s in "${SERVERS[@]}"; do start_server "$s"; done
for r in $(seq "$RUNS"); do
    for s in "${SERVERS[@]}"; do
        c0=$(cpu_ticks "${PID[$s]}")
        /usr/bin/time -o "$TMP/gen.time" -f '%U %S %e' \
            taskset -c "$GEN_CPU" dnsperf -s 127.0.0.1 -p "${PORT[$s]}" -d "$TMP/queries" -l "$DURATION" \
            -c 1 -T 1 -q "$DNSPERF_OUTSTANDING" ${FIXED_QPS:+-Q "$FIXED_QPS"} >"$TMP/dnsperf.out" 2>&1 || { cat "$TMP/dnsperf.out" >&2; die "dnsperf against $s failed"; }
        # How busy the generator's core was: at ~100 % the rate is dnsperf's ceiling,
        # not the server's capacity (read the CPU-per-query row then).
        gen=$(awk 'END { if ($3 > 0) printf "%.0f", 100 * ($1 + $2) / $3; else print "nan" }' "$TMP/gen.time")
        c1=$(cpu_ticks "${PID[$s]}")
        qps=$(awk '/Queries per second:/ {print $4}' "$TMP/dnsperf.out")
        lost=$(awk '/Queries lost:/ {print $3}' "$TMP/dnsperf.out")
        completed=$(awk '/Queries completed:/ {print $3}' "$TMP/dnsperf.out")
        noerror=$(grep -o 'NOERROR [0-9]*' "$TMP/dnsperf.out" | awk '{print $2}')
        [[ $noerror == "$completed" ]] || log "WARNING ($s): $(grep 'Response codes' "$TMP/dnsperf.out")"
        cpu=$(cpu_us_per_op $((c1 - c0)) "$completed")
        QPS[$s]+="$qps "; LOST[$s]+="$lost "; CPU[$s]+="$cpu "; GEN[$s]+="$gen "
        log "run $r dnsperf $s: $qps qps, $lost lost, $cpu us CPU/query, dnsperf at $gen % of its core"
    done
done
for s in "${SERVERS[@]}"; do stop "${PID[$s]}"; done

# ------------------------------------------------------------------ failover
# gdnsd: simplefo between the same two addresses, each watched by tcp_connect on the
# keepalive port. gdnsd cannot probe every 1 s: its timeout is >= 1 s and must be
# shorter than the interval, so interval 2 is its minimum. It runs twice: with its
# default thresholds (down after 10 failed probes, ok_thresh 10, up_thresh 20) and with
# down_thresh 2 (Portico's fall 2 here).
gdnsd_conf() { # gdnsd_conf DIR DOWN_THRESH
    mkdir -p "$1/zones" "$1/run" "$1/state"
    cat >"$1/config" <<EOF
options => {
  listen => [ 127.0.0.1:$G_PORT ]
  run_dir => $1/run
  state_dir => $1/state
  udp_threads => 1
  tcp_threads => 1
}
service_types => {
  ka => { plugin => tcp_connect, port => $KA_PORT, interval => 2, timeout => 1$2 }
}
plugins => {
  simplefo => {
    smtp => { service_types => [ ka ], primary => $DC1, secondary => $DC2 }
  }
}
EOF
    {
        echo "\$TTL 20"
        echo "@ SOA ns1 hostmaster 1 3600 600 86400 30"
        echo "@ NS ns1"
        echo "ns1 3600 A 127.0.0.53"
        echo "smtp 20 DYNA simplefo!smtp"
    } >"$1/zones/$ZONE"
    gdnsd -c "$1" checkconf >"$1/checkconf.log" 2>&1 || { cat "$1/checkconf.log" >&2; die "gdnsd config invalid"; }
}
gdnsd_conf "$TMP/gdnsd-default" ""
gdnsd_conf "$TMP/gdnsd-fall2" ", down_thresh => 2"

# failover_once NAME PORT START_CMD...: sets FO_T to the seconds from the primary's
# keepalive target dying to the first answer naming the secondary (dig every 50 ms,
# <= 60 s). Not run in $(...): it restarts the keepalive target and tracks its PID.
failover_once() {
    local name=$1 port=$2; shift 2
    run_sut "$name" "$@"; local spid=$BG_PID
    local i a
    for i in $(seq 100); do
        a=$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" "smtp.$ZONE" A 2>/dev/null || true)
        [[ $a == "$DC1" ]] && break
        sleep 0.2
    done
    [[ $a == "$DC1" ]] || die "$name does not answer $DC1 before the failover"
    # Let the first probe rounds settle, then kill at a random phase of the interval.
    sleep "$(awk -v s="$RANDOM" 'BEGIN { printf "%.3f", 3 + (s % 2000) / 1000 }')"
    local t0 t1
    t0=$(date +%s.%N)
    stop "${KA_PID[$DC1]}"
    while :; do
        a=$(taskset -c "$GEN_CPU" dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" "smtp.$ZONE" A 2>/dev/null || true)
        t1=$(date +%s.%N)
        [[ $a == *"$DC2"* ]] && break
        if awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a > 60) }'; then t1=nan; break; fi
        sleep 0.05
    done
    stop "$spid"
    start_ka $DC1
    if [[ $t1 == nan ]]; then FO_T=nan; else FO_T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'); fi
}

declare -A FO
FO_KINDS=(portico gdnsd-default gdnsd-fall2)
for k in "${FO_KINDS[@]}"; do FO[$k]=""; done # FAILOVER_RUNS=0: reported as n/a
for r in $(seq "$FAILOVER_RUNS"); do
    for k in "${FO_KINDS[@]}"; do
        case $k in
        portico) failover_once portico-fo $P_PORT "$PORTICO" run --config "$TMP/portico.toml" ;;
        gdnsd-*) failover_once "$k" $G_PORT gdnsd -c "$TMP/$k" start ;;
        esac
        t=$FO_T
        FO[$k]+="$t "
        log "run $r failover $k: ${t}s"
    done
done

# ------------------------------------------------------------------ report
declare -A M
for s in "${SERVERS[@]}"; do
    M[qps-$s]=$(median ${QPS[$s]}); M[lost-$s]=$(median ${LOST[$s]}); M[cpu-$s]=$(median ${CPU[$s]}); M[gen-$s]=$(median ${GEN[$s]})
done
for k in "${FO_KINDS[@]}"; do M[fo-$k]=$(median ${FO[$k]}); done
best=nsd
awk -v a="${M[qps-knot]}" -v b="${M[qps-nsd]}" 'BEGIN { exit !(a > b) }' && best=knot
echo
echo "### DNS: Portico gss vs NSD $(nsd -v 2>&1 | awk 'NR==1 {print $3}') vs Knot $(knotd -V | awk '{print $NF}')"
echo
echo "$(machine_line), dnsperf -c 1 -T 1 -q $DNSPERF_OUTSTANDING${FIXED_QPS:+ -Q $FIXED_QPS} -l $DURATION over ${#NAMES[@]} names (A), UDP"
echo
echo "| measure (median of $RUNS) | Portico | NSD | Knot | Portico/NSD, paired per round (range) | Portico/Knot, paired per round (range) |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| queries/s | $(fmt "${M[qps-portico]}") | $(fmt "${M[qps-nsd]}") | $(fmt "${M[qps-knot]}") | $(paired_ratio "${QPS[portico]}" "${QPS[nsd]}") | $(paired_ratio "${QPS[portico]}" "${QPS[knot]}") |"
echo "| queries lost | $(fmt "${M[lost-portico]}") | $(fmt "${M[lost-nsd]}") | $(fmt "${M[lost-knot]}") | | |"
echo "| CPU µs per query | $(fmt "${M[cpu-portico]}" 2) | $(fmt "${M[cpu-nsd]}" 2) | $(fmt "${M[cpu-knot]}" 2) | $(paired_ratio "${CPU[portico]}" "${CPU[nsd]}") | $(paired_ratio "${CPU[portico]}" "${CPU[knot]}") |"
echo "| dnsperf's own CPU, % of its core | $(fmt "${M[gen-portico]}") | $(fmt "${M[gen-nsd]}") | $(fmt "${M[gen-knot]}") | | |"
echo
echo "Portico / best of NSD and Knot ($best): $(ratio "${M[qps-portico]}" "${M[qps-$best]}")x queries/s."
echo
echo "| failover: keepalive target killed -> first answer naming the secondary (median of $FAILOVER_RUNS) | seconds |"
echo "|---|---:|"
echo "| Portico gss, tcp keepalive interval 1s, timeout 500ms, fall 2 | $(fmt "${M[fo-portico]}" 2) |"
echo "| gdnsd $(gdnsd -c /nonexistent checkconf 2>&1 | awk '/version/ {print $4; exit}'), tcp_connect interval 2s (its minimum), timeout 1s, default down_thresh 10 | $(fmt "${M[fo-gdnsd-default]}" 2) |"
echo "| gdnsd, tcp_connect interval 2s, timeout 1s, down_thresh 2 | $(fmt "${M[fo-gdnsd-fall2]}" 2) |"
echo "| gdnsd at interval 1s with default thresholds (not configurable: computed, 10 failures x 1 s) | ≈ 9–10 |"
echo
echo "Per-run CPU µs/query: portico [${CPU[portico]% }] nsd [${CPU[nsd]% }] knot [${CPU[knot]% }]"
echo "Per-run qps: portico [${QPS[portico]% }] nsd [${QPS[nsd]% }] knot [${QPS[knot]% }]; failover s: portico [${FO[portico]% }] gdnsd-default [${FO[gdnsd-default]% }] gdnsd-fall2 [${FO[gdnsd-fall2]% }]"

if [[ -n ${PORTICO_BASE:-} ]]; then
    M[qps-base]=$(median ${QPS[base]}); M[cpu-base]=$(median ${CPU[base]})
    echo
    echo "### Portico ($PORTICO) vs the base build ($PORTICO_BASE)"
    echo
    echo "| measure (median of $RUNS) | Portico | base | Portico/base | Portico/Knot | base/Knot |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| queries/s | $(fmt "${M[qps-portico]}") | $(fmt "${M[qps-base]}") | $(ratio "${M[qps-portico]}" "${M[qps-base]}") | $(ratio "${M[qps-portico]}" "${M[qps-knot]}") | $(ratio "${M[qps-base]}" "${M[qps-knot]}") |"
    echo "| CPU µs per query | $(fmt "${M[cpu-portico]}" 2) | $(fmt "${M[cpu-base]}" 2) | $(ratio "${M[cpu-portico]}" "${M[cpu-base]}") | $(ratio "${M[cpu-portico]}" "${M[cpu-knot]}") | $(ratio "${M[cpu-base]}" "${M[cpu-knot]}") |"
    echo
    echo "Per-run qps: base [${QPS[base]% }]"
fi
