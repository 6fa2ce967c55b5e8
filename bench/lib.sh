# Shared helpers for bench/*.sh (sourced, not run). Loopback only.
#
#   RUNS=N       runs per measurement, median reported (5)
#   DURATION=S   seconds per timed run (per script default)
#   PORTICO_BIN  use this binary instead of `cargo build --release` (e.g. a build of
#                another commit); the default builds the repository this script is in.
#   KEEP_TMP=1   keep the temp dir (configs, logs) for inspection

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
RUNS=${RUNS:-5}
# Every listener in these scripts uses a port below 32768, outside the ephemeral range
# (32768-60999), so a busy machine's client sockets cannot already hold it.
SUT_CPU=${SUT_CPU:-1}   # the system under test
GEN_CPU=${GEN_CPU:-0}   # load generators and backends
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d /tmp/portico-bench.XXXXXX)
BG_PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    # Children first (reverse start order), TERM then KILL; only PIDs we started.
    local i pid
    for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${BG_PIDS[i]}
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
    done
    sleep 0.5
    for pid in "${BG_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            # nginx/nsd children die with their master; a straggler gets KILL.
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    if [[ ${KEEP_TMP:-0} = 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# need CMD PACKAGE...: installs the Debian packages unless every CMD is present.
need() {
    local missing=() pkgs=() spec
    for spec in "$@"; do
        local cmd=${spec%%:*} pkg=${spec#*:}
        command -v "$cmd" >/dev/null 2>&1 || { missing+=("$cmd"); pkgs+=("$pkg"); }
    done
    ((${#pkgs[@]} == 0)) && return 0
    log "installing ${pkgs[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 && apt-get install -y -q "${pkgs[@]}" >&2
}

build_portico() {
    if [[ -n ${PORTICO_BIN:-} ]]; then
        PORTICO=$PORTICO_BIN
    else
        log "cargo build --release in $REPO"
        (cd "$REPO" && cargo build --release --quiet) >&2 || die "cargo build failed"
        local target=${CARGO_TARGET_DIR:-$REPO/target}
        PORTICO=$target/release/portico
    fi
    [[ -x $PORTICO ]] || die "no portico binary at $PORTICO"
    PORTICO_REV=${PORTICO_REV:-$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)}
    if [[ -z ${PORTICO_BIN:-} ]] && [[ -n $(cd "$REPO" && git status --porcelain -- lb gss shared src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        PORTICO_REV="$PORTICO_REV+dirty"
    fi
}

# bg NAME CMD...: starts CMD in the background (log in $TMP/NAME.log); sets BG_PID.
bg() {
    local name=$1; shift
    "$@" >"$TMP/$name.log" 2>&1 &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# stop PID: TERM, wait up to 5 s, KILL (for a process started with bg).
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_tcp HOST PORT [SECONDS]: until something accepts on HOST:PORT.
wait_tcp() {
    local host=$1 port=$2 t=${3:-20} i
    for i in $(seq $((t * 10))); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listening on $host:$port after ${t}s"
}

# descendants PID: PID and all its descendants.
descendants() {
    local p c
    for p in "$@"; do
        echo "$p"
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done
    done
}

# cpu_ticks PID [sys]: utime+stime (clock ticks) of PID and its descendants, all
# threads; with "sys", stime only (the kernel's share).
cpu_ticks() {
    local sum=0 p v f='$12 + $13'
    [[ ${2:-} == sys ]] && f='$13'
    for p in $(descendants "$1"); do
        # Fields after "pid (comm) ": utime is the 12th, stime the 13th.
        v=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk "{print $f}") || v=0
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# rss_kib PID: VmRSS of PID and its descendants, KiB.
rss_kib() {
    local sum=0 p v
    for p in $(descendants "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null) || v=0
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# core_ticks CPU: "busy total" clock ticks of one CPU since boot (from /proc/stat).
core_ticks() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
# core_busy "BUSY0 TOTAL0" "BUSY1 TOTAL1": percent of the interval that CPU was busy.
core_busy() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; if (d > 0) printf "%.0f", 100 * (y[1] - x[1]) / d; else print "nan" }'; }

# cpu_us_per_op TICKS OPS: microseconds of CPU per operation.
cpu_us_per_op() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "nan" }'; }

# median V...: the median (mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ratio A B: A/B to two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.2f", a / b }'; }

# paired_ratio "A1 A2 ..." "B1 B2 ...": the median of the per-run ratios Ai/Bi and their
# range, as "MEDIAN (MIN-MAX)". Each run measures the systems back to back, so a per-run
# ratio cancels the machine's slower drift better than a ratio of medians does.
paired_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); m = split(b, y, " "); k = 0
        for (i = 1; i <= n && i <= m; i++) if (y[i] + 0 > 0) r[++k] = x[i] / y[i]
        if (k == 0) { print "n/a"; exit }
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        med = (k % 2) ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2
        printf "%.2f (%.2f-%.2f)", med, r[1], r[k] }'
}

# fmt V [DECIMALS]: a number with fixed decimals.
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf "%.*f", d, v }'; }

# run_sut NAME CMD...: starts CMD pinned to the SUT core.
run_sut() { local n=$1; shift; bg "$n" taskset -c "$SUT_CPU" "$@"; }
# run_gen NAME CMD...: starts CMD pinned to the generator core.
run_gen() { local n=$1; shift; bg "$n" taskset -c "$GEN_CPU" "$@"; }

machine_line() {
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), RUNS=$RUNS DURATION=$DURATION, Portico $PORTICO_REV"
}

# Raises the open-file limit to 65536 (or the hard limit, when it cannot be raised:
# containers without CAP_SYS_RESOURCE); sets NOFILE to what is in force.
raise_nofile() {
    ulimit -Hn 65536 2>/dev/null || true
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    NOFILE=$(ulimit -n)
    ((NOFILE >= 65536)) || log "open-file limit is $NOFILE (hard limit; could not raise it to 65536)"
}

# nginx_common DIR: the top of every nginx config the scripts write: one worker in
# the foreground, its pid and error log under DIR.
nginx_common() { # nginx_common DIR
    cat <<EOF
daemon off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; }
EOF
}

# nginx_backend_conf DIR PORT1 PORT2: the backend nginx that http.sh and cores.sh proxy
# to (one worker, two listeners = two backends, keep-alive, a 23-byte 200 on /, "ok"
# on /health), its pid, log and temp files under DIR.
nginx_backend_conf() {
    nginx_common "$1"
    cat <<EOF
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        listen 127.0.0.1:$3 backlog=4096;
        location / { default_type text/plain; return 200 "hello from the backend\n"; }
        location = /health { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
}
