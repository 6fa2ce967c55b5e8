#!/usr/bin/env bash
# Route health injection latency: Portico's BGP speaker vs ExaBGP's healthcheck
# process (Debian exabgp), each announcing the same VIP prefix to one BIRD on loopback
# from its own 127.0.0.N, each watching its own TCP backend with the same check
# (connect every 1 s, down after 2 failures, up after 1 success).
#   kill:    last backend killed -> BIRD no longer holds that speaker's path
#   sigterm: SIGTERM to the speaker -> BIRD no longer holds its path
# Runs alternate Portico / ExaBGP. This measures latency, not CPU: a debug build is
# fine (PORTICO_BIN=target/debug/portico skips the release build).
# Usage: bash bench/bgp.sh   (BGP_RUNS=20)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BGP_RUNS=${BGP_RUNS:-20}
RUNS=$BGP_RUNS
DURATION=-
need bird:bird2 birdc:bird2 exabgp:exabgp python3:python3 taskset:util-linux
build_portico

PREFIX=198.51.100.10/32
BIRD_PORT=17917
PORTICO_SRC=127.0.0.2 EXA_SRC=127.0.0.3
PORTICO_BACKEND=17925 EXA_BACKEND=17935
VIP_PORT=17926
CTL=$TMP/bird.ctl

cat >"$TMP/bird.conf" <<EOF
router id 127.0.0.1;
protocol device { }
protocol bgp portico {
  local 127.0.0.1 port $BIRD_PORT as 65000;
  neighbor $PORTICO_SRC as 65010;
  multihop 2; passive on; hold time 9;
  ipv4 { import all; export none; };
}
protocol bgp exabgp {
  local 127.0.0.1 port $BIRD_PORT as 65000;
  neighbor $EXA_SRC as 65020;
  multihop 2; passive on; hold time 9;
  ipv4 { import all; export none; };
}
EOF
run_gen bird bird -f -c "$TMP/bird.conf" -s "$CTL" -P "$TMP/bird.pid"
for _ in $(seq 100); do birdc -s "$CTL" show status 2>/dev/null | grep -q 'Daemon is up' && break; sleep 0.1; done

# has_path PROTO: BIRD holds PREFIX from that protocol.
has_path() { birdc -s "$CTL" show route for "$PREFIX" protocol "$1" 2>/dev/null | grep -q "\[$1 "; }
# wait_path PROTO yes|no SECONDS: polls every ~10 ms; prints the time it became so.
wait_path() {
    local proto=$1 want=$2 limit=$3 start now
    start=$(date +%s.%N)
    while :; do
        now=$(date +%s.%N)
        if has_path "$proto"; then [[ $want == yes ]] && { echo "$now"; return 0; }
        else [[ $want == no ]] && { echo "$now"; return 0; }; fi
        awk -v a="$start" -v b="$now" -v l="$limit" 'BEGIN { exit !(b - a > l) }' && return 1
        sleep 0.01
    done
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

declare -A BACKEND_PID
backend_up() { run_gen "backend-$1" python3 "$BENCH_DIR/helpers.py" listener 127.0.0.1 "$1"; BACKEND_PID[$1]=$BG_PID; wait_tcp 127.0.0.1 "$1"; }
backend_down() { stop "${BACKEND_PID[$1]}"; }

cat >"$TMP/portico.toml" <<EOF
drain_timeout = "5s"
[bgp]
local_as = 65010
router_id = "$PORTICO_SRC"
withdraw_grace = "1s"
[[bgp.neighbor]]
address = "127.0.0.1"
port = $BIRD_PORT
remote_as = 65000
local_address = "$PORTICO_SRC"
hold_time = "9s"
[[vip]]
name = "smtp"
listen = "$PORTICO_SRC:$VIP_PORT"
backends = [ { name = "mx1", address = "127.0.0.1:$PORTICO_BACKEND" } ]
probe = { kind = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 2 }
announce = { prefixes = ["$PREFIX"] }
EOF
start_portico() { run_sut portico "$PORTICO" run --config "$TMP/portico.toml"; SPEAKER_PID=$BG_PID; }

# The same check as Portico's tcp probe: a TCP connect.
printf '#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/%s\n' "$EXA_BACKEND" >"$TMP/check.sh"
chmod +x "$TMP/check.sh"
cat >"$TMP/exabgp.conf" <<EOF
process watch {
  run /usr/bin/python3 -m exabgp healthcheck --no-syslog --no-ip-setup --withdraw-on-down --ip $PREFIX --interval 1 --fast-interval 1 --timeout 1 --rise 1 --fall 2 --command $TMP/check.sh;
  encoder text;
}
neighbor 127.0.0.1 {
  router-id $EXA_SRC;
  local-address $EXA_SRC;
  local-as 65020;
  peer-as 65000;
  hold-time 9;
  api { processes [ watch ]; }
}
EOF
start_exabgp() {
    run_sut exabgp env exabgp.tcp.port=$BIRD_PORT exabgp.tcp.bind= exabgp.daemon.user=root \
        exabgp.log.destination=stderr exabgp "$TMP/exabgp.conf"
    SPEAKER_PID=$BG_PID
}

declare -A KILL SIGTERM LAST
for k in portico exabgp; do KILL[$k]=""; SIGTERM[$k]=""; done

# kill: the speaker keeps running; the backend dies and comes back each run.
backend_up $PORTICO_BACKEND
backend_up $EXA_BACKEND
start_portico; PORTICO_PID=$SPEAKER_PID
start_exabgp; EXA_PID=$SPEAKER_PID
for i in $(seq "$BGP_RUNS"); do
    for s in portico exabgp; do
        port=$PORTICO_BACKEND; [[ $s == exabgp ]] && port=$EXA_BACKEND
        wait_path $s yes 30 >/dev/null || die "$s: no path in BIRD (see $TMP)"
        t0=$(date +%s.%N)
        backend_down "$port"
        t1=$(wait_path $s no 30) || die "$s: path not withdrawn within 30 s"
        LAST[$s]=$(secs "$t0" "$t1")
        KILL[$s]+="${LAST[$s]} "
        backend_up "$port"
    done
    log "kill run $i: portico ${LAST[portico]} s, exabgp ${LAST[exabgp]} s"
done
stop "$PORTICO_PID"; stop "$EXA_PID"

# sigterm: a fresh speaker each run, stopped once its path is in.
for i in $(seq "$BGP_RUNS"); do
    for s in portico exabgp; do
        if [[ $s == portico ]]; then start_portico; else start_exabgp; fi
        wait_path $s yes 30 >/dev/null || die "$s: no path in BIRD (see $TMP)"
        t0=$(date +%s.%N)
        kill -TERM "$SPEAKER_PID"
        t1=$(wait_path $s no 30) || die "$s: path not withdrawn within 30 s"
        LAST[$s]=$(secs "$t0" "$t1")
        SIGTERM[$s]+="${LAST[$s]} "
        stop "$SPEAKER_PID"
    done
    log "sigterm run $i: portico ${LAST[portico]} s, exabgp ${LAST[exabgp]} s"
done

max() { printf '%s\n' "$@" | sort -g | tail -1; }
echo "#### Route health injection: Portico vs ExaBGP $(exabgp --version 2>&1 | awk '/ExaBGP/ {print $3}') healthcheck, to BIRD $(bird --version 2>&1 | awk '{print $3}')"
echo
echo "$(machine_line)"
echo
echo "| seconds, $BGP_RUNS runs | Portico median | Portico max | ExaBGP median | ExaBGP max |"
echo "|---|---:|---:|---:|---:|"
for m in kill sigterm; do
    declare -n V=${m^^}
    label="last backend killed -> withdrawn"
    [[ $m == sigterm ]] && label="SIGTERM -> withdrawn"
    # shellcheck disable=SC2086
    echo "| $label | $(median ${V[portico]}) | $(max ${V[portico]}) | $(median ${V[exabgp]}) | $(max ${V[exabgp]}) |"
    unset -n V
done
echo
echo "per run (s): kill portico: ${KILL[portico]}"
echo "per run (s): kill exabgp: ${KILL[exabgp]}"
echo "per run (s): sigterm portico: ${SIGTERM[portico]}"
echo "per run (s): sigterm exabgp: ${SIGTERM[exabgp]}"
