#!/usr/bin/env bash
# Idle-connection memory scale curve: the RSS of a proxy holding N idle proxied IMAP
# sessions, Portico vs HAProxy (mode tcp, nbthread 1), N = 10,000 / 50,000 / 100,000.
#
# Backend: `helpers.py imap-server`, one process per backend address 127.3.0.1..BACKENDS
# (port 14300), each greeting "* OK [CAPABILITY IMAP4rev1 IDLE] ready" and then silent;
# both proxies balance round robin over the BACKENDS entries, so each of a proxy's
# outgoing connections has one of BACKENDS destinations and ~28,000 ephemeral ports each.
# Portico: a tcp VIP with protocol = "imap" (it reads the backend's greeting as part of
# connecting, then relays), TCP probes every 5 s. HAProxy: mode tcp, the same check
# interval, the same 31 min idle timeout on both sides.
# Clients: `helpers.py imap-clients`, one process per CLIENT_CONNS (10,000) connections,
# each from its own two source addresses 127.2.K.1-2, non-blocking connects 64 at a
# time; every connection reads the greeting through the proxy and is then held open.
#
# Per count and run, interleaved (Portico, then HAProxy): a fresh proxy, one warm-up
# IMAP greeting through it, VmRSS before; the N connections opened and greeted, all N
# checked still open (MSG_PEEK), one second later VmRSS after; KiB per connection =
# (after - before) / N. Median over RUNS, with the range.
#
# A proxy holds two descriptors per connection: the script raises the open-file limit
# to 2 x the largest count + 2,000 (`ulimit -Hn`, which needs CAP_SYS_RESOURCE), and
# counts that do not fit the limit in force are skipped and say so.
# Proxies on CPU 1, clients and backends on CPU 0, loopback only.
# Usage: bash bench/idle.sh   (COUNTS="10000 50000 100000" RUNS=3 BACKENDS=10 CLIENT_CONNS=10000
#                              CONNECT_SECS=<60 + N/200>)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

COUNTS=${COUNTS:-"10000 50000 100000"}
RUNS=${RUNS:-3}
BACKENDS=${BACKENDS:-10}
CLIENT_CONNS=${CLIENT_CONNS:-10000}
# Bound on opening and greeting one count's connections (60 s + 5 ms per connection);
# raise it on a slow machine.
CONNECT_SECS=${CONNECT_SECS:-}
DURATION=${DURATION:--}   # for machine_line: no timed load here

need haproxy:haproxy taskset:util-linux python3:python3

# ------------------------------------------------------------------ limits
MAX_COUNT=$(printf '%s\n' $COUNTS | sort -n | tail -1)
WANT_NOFILE=$((2 * MAX_COUNT + 2000))
if (($(ulimit -Hn) < WANT_NOFILE)); then
    ulimit -Hn "$WANT_NOFILE" 2>/dev/null || log "could not raise the hard open-file limit $(ulimit -Hn) to $WANT_NOFILE (no CAP_SYS_RESOURCE?)"
fi
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# A proxy needs 2 descriptors per connection plus its listeners, probes and logs.
RUNNABLE=() SKIPPED=()
for n in $COUNTS; do
    if ((2 * n + 200 <= NOFILE)); then RUNNABLE+=("$n"); else SKIPPED+=("$n"); fi
done
((${#SKIPPED[@]} == 0)) || log "skipping ${SKIPPED[*]} connections: the open-file limit is $NOFILE and cannot be raised"
((${#RUNNABLE[@]} > 0)) || die "no count in COUNTS=\"$COUNTS\" fits the open-file limit $NOFILE (the largest that does: $(((NOFILE - 200) / 2)))"
((CLIENT_CONNS + 100 <= NOFILE)) || die "CLIENT_CONNS=$CLIENT_CONNS does not fit the open-file limit $NOFILE"
TOP=$(printf '%s\n' "${RUNNABLE[@]}" | sort -n | tail -1)
MAXCONN=$((TOP + 50))   # both proxies' connection limit, the same for every count
# Each backend process holds TOP / BACKENDS sessions, each proxy source port range
# (~28,000 per destination) must cover as many.
PER_BACKEND=$(((TOP + BACKENDS - 1) / BACKENDS))
((PER_BACKEND + 100 <= NOFILE)) || die "BACKENDS=$BACKENDS: $PER_BACKEND sessions per backend process do not fit the open-file limit $NOFILE"
((PER_BACKEND <= 25000)) || die "BACKENDS=$BACKENDS: $PER_BACKEND connections per backend address would exhaust a proxy's ephemeral ports"
build_portico

# ------------------------------------------------------------------ backends
B_PORT=14300
BACKEND_PIDS=()
for i in $(seq "$BACKENDS"); do
    run_gen "imap-server-$i" python3 "$BENCH_DIR/helpers.py" imap-server "127.3.0.$i" $B_PORT
    BACKEND_PIDS+=("$BG_PID")
done
for i in $(seq "$BACKENDS"); do wait_tcp "127.3.0.$i" $B_PORT; done
# Open descriptors of the backends at rest (listeners, stdio), to see them drained.
backend_fds() { local p sum=0; for p in "${BACKEND_PIDS[@]}"; do sum=$((sum + $(ls /proc/"$p"/fd 2>/dev/null | wc -l))); done; echo "$sum"; }
sleep 0.5
BACKEND_FDS0=$(backend_fds)

# ------------------------------------------------------------------ proxies
P_PORT=19143 H_PORT=29143
{
    cat <<EOF
[[vip]]
name = "imap"
listen = "127.0.0.1:$P_PORT"
mode = "tcp"
protocol = "imap"
balance = "round_robin"
max_connections = $MAXCONN
idle_timeout = "31m"
greeting_timeout = "30s"
probe = { kind = "tcp", interval = "5s", timeout = "1s" }
backends = [
EOF
    for i in $(seq "$BACKENDS"); do echo "  { name = \"imap$i\", address = \"127.3.0.$i:$B_PORT\" },"; done
    echo "]"
} >"$TMP/portico.toml"
"$PORTICO" check --config "$TMP/portico.toml" >&2 || die "portico config invalid"

{
    cat <<EOF
global
    nbthread 1
    maxconn $MAXCONN
defaults
    mode tcp
    maxconn $MAXCONN
    timeout connect 2s
    timeout client 31m
    timeout server 31m
    balance roundrobin
    default-server check inter 5s fall 3 rise 2
listen imap
    bind 127.0.0.1:$H_PORT
EOF
    for i in $(seq "$BACKENDS"); do echo "    server imap$i 127.3.0.$i:$B_PORT"; done
} >"$TMP/haproxy.cfg"
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy config invalid"

port_of() { case $1 in portico) echo $P_PORT ;; haproxy) echo $H_PORT ;; esac; }

# greet PORT: one IMAP greeting through the proxy (bounded at 20 s): the backends are
# in rotation and the proxy's first connection has been made.
greet() {
    local i g
    for i in $(seq 100); do
        g=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -c 4 <&3" 2>/dev/null || true)
        [[ $g == "* OK" ]] && return 0
        sleep 0.2
    done
    return 1
}

start_proxy() {
    case $1 in
    portico) run_sut portico "$PORTICO" run --config "$TMP/portico.toml" ;;
    haproxy) run_sut haproxy haproxy -db -f "$TMP/haproxy.cfg" ;;
    esac
    PROXY_PID=$BG_PID
    wait_tcp 127.0.0.1 "$(port_of "$1")"
    greet "$(port_of "$1")" || die "no IMAP greeting through $1"
    sleep 1
}

# ------------------------------------------------------------------ runs
PROXIES=(portico haproxy)
declare -A KIB BEFORE AFTER TOOK
for n in "${RUNNABLE[@]}"; do
    procs=$(((n + CLIENT_CONNS - 1) / CLIENT_CONNS))
    for r in $(seq "$RUNS"); do
        for px in "${PROXIES[@]}"; do
            start_proxy "$px"
            before=$(rss_kib "$PROXY_PID")
            t0=$(date +%s.%N)
            secs=${CONNECT_SECS:-$((60 + n / 200))}
            cpids=()
            for k in $(seq "$procs"); do
                share=$(((n / procs) + (k <= n % procs ? 1 : 0)))
                rm -f "$TMP/ready.$k"
                run_gen "imap-clients-$k" python3 "$BENCH_DIR/helpers.py" imap-clients 127.0.0.1 "$(port_of "$px")" \
                    "$share" "127.2.$k.1,127.2.$k.2" "$TMP/ready.$k" $((secs + 600)) "$secs"
                cpids+=("$BG_PID")
            done
            # Bounded: each client gives up connecting after $secs s.
            end=$((SECONDS + secs + 30))
            while ((SECONDS < end)); do
                done_=0
                for k in $(seq "$procs"); do [[ -e $TMP/ready.$k ]] && done_=$((done_ + 1)); done
                ((done_ == procs)) && break
                running=0
                for p in "${cpids[@]}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
                ((running > 0)) || break
                sleep 0.1
            done
            took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
            alive=0 greeted=0 failed=0
            for k in $(seq "$procs"); do
                [[ -e $TMP/ready.$k ]] || { cat "$TMP/imap-clients-$k.log" >&2; die "clients $k via $px ($n connections) did not finish"; }
                read -r a g f <"$TMP/ready.$k"
                alive=$((alive + a)) greeted=$((greeted + g)) failed=$((failed + f))
            done
            kill -0 "$PROXY_PID" 2>/dev/null || die "$px exited with $n connections"
            sleep 1
            after=$(rss_kib "$PROXY_PID")
            cat /proc/"$PROXY_PID"/smaps >"$TMP/smaps.$px.$n.$r" 2>/dev/null || true
            kib=$(awk -v a="$after" -v b="$before" -v n="$alive" 'BEGIN { printf "%.2f", (a - b) / n }')
            log "$n conns run $r $px: $alive open ($greeted greeted, $failed failed) after ${took}s, RSS $before -> $after KiB, $kib KiB/conn"
            if ((alive != n)); then
                for k in $(seq "$procs"); do cat "$TMP/imap-clients-$k.log" >&2; done
                die "only $alive of $n connections open through $px"
            fi
            KIB[$px.$n]+="$kib " BEFORE[$px.$n]+="$before " AFTER[$px.$n]+="$after " TOOK[$px.$n]+="$took "
            for p in "${cpids[@]}"; do stop "$p"; done
            stop "$PROXY_PID"
            # The backends close their side as the proxy's closes arrive: wait (<= 60 s
            # + 1 ms per connection) for them to be back at rest before the next run.
            end=$((SECONDS + 60 + n / 1000))
            while ((SECONDS < end)); do (($(backend_fds) <= BACKEND_FDS0 + 2)) && break; sleep 0.5; done
            (($(backend_fds) <= BACKEND_FDS0 + 2)) || log "WARNING: backends still hold $(($(backend_fds) - BACKEND_FDS0)) connections"
        done
    done
done

# ------------------------------------------------------------------ report
# range V...: "MIN-MAX"
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s-%s", a, b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "### Idle IMAP sessions: proxy RSS by count, Portico vs HAProxy $(haproxy -v | awk 'NR==1 {print $3}') (mode tcp)"
echo
echo "$(machine_line), BACKENDS=$BACKENDS, open-file limit $NOFILE"
echo
echo "| idle sessions (median of $RUNS) | Portico RSS before → after, MiB | HAProxy RSS before → after, MiB | Portico KiB/conn (range) | HAProxy KiB/conn (range) | Portico/HAProxy |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${RUNNABLE[@]}"; do
    kp=$(median ${KIB[portico.$n]}) kh=$(median ${KIB[haproxy.$n]})
    echo "| $n | $(mib "$(median ${BEFORE[portico.$n]})") → $(mib "$(median ${AFTER[portico.$n]})") | $(mib "$(median ${BEFORE[haproxy.$n]})") → $(mib "$(median ${AFTER[haproxy.$n]})") | $(fmt "$kp" 2) ($(range ${KIB[portico.$n]})) | $(fmt "$kh" 2) ($(range ${KIB[haproxy.$n]})) | $(paired_ratio "${KIB[portico.$n]}" "${KIB[haproxy.$n]}") |"
done
for n in ${SKIPPED[@]+"${SKIPPED[@]}"}; do
    echo "| $n | not run: needs $((2 * n + 200)) descriptors, the limit is $NOFILE | | | | |"
done
echo
for n in "${RUNNABLE[@]}"; do
    for px in "${PROXIES[@]}"; do
        echo "Per-run $px $n: KiB/conn [${KIB[$px.$n]% }] RSS KiB [${BEFORE[$px.$n]% }] -> [${AFTER[$px.$n]% }] connect+greet s [${TOOK[$px.$n]% }]"
    done
done
