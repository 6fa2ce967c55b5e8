#!/usr/bin/env bash
# L4 (mode tcp) benchmark: Portico vs HAProxy in front of the same backends.
#   1. short SMTP sessions/s: smtp-source -> proxy -> 2 x smtp-sink
#   2. bulk throughput:       iperf3 -c   -> proxy -> iperf3 -s
#   3. memory per idle proxied connection: 8,000 idle connections -> proxy -> silent server
# System under test on CPU 1, everything else on CPU 0. Median of RUNS runs.
# Usage: bash bench/l4.sh   (RUNS=5 DURATION=10 SMTP_MSGS=12000 IDLE_CONNS=8000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
SMTP_MSGS=${SMTP_MSGS:-12000}
SMTP_SESSIONS=${SMTP_SESSIONS:-50}
IDLE_CONNS=${IDLE_CONNS:-8000}

need haproxy:haproxy smtp-sink:postfix smtp-source:postfix iperf3:iperf3 taskset:util-linux python3:python3
build_portico
raise_nofile
# HAProxy needs 2 fds per connection plus 2 per splice pipe (maxpipes, maxconn/4 by
# default, capped at 200 here: plenty for one bulk stream) and refuses to start when
# that exceeds the hard limit.
H_MAXCONN=$(((NOFILE - 1000) / 2))
((H_MAXCONN > IDLE_CONNS)) || die "open-file limit $NOFILE too low for $IDLE_CONNS idle connections"

# ------------------------------------------------------------------ backends
SINK1=20025 SINK2=20026 IPERF=25201 SILENT=21000
run_gen sink1 smtp-sink -u nobody 127.0.0.1:$SINK1 1000
run_gen sink2 smtp-sink -u nobody 127.0.0.1:$SINK2 1000
run_gen iperf3-server iperf3 -s -B 127.0.0.1 -p $IPERF
run_gen silent python3 "$BENCH_DIR/helpers.py" silent-server 127.0.0.1 $SILENT
for p in $SINK1 $SINK2 $IPERF $SILENT; do wait_tcp 127.0.0.1 $p; done

# ------------------------------------------------------------------ proxies
# Portico: one tcp VIP per test, TCP connect probes every 5 s (the defaults otherwise).
P_SMTP=12525 P_IPERF=15201 P_IDLE=19000
cat >"$TMP/portico.toml" <<EOF
[[vip]]
name = "smtp"
listen = "127.0.0.1:$P_SMTP"
mode = "tcp"
backends = [
  { name = "sink1", address = "127.0.0.1:$SINK1" },
  { name = "sink2", address = "127.0.0.1:$SINK2" },
]
probe = { kind = "tcp", interval = "5s", timeout = "1s" }

[[vip]]
name = "iperf"
listen = "127.0.0.1:$P_IPERF"
mode = "tcp"
backends = [ { name = "iperf", address = "127.0.0.1:$IPERF" } ]
probe = { kind = "tcp", interval = "5s", timeout = "1s" }

[[vip]]
name = "idle"
listen = "127.0.0.1:$P_IDLE"
mode = "tcp"
backends = [ { name = "silent", address = "127.0.0.1:$SILENT" } ]
probe = { kind = "tcp", interval = "5s", timeout = "1s" }
EOF

# HAProxy: one thread, the same backends, the same TCP connect check every 5 s
# ("check inter 5s", fall 3 rise 2 like Portico's defaults), the same idle timeout
# (31 min) and connect timeout (2 s). Splicing is off by default in HAProxy 2.6;
# "option splice-auto" turns on its kernel splice() path for bulk transfers (the
# configuration HAProxy recommends for TCP proxying), so it is compared at its best.
H_SMTP=22525 H_IPERF=25202 H_IDLE=29000
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $H_MAXCONN
    maxpipes 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 31m
    timeout server 31m
    option splice-auto
    balance roundrobin
    default-server check inter 5s fall 3 rise 2
listen smtp
    bind 127.0.0.1:$H_SMTP
    server sink1 127.0.0.1:$SINK1
    server sink2 127.0.0.1:$SINK2
listen iperf
    bind 127.0.0.1:$H_IPERF
    server iperf 127.0.0.1:$IPERF
listen idle
    bind 127.0.0.1:$H_IDLE
    server silent 127.0.0.1:$SILENT
EOF
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy config invalid"

declare -A PID
start_proxy() {
    case $1 in
    portico) run_sut portico "$PORTICO" run --config "$TMP/portico.toml"; PID[portico]=$BG_PID
        wait_tcp 127.0.0.1 $P_SMTP; wait_tcp 127.0.0.1 $P_IPERF; wait_tcp 127.0.0.1 $P_IDLE ;;
    haproxy) run_sut haproxy haproxy -db -f "$TMP/haproxy.cfg"; PID[haproxy]=$BG_PID
        wait_tcp 127.0.0.1 $H_SMTP; wait_tcp 127.0.0.1 $H_IPERF; wait_tcp 127.0.0.1 $H_IDLE ;;
    esac
    sleep 1.5 # first probe round
}
port_of() { # port_of PROXY TEST
    case $1-$2 in
    portico-smtp) echo $P_SMTP ;; portico-iperf) echo $P_IPERF ;; portico-idle) echo $P_IDLE ;;
    haproxy-smtp) echo $H_SMTP ;; haproxy-iperf) echo $H_IPERF ;; haproxy-idle) echo $H_IDLE ;;
    esac
}
PROXIES=(portico haproxy)
declare -A SMTP_RATE SMTP_CPU SMTP_SYS BULK_GBPS BULK_CPU BULK_SYS IDLE_KIB GEN_BUSY SUT_BUSY

# ------------------------------------------------------------------ 1 + 2
start_proxy portico
start_proxy haproxy

for r in $(seq "$RUNS"); do
    for px in "${PROXIES[@]}"; do
        port=$(port_of "$px" smtp)
        c0=$(cpu_ticks "${PID[$px]}"); k0=$(cpu_ticks "${PID[$px]}" sys); t0=$(date +%s.%N)
        g0=$(core_ticks "$GEN_CPU"); s0=$(core_ticks "$SUT_CPU")
        taskset -c "$GEN_CPU" smtp-source -s "$SMTP_SESSIONS" -l 100 -m "$SMTP_MSGS" -C 3 \
            -M bench.example.test -f from@example.test -t to@example.test \
            127.0.0.1:"$port" >"$TMP/smtp-source.log" 2>&1 || { cat "$TMP/smtp-source.log" >&2; die "smtp-source via $px failed"; }
        t1=$(date +%s.%N); c1=$(cpu_ticks "${PID[$px]}"); k1=$(cpu_ticks "${PID[$px]}" sys)
        g1=$(core_ticks "$GEN_CPU"); s1=$(core_ticks "$SUT_CPU")
        # Which core bounds the rate: the generators' (smtp-source + sinks) or the proxy's.
        gb=$(core_busy "$g0" "$g1"); sb=$(core_busy "$s0" "$s1")
        GEN_BUSY[$px]+="$gb "; SUT_BUSY[$px]+="$sb "
        rate=$(awk -v n="$SMTP_MSGS" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
        cpu=$(cpu_us_per_op $((c1 - c0)) "$SMTP_MSGS")
        SMTP_RATE[$px]+="$rate "; SMTP_CPU[$px]+="$cpu "; SMTP_SYS[$px]+="$(cpu_us_per_op $((k1 - k0)) "$SMTP_MSGS") "
        log "run $r smtp  $px: $rate sessions/s, $cpu us CPU/session, busy: generators' core $gb %, proxy's core $sb %"
    done
done

for r in $(seq "$RUNS"); do
    for px in "${PROXIES[@]}"; do
        port=$(port_of "$px" iperf)
        c0=$(cpu_ticks "${PID[$px]}"); k0=$(cpu_ticks "${PID[$px]}" sys)
        taskset -c "$GEN_CPU" iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -J >"$TMP/iperf.json" 2>"$TMP/iperf.err" \
            || { cat "$TMP/iperf.json" "$TMP/iperf.err" >&2; die "iperf3 via $px failed"; }
        c1=$(cpu_ticks "${PID[$px]}"); k1=$(cpu_ticks "${PID[$px]}" sys)
        read -r gbps bytes < <(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]["sum_received"]; print("%.3f %d" % (e["bits_per_second"]/1e9, e["bytes"]))' "$TMP/iperf.json")
        # CPU per GiB moved, in milliseconds.
        cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.1f", t * 1000 / hz / (b / 2^30) }')
        BULK_GBPS[$px]+="$gbps "; BULK_CPU[$px]+="$cpu "
        BULK_SYS[$px]+="$(awk -v t=$((k1 - k0)) -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.1f", t * 1000 / hz / (b / 2^30) }') "
        log "run $r bulk  $px: $gbps Gbit/s, $cpu ms CPU/GiB"
        sleep 1
    done
done
stop "${PID[portico]}"; stop "${PID[haproxy]}"

# ------------------------------------------------------------------ 3
# A fresh proxy per run: RSS before, IDLE_CONNS idle connections opened through it to
# the silent backend, RSS after; (after - before) / connections.
for r in $(seq "$RUNS"); do
    for px in "${PROXIES[@]}"; do
        start_proxy "$px"
        before=$(rss_kib "${PID[$px]}")
        rm -f "$TMP/ready"
        run_gen idle-clients python3 "$BENCH_DIR/helpers.py" idle-clients 127.0.0.1 "$(port_of "$px" idle)" "$IDLE_CONNS" "$TMP/ready" 120
        cpid=$BG_PID
        for i in $(seq 900); do [[ -e $TMP/ready ]] && break; kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
        [[ -e $TMP/ready ]] || { cat "$TMP/idle-clients.log" >&2; die "idle clients via $px did not connect"; }
        alive=$(cat "$TMP/ready")
        sleep 1
        after=$(rss_kib "${PID[$px]}")
        kib=$(awk -v a="$after" -v b="$before" -v n="$alive" 'BEGIN { printf "%.2f", (a - b) / n }')
        IDLE_KIB[$px]+="$kib "
        log "run $r idle  $px: $alive open, RSS $before -> $after KiB, $kib KiB/conn"
        ((alive == IDLE_CONNS)) || log "WARNING: only $alive of $IDLE_CONNS idle connections survived via $px"
        stop "$cpid"
        stop "${PID[$px]}"
    done
done

# ------------------------------------------------------------------ report
m() { median ${1}; }
sp=$(m "${SMTP_RATE[portico]}"); sh=$(m "${SMTP_RATE[haproxy]}")
cp=$(m "${SMTP_CPU[portico]}"); ch=$(m "${SMTP_CPU[haproxy]}")
bp=$(m "${BULK_GBPS[portico]}"); bh=$(m "${BULK_GBPS[haproxy]}")
gp=$(m "${BULK_CPU[portico]}"); gh=$(m "${BULK_CPU[haproxy]}")
ip=$(m "${IDLE_KIB[portico]}"); ih=$(m "${IDLE_KIB[haproxy]}")
echo
echo "### L4: Portico vs HAProxy $(haproxy -v | awk 'NR==1 {print $3}') (mode tcp)"
echo
echo "$(machine_line), SMTP_MSGS=$SMTP_MSGS x $SMTP_SESSIONS sessions, IDLE_CONNS=$IDLE_CONNS"
echo
echo "| measure (median of $RUNS) | Portico | HAProxy | Portico/HAProxy |"
echo "|---|---:|---:|---:|"
echo "| SMTP sessions/s (smtp-source -s $SMTP_SESSIONS, 100 B) | $(fmt "$sp") | $(fmt "$sh") | $(ratio "$sp" "$sh") |"
echo "| CPU µs per SMTP session (ratio: paired per run, range) | $(fmt "$cp" 1) | $(fmt "$ch" 1) | $(paired_ratio "${SMTP_CPU[portico]}" "${SMTP_CPU[haproxy]}") |"
echo "| of which kernel µs | $(fmt "$(m "${SMTP_SYS[portico]}")" 1) | $(fmt "$(m "${SMTP_SYS[haproxy]}")" 1) | |"
echo "| SMTP: generators' core (smtp-source + sinks) busy % | $(fmt "$(m "${GEN_BUSY[portico]}")") | $(fmt "$(m "${GEN_BUSY[haproxy]}")") | |"
echo "| SMTP: proxy's core busy % | $(fmt "$(m "${SUT_BUSY[portico]}")") | $(fmt "$(m "${SUT_BUSY[haproxy]}")") | |"
echo "| bulk Gbit/s (iperf3, ${DURATION}s) | $(fmt "$bp" 2) | $(fmt "$bh" 2) | $(ratio "$bp" "$bh") |"
echo "| CPU ms per GiB relayed (ratio: paired per run, range) | $(fmt "$gp" 1) | $(fmt "$gh" 1) | $(paired_ratio "${BULK_CPU[portico]}" "${BULK_CPU[haproxy]}") |"
echo "| of which kernel ms | $(fmt "$(m "${BULK_SYS[portico]}")" 1) | $(fmt "$(m "${BULK_SYS[haproxy]}")" 1) | |"
echo "| RSS KiB per idle proxied connection ($IDLE_CONNS open) | $(fmt "$ip" 2) | $(fmt "$ih" 2) | $(ratio "$ip" "$ih") |"
echo
echo "Per-run values: SMTP/s portico [${SMTP_RATE[portico]% }] haproxy [${SMTP_RATE[haproxy]% }]; Gbit/s portico [${BULK_GBPS[portico]% }] haproxy [${BULK_GBPS[haproxy]% }]; KiB/conn portico [${IDLE_KIB[portico]% }] haproxy [${IDLE_KIB[haproxy]% }]"
