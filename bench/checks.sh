#!/usr/bin/env bash
# Health-check cost (issue 15): CPU of the process while it probes N backends every
# second and serves nothing else, Portico vs HAProxy (`check inter 1s`; `option
# smtpchk` for SMTP), interleaved round by round. Backends are distinct loopback
# addresses (127.1.x.y) on one port, served by one listener per kind on the generator
# core: a Python accept-and-close listener for TCP checks, Postfix's smtp-sink for SMTP.
# System under test on CPU 1. Reported: % of a core and µs of CPU per check (user +
# kernel, from /proc over the window), and RSS.
# Usage: bash bench/checks.sh   (RUNS=5 DURATION=20 BACKENDS=1000 KINDS="tcp smtp")
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-20}
BACKENDS=${BACKENDS:-1000}
KINDS=${KINDS:-tcp smtp}
WARMUP=${WARMUP:-4}

need haproxy:haproxy smtp-sink:postfix taskset:util-linux python3:python3
build_portico
raise_nofile

TCP_PORT=22001 SMTP_PORT=22025
run_gen tcp-target python3 "$BENCH_DIR/helpers.py" listener 0.0.0.0 $TCP_PORT
run_gen smtp-target smtp-sink -u nobody 0.0.0.0:$SMTP_PORT 4096
wait_tcp 127.0.0.1 $TCP_PORT
wait_tcp 127.0.0.1 $SMTP_PORT

addr() { echo "127.1.$(($1 / 250)).$(($1 % 250 + 1))"; }

portico_conf() { # portico_conf KIND PORT FILE
    {
        printf '[[vip]]\nname = "checked"\nlisten = "127.0.0.1:23%03d"\nbackends = [\n' $((RANDOM % 1000))
        for i in $(seq 0 $((BACKENDS - 1))); do
            printf '  { name = "b%d", address = "%s:%d" },\n' "$i" "$(addr "$i")" "$2"
        done
        printf ']\nprobe = { kind = "%s", interval = "1s", timeout = "900ms", rise = 2, fall = 3 }\n' "$1"
    } >"$3"
}
haproxy_conf() { # haproxy_conf KIND PORT FILE
    {
        cat <<EOF
global
    maxconn 4096
    nbthread 1
defaults
    mode tcp
    timeout connect 900ms
    timeout check 900ms
    timeout client 30s
    timeout server 30s
listen checked
    bind 127.0.0.1:24$(printf %03d $((RANDOM % 1000)))
    default-server check inter 1s rise 2 fall 3
EOF
        [[ $1 == smtp ]] && echo "    option smtpchk EHLO portico-bench.example.test"
        for i in $(seq 0 $((BACKENDS - 1))); do
            echo "    server b$i $(addr "$i"):$2"
        done
    } >"$3"
}

declare -A CPU US RSS
for kind in $KINDS; do
    port=$TCP_PORT; [[ $kind == smtp ]] && port=$SMTP_PORT
    portico_conf "$kind" $port "$TMP/portico-$kind.toml"
    haproxy_conf "$kind" $port "$TMP/haproxy-$kind.cfg"
    haproxy -c -f "$TMP/haproxy-$kind.cfg" >/dev/null || die "haproxy config invalid"
    "$PORTICO" check --config "$TMP/portico-$kind.toml" >/dev/null || die "portico config invalid"
done

for r in $(seq "$RUNS"); do
    for kind in $KINDS; do
        for sut in portico haproxy; do
            case $sut in
            portico) run_sut "portico-$kind" "$PORTICO" run --config "$TMP/portico-$kind.toml" ;;
            haproxy) run_sut "haproxy-$kind" haproxy -db -f "$TMP/haproxy-$kind.cfg" ;;
            esac
            pid=$BG_PID
            sleep "$WARMUP"
            c0=$(cpu_ticks "$pid")
            sleep "$DURATION"
            c1=$(cpu_ticks "$pid")
            rss=$(rss_kib "$pid")
            stop "$pid"
            pct=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.2f", 100 * t / hz / d }')
            us=$(cpu_us_per_op $((c1 - c0)) $((BACKENDS * DURATION)))
            CPU[$sut-$kind]+="$pct "; US[$sut-$kind]+="$us "; RSS[$sut-$kind]+="$rss "
            log "round $r $kind $sut: $pct % of a core, $us µs per check, RSS $rss KiB"
        done
    done
done

range() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s–%s", lo, hi }'; }
echo
echo "## Health checks: $BACKENDS backends every second ($(machine_line), portico $PORTICO_REV)"
echo
echo "| check | Portico % core (range) | HAProxy % core (range) | Portico µs/check | HAProxy µs/check | ratio | Portico RSS KiB | HAProxy RSS KiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for kind in $KINDS; do
    p=$(median ${CPU[portico-$kind]}) h=$(median ${CPU[haproxy-$kind]})
    echo "| $kind | $p ($(range "${CPU[portico-$kind]}")) | $h ($(range "${CPU[haproxy-$kind]}")) | $(median ${US[portico-$kind]}) | $(median ${US[haproxy-$kind]}) | $(ratio "$p" "$h") | $(median ${RSS[portico-$kind]}) | $(median ${RSS[haproxy-$kind]}) |"
done
