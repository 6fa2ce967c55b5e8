#!/usr/bin/env bash
# DNSSEC cost (issue 13): CPU time per answer of Portico's gss unsigned, signed
# without and with the DO bit, against Knot serving the same names signed ahead
# (`dnssec-signing: on`) and PowerDNS signing online (bind backend, its default packet
# and signature caches), all at the same fixed query rate, below every server's
# saturation; then the time from a site's keepalive target dying to the first signed
# answer naming the other site (signed vs unsigned zone: signing ahead adds nothing).
# System under test on CPU 1, dnsperf and keepalive targets on CPU 0; servers are
# interleaved round by round.
# Usage: bash bench/dnssec.sh   (RUNS=5 DURATION=10 RATE=8000 FAILOVER_RUNS=$RUNS)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
RATE=${RATE:-8000}
FAILOVER_RUNS=${FAILOVER_RUNS:-$RUNS}

need /usr/bin/time:time knotd:knot keymgr:knot dnsperf:dnsperf dig:bind9-dnsutils taskset:util-linux \
    python3:python3 pdns_server:pdns-server pdnsutil:pdns-server
# The bind backend is a separate package; its module file is what pdns loads.
[[ -e /usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so ]] || need no-such-cmd:pdns-backend-bind
build_portico
raise_nofile

source "$(dirname "$0")/gss-common.sh"
KEYS="$REPO/gss/tests/testdata/dnssec"
KSK=Kgslb.example.test.+013+17467 ZSK=Kgslb.example.test.+013+33573
start_ka $DC1
start_ka $DC2

P_PORT=25353 S_PORT=25354 K_PORT=27353 D_PORT=29353
portico_conf "$TMP/portico.toml" $P_PORT
portico_conf "$TMP/portico-signed.toml" $S_PORT \
    "$(printf '[gss.dnssec]\nkeys = [ { file = "%s", role = "ksk" }, { file = "%s", role = "zsk" } ]' "$KEYS/$KSK" "$KEYS/$ZSK")"

# The same names as static A records (the answer while dc1 is up) for Knot and PowerDNS.
mkdir -p "$TMP/knot" "$TMP/pdns"
static_zone "$TMP/zone"
cp "$TMP/zone" "$TMP/knot/$ZONE.zone"
cp "$TMP/zone" "$TMP/pdns/$ZONE.zone"

# Knot signs the zone itself at load (see knot_conf).
knot_conf "$TMP/knot" $K_PORT signed

# PowerDNS: bind backend with its DNSSEC key database, the zone secured with its
# default algorithm (ECDSA P-256); signatures made at query time (then cached).
cat >"$TMP/pdns/pdns.conf" <<EOF
launch=bind
bind-config=$TMP/pdns/named.conf
bind-dnssec-db=$TMP/pdns/dnssec.db
local-address=127.0.0.1
local-port=$D_PORT
socket-dir=$TMP/pdns
daemon=no
guardian=no
disable-syslog=yes
loglevel=3
receiver-threads=1
distributor-threads=1
signing-threads=1
webserver=no
EOF
echo "zone \"$ZONE\" { file \"$TMP/pdns/$ZONE.zone\"; };" >"$TMP/pdns/named.conf"
pdnsutil --config-dir="$TMP/pdns" create-bind-db "$TMP/pdns/dnssec.db" >/dev/null 2>&1 || die "pdnsutil create-bind-db failed"
pdnsutil --config-dir="$TMP/pdns" secure-zone "$ZONE" >"$TMP/pdns/secure.log" 2>&1 || { cat "$TMP/pdns/secure.log" >&2; die "pdnsutil secure-zone failed"; }

queries_file "$TMP/queries"

# ------------------------------------------------------------------ CPU per answer
# kind: server and whether queries carry DO.
KINDS=(portico-unsigned portico-signed-nodo portico-signed-do knot-signed-do pdns-signed-do)
declare -A SRV PORT DO
SRV=([portico-unsigned]=portico [portico-signed-nodo]=portico-signed [portico-signed-do]=portico-signed
     [knot-signed-do]=knot [pdns-signed-do]=pdns)
DO=([portico-unsigned]= [portico-signed-nodo]= [portico-signed-do]=-D [knot-signed-do]=-D [pdns-signed-do]=-D)
PORT=([portico]=$P_PORT [portico-signed]=$S_PORT [knot]=$K_PORT [pdns]=$D_PORT)
declare -A PID
start_server() {
    case $1 in
    portico) run_sut portico "$PORTICO" run --config "$TMP/portico.toml" ;;
    portico-signed) run_sut portico-signed "$PORTICO" run --config "$TMP/portico-signed.toml" ;;
    knot) run_sut knot knotd -c "$TMP/knot/knot.conf" ;;
    pdns) run_sut pdns pdns_server --config-dir="$TMP/pdns" ;;
    esac
    PID[$1]=$BG_PID
    local i a
    for i in $(seq 150); do
        a=$(dig +dnssec +short +time=1 +tries=1 @127.0.0.1 -p "${PORT[$1]}" "smtp.$ZONE" A 2>/dev/null || true)
        if [[ $a == *"$DC1"* ]] && { [[ $1 == portico ]] || [[ $a == *"A 13 "* ]]; }; then return 0; fi
        sleep 0.2
    done
    die "$1 does not answer smtp.$ZONE with $DC1 (and an RRSIG when signed)"
}
for s in portico portico-signed knot pdns; do start_server "$s"; done

declare -A CPU QPS LOST SIZE
for r in $(seq "$RUNS"); do
    for k in "${KINDS[@]}"; do
        s=${SRV[$k]}
        c0=$(cpu_ticks "${PID[$s]}")
        taskset -c "$GEN_CPU" dnsperf -s 127.0.0.1 -p "${PORT[$s]}" -d "$TMP/queries" -l "$DURATION" \
            -c 1 -T 1 -q 200 -Q "$RATE" ${DO[$k]} >"$TMP/dnsperf.out" 2>&1 || { cat "$TMP/dnsperf.out" >&2; die "dnsperf $k failed"; }
        c1=$(cpu_ticks "${PID[$s]}")
        completed=$(awk '/Queries completed:/ {print $3}' "$TMP/dnsperf.out")
        qps=$(awk '/Queries per second:/ {print $4}' "$TMP/dnsperf.out")
        lost=$(awk '/Queries lost:/ {print $3}' "$TMP/dnsperf.out")
        noerror=$(grep -o 'NOERROR [0-9]*' "$TMP/dnsperf.out" | awk '{print $2}')
        [[ $noerror == "$completed" ]] || log "WARNING ($k): $(grep 'Response codes' "$TMP/dnsperf.out")"
        cpu=$(cpu_us_per_op $((c1 - c0)) "$completed")
        CPU[$k]+="$cpu "; QPS[$k]+="$qps "; LOST[$k]+="$lost "
        log "round $r $k: $qps qps, $lost lost, $cpu us CPU/answer"
    done
done
# A DO answer's size, for the table.
for s in portico-signed knot pdns; do
    SIZE[$s]=$(dig +dnssec +time=1 +tries=1 @127.0.0.1 -p "${PORT[$s]}" "smtp.$ZONE" A | awk '/MSG SIZE/ {print $NF}')
done 2>/dev/null || true
for s in portico portico-signed knot pdns; do stop "${PID[$s]}"; done

# ------------------------------------------------------------------ failover
# failover_once CONFIG PORT: seconds from dc1's keepalive target dying to the first
# answer naming dc2 (with its RRSIG when the zone is signed), dig every 20 ms.
failover_once() {
    run_sut fo "$PORTICO" run --config "$1"; local spid=$BG_PID port=$2 signed=$3
    local i a
    for i in $(seq 150); do
        a=$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" "smtp.$ZONE" A 2>/dev/null || true)
        [[ $a == "$DC1" ]] && break
        sleep 0.2
    done
    [[ $a == "$DC1" ]] || die "no $DC1 answer before the failover"
    sleep "$(awk -v s="$RANDOM" 'BEGIN { printf "%.3f", 3 + (s % 1000) / 1000 }')"
    local t0 t1
    t0=$(date +%s.%N)
    stop "${KA_PID[$DC1]}"
    while :; do
        a=$(taskset -c "$GEN_CPU" dig +dnssec +short +time=1 +tries=1 @127.0.0.1 -p "$port" "smtp.$ZONE" A 2>/dev/null || true)
        t1=$(date +%s.%N)
        if [[ $a == *"$DC2"* ]] && { [[ $signed == no ]] || [[ $a == *"A 13 "* ]]; }; then break; fi
        if awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a > 30) }'; then t1=nan; break; fi
        sleep 0.02
    done
    stop "$spid"
    start_ka $DC1
    if [[ $t1 == nan ]]; then FO_T=nan; else FO_T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'); fi
}
declare -A FO
for r in $(seq "$FAILOVER_RUNS"); do
    failover_once "$TMP/portico.toml" $P_PORT no; FO[unsigned]+="$FO_T "
    failover_once "$TMP/portico-signed.toml" $S_PORT yes; FO[signed]+="$FO_T "
    log "run $r failover: unsigned ${FO_T:-} signed $FO_T"
done

# ------------------------------------------------------------------ report
range() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s–%s", lo, hi }'; }
echo
echo "## DNSSEC: CPU per answer at $RATE queries/s ($(machine_line), portico $PORTICO_REV)"
echo
echo "| server, answers | CPU µs/answer median (range) | vs Portico unsigned | qps median | lost (sum) | DO answer bytes |"
echo "|---|---:|---:|---:|---:|---:|"
base=$(median ${CPU[portico-unsigned]})
for k in "${KINDS[@]}"; do
    m=$(median ${CPU[$k]})
    lost=$(awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; print s }' <<<"${LOST[$k]}")
    size=${SIZE[${SRV[$k]}]:-}
    [[ ${DO[$k]} == -D ]] || size="-"
    echo "| $k | $(fmt "$m" 2) ($(range "${CPU[$k]}")) | $(ratio "$m" "$base") | $(fmt "$(median ${QPS[$k]})") | $lost | ${size:-n/a} |"
done
echo
echo "Portico signed with DO ÷ Knot signed: $(ratio "$(median ${CPU[portico-signed-do]})" "$(median ${CPU[knot-signed-do]})");" \
    "÷ PowerDNS: $(ratio "$(median ${CPU[portico-signed-do]})" "$(median ${CPU[pdns-signed-do]})")"
echo
echo "Keepalive target killed → first answer naming dc2 (signed zone: with its RRSIG), $FAILOVER_RUNS runs:"
echo "unsigned median $(median ${FO[unsigned]}) s ($(range "${FO[unsigned]}")), signed median $(median ${FO[signed]}) s ($(range "${FO[signed]}"))"
