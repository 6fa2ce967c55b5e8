#!/usr/bin/env bash
# Scale curves: how the cost of a reload and of the gss's answers grows with the config.
#   1. lb, 1 / 100 / 1,000 tcp VIPs (one backend each, a TCP probe every 5 s): time
#      from exec to the admin socket answering, RSS, then `ctl reload` of a config that
#      changes every VIP's backend weight: wall time of the reload (the reply comes
#      after the commit), the process's CPU for it, and RSS after it.
#   2. gss, 100 / 10,000 / 100,000 site-selected names (two sites): time from exec to
#      the first answer, RSS, `ctl reload` time, and the time from the death of dc1's
#      keepalive target to the first answer naming dc2 (probe verdict + render + swap;
#      interval 1 s, fall 2, so about 1-2 s of it is detection).
# Portico only: the peers have no one number for these (HAProxy reloads by re-exec,
# the DNS servers do not select sites). The SUT is pinned to CPU 1, helpers to CPU 0.
# Usage: bash bench/scale.sh   (VIPS="1 100 1000" NAMES_AT="100 10000 100000" RUNS=3)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VIPS=${VIPS:-"1 100 1000"}
NAMES_AT=${NAMES_AT:-"100 10000 100000"}
DURATION=${DURATION:--}   # for machine_line: no timed load here

need python3:python3 dig:bind9-dnsutils taskset:util-linux bc:bc
build_portico
raise_nofile

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }

# wait_admin SOCKET: until `ctl show vips` (or `show sites`) answers, bounded at 120 s.
wait_admin() {
    local i
    for i in $(seq 1200); do
        "$PORTICO" ctl --socket "$1" "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "the admin socket $1 did not answer"
}

BACKEND_PORT=19100
run_gen backend python3 "$BENCH_DIR/helpers.py" listener 127.0.0.1 $BACKEND_PORT
wait_tcp 127.0.0.1 $BACKEND_PORT

# ------------------------------------------------------------------ 1. lb reload
lb_conf() { # lb_conf FILE N WEIGHT
    {
        printf '[admin]\nsocket = "%s"\n' "$TMP/lb.sock"
        local i
        for i in $(seq 0 $(($2 - 1))); do
            printf '\n[[vip]]\nname = "v%d"\nlisten = "127.0.0.1:%d"\nbackends = [ { name = "b", address = "127.0.0.1:%d", weight = %d } ]\nprobe = { kind = "tcp", interval = "5s", timeout = "1s" }\n' \
                "$i" $((30000 + i)) $BACKEND_PORT "$3"
        done
    } >"$1"
}

declare -A LB_START LB_RSS LB_RELOAD LB_RCPU LB_RSS2
for n in $VIPS; do
    for r in $(seq "$RUNS"); do
        lb_conf "$TMP/lb.toml" "$n" 1
        lb_conf "$TMP/lb2.toml" "$n" 2
        rm -f "$TMP/lb.sock"
        t0=$(now)
        run_sut lb "$PORTICO" run --config "$TMP/lb.toml"; pid=$BG_PID
        wait_admin "$TMP/lb.sock" "show vips"
        start=$(since "$t0")
        rss=$(rss_kib "$pid")
        cp "$TMP/lb2.toml" "$TMP/lb.toml"
        c0=$(cpu_ticks "$pid"); t0=$(now)
        out=$("$PORTICO" ctl --socket "$TMP/lb.sock" reload 2>&1) || die "reload with $n VIPs: $out"
        reload=$(since "$t0"); c1=$(cpu_ticks "$pid")
        rss2=$(rss_kib "$pid")
        stop "$pid"
        LB_START[$n]+="$(ms "$start") "; LB_RSS[$n]+="$rss "; LB_RELOAD[$n]+="$(ms "$reload") "
        LB_RCPU[$n]+="$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", t * 1000 / hz }') "; LB_RSS2[$n]+="$rss2 "
        log "lb $n VIPs run $r: up in $(ms "$start") ms, RSS $rss KiB; reload $(ms "$reload") ms, RSS after $rss2 KiB"
    done
done

# ------------------------------------------------------------------ 2. gss names
source "$(dirname "$0")/gss-common.sh"
start_ka $DC1
start_ka $DC2

gss_conf() { # gss_conf FILE N TTL: N names n0..n(N-1), answers with TTL
    mapfile -t NAMES < <(seq -f "n%.0f" 0 $(($2 - 1)))
    GSS_TTL=$3 portico_conf "$1" 25353 "$(printf '[admin]\nsocket = "%s"' "$TMP/gss.sock")"
}

answer() { dig +short +time=1 +tries=1 @127.0.0.1 -p 25353 "$1.$ZONE" A 2>/dev/null || true; }

declare -A G_START G_RSS G_RELOAD G_FO
for size in $NAMES_AT; do
    last="n$((size - 1))"
    for r in $(seq "$RUNS"); do
        gss_conf "$TMP/gss.toml" "$size" 20
        rm -f "$TMP/gss.sock"
        t0=$(now)
        run_sut gss "$PORTICO" run --config "$TMP/gss.toml"; pid=$BG_PID
        up=""
        for i in $(seq 3000); do
            [[ $(answer "$last") == "$DC1" ]] && { up=1; break; }
            sleep 0.05
        done
        [[ -n $up ]] || die "the gss with $size names did not answer $last with $DC1"
        start=$(since "$t0")
        rss=$(rss_kib "$pid")
        wait_admin "$TMP/gss.sock" "show sites"
        gss_conf "$TMP/gss.toml" "$size" 30
        t0=$(now)
        out=$("$PORTICO" ctl --socket "$TMP/gss.sock" reload 2>&1) || die "gss reload with $size names: $out"
        reload=$(since "$t0")
        # dc1's keepalive target dies: time to the first answer naming dc2.
        stop "${KA_PID[$DC1]}"
        t0=$(now); fo=""
        for i in $(seq 2000); do
            [[ $(answer "$last") == "$DC2" ]] && { fo=$(since "$t0"); break; }
            sleep 0.005
        done
        [[ -n $fo ]] || die "no failover with $size names"
        start_ka $DC1
        stop "$pid"
        G_START[$size]+="$(ms "$start") "; G_RSS[$size]+="$rss "; G_RELOAD[$size]+="$(ms "$reload") "; G_FO[$size]+="$(ms "$fo") "
        log "gss $size names run $r: answering in $(ms "$start") ms, RSS $rss KiB; reload $(ms "$reload") ms; failover $(ms "$fo") ms"
    done
done

# ------------------------------------------------------------------ report
echo
echo "### Scale: reload and the gss's answers (Portico $PORTICO_REV)"
echo
echo "$(machine_line)"
echo
echo "| lb, tcp VIPs (median of $RUNS) | start to admin socket, ms | RSS, KiB | reload, ms | reload CPU, ms | RSS after reload, KiB |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in $VIPS; do
    echo "| $n | $(median ${LB_START[$n]}) | $(median ${LB_RSS[$n]}) | $(median ${LB_RELOAD[$n]}) | $(median ${LB_RCPU[$n]}) | $(median ${LB_RSS2[$n]}) |"
done
echo
echo "| gss, names (median of $RUNS) | start to first answer, ms | RSS, KiB | reload, ms | keepalive target killed to first dc2 answer, ms |"
echo "|---:|---:|---:|---:|---:|"
for n in $NAMES_AT; do
    echo "| $n | $(median ${G_START[$n]}) | $(median ${G_RSS[$n]}) | $(median ${G_RELOAD[$n]}) | $(median ${G_FO[$n]}) |"
done
echo
for n in $VIPS; do echo "Per-run lb $n: start [${LB_START[$n]% }] reload [${LB_RELOAD[$n]% }] RSS [${LB_RSS[$n]% }] -> [${LB_RSS2[$n]% }]"; done
for n in $NAMES_AT; do echo "Per-run gss $n: start [${G_START[$n]% }] reload [${G_RELOAD[$n]% }] failover [${G_FO[$n]% }] RSS [${G_RSS[$n]% }]"; done
