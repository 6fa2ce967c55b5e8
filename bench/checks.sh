#!/usr/bin/env bash
# Health-check cost (issue 15): CPU of the process while it probes N backends every
# second and serves nothing else, Portico vs HAProxy (`check inter 1s`; `option
# smtpchk` for SMTP, `option httpchk` + `check-ssl verify none` for HTTPS),
# interleaved round by round. Backends are distinct loopback addresses (127.1.x.y) on
# one port, served by one listener per kind on the generator core: a Python
# accept-and-close listener for TCP checks, Postfix's smtp-sink for SMTP, nginx (one
# worker, TLS 1.3, ECDSA P-256, session tickets on as by default) answering 200 on
# /health for HTTPS. Both probers may resume TLS sessions (rustls and HAProxy keep
# them by default), so an HTTPS check is mostly a resumed handshake + one request.
# System under test on CPU 1. Reported: % of a core and µs of CPU per check (user +
# kernel, from /proc over the window), and RSS.
# PORTICO_BASE=BINARY measures a second Portico build (one from before a change) in
# the same rounds, with a Portico/base column.
# Usage: bash bench/checks.sh   (RUNS=5 DURATION=20 BACKENDS=1000 KINDS="tcp smtp https")
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-20}
BACKENDS=${BACKENDS:-1000}
KINDS=${KINDS:-tcp smtp https}
WARMUP=${WARMUP:-4}

need haproxy:haproxy smtp-sink:postfix taskset:util-linux python3:python3 nginx:nginx-light openssl:openssl
build_portico
raise_nofile

TCP_PORT=22001 SMTP_PORT=22025 HTTPS_PORT=22443
run_gen tcp-target python3 "$BENCH_DIR/helpers.py" listener 0.0.0.0 $TCP_PORT
run_gen smtp-target smtp-sink -u nobody 0.0.0.0:$SMTP_PORT 4096
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=backend.example.test -keyout "$TMP/backend.key" -out "$TMP/backend.crt" 2>/dev/null
mkdir -p "$TMP/nginx"
{
    nginx_common "$TMP/nginx"
    cat <<EOF
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    server {
        listen 0.0.0.0:$HTTPS_PORT ssl backlog=4096;
        ssl_certificate $TMP/backend.crt;
        ssl_certificate_key $TMP/backend.key;
        ssl_protocols TLSv1.3;
        location = /health { return 200 "ok\n"; }
    }
}
EOF
} >"$TMP/nginx.conf"
run_gen https-target nginx -c "$TMP/nginx.conf" -p "$TMP/nginx"
wait_tcp 127.0.0.1 $TCP_PORT
wait_tcp 127.0.0.1 $SMTP_PORT
wait_tcp 127.0.0.1 $HTTPS_PORT

addr() { echo "127.1.$(($1 / 250)).$(($1 % 250 + 1))"; }

portico_conf() { # portico_conf KIND PORT FILE
    {
        printf '[[vip]]\nname = "checked"\nlisten = "127.0.0.1:23%03d"\nbackends = [\n' $((RANDOM % 1000))
        for i in $(seq 0 $((BACKENDS - 1))); do
            printf '  { name = "b%d", address = "%s:%d" },\n' "$i" "$(addr "$i")" "$2"
        done
        case $1 in
        https) printf ']\nprobe = { kind = "http", tls = true, tls_verify = false, path = "/health", expect_status = 200, interval = "1s", timeout = "900ms", rise = 2, fall = 3 }\n' ;;
        *) printf ']\nprobe = { kind = "%s", interval = "1s", timeout = "900ms", rise = 2, fall = 3 }\n' "$1" ;;
        esac
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
        local opts=""
        case $1 in
        smtp) echo "    option smtpchk EHLO portico-bench.example.test" ;;
        https)
            echo "    option httpchk GET /health"
            echo "    http-check expect status 200"
            opts=" check-ssl verify none"
            ;;
        esac
        for i in $(seq 0 $((BACKENDS - 1))); do
            echo "    server b$i $(addr "$i"):$2$opts"
        done
    } >"$3"
}

SUTS="portico haproxy"
if [[ -n ${PORTICO_BASE:-} ]]; then
    [[ -x $PORTICO_BASE ]] || die "PORTICO_BASE=$PORTICO_BASE is not an executable"
    SUTS="portico base haproxy"
fi
declare -A CPU US RSS
for kind in $KINDS; do
    case $kind in
    tcp) port=$TCP_PORT ;;
    smtp) port=$SMTP_PORT ;;
    https) port=$HTTPS_PORT ;;
    *) die "unknown check kind $kind (tcp, smtp, https)" ;;
    esac
    portico_conf "$kind" $port "$TMP/portico-$kind.toml"
    haproxy_conf "$kind" $port "$TMP/haproxy-$kind.cfg"
    haproxy -c -f "$TMP/haproxy-$kind.cfg" >/dev/null || die "haproxy config invalid"
    "$PORTICO" check --config "$TMP/portico-$kind.toml" >/dev/null || die "portico config invalid"
done

for r in $(seq "$RUNS"); do
    for kind in $KINDS; do
        for sut in $SUTS; do
            case $sut in
            portico) run_sut "portico-$kind" "$PORTICO" run --config "$TMP/portico-$kind.toml" ;;
            base) run_sut "base-$kind" "$PORTICO_BASE" run --config "$TMP/portico-$kind.toml" ;;
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
if [[ -n ${PORTICO_BASE:-} ]]; then
    echo
    echo "Portico ($PORTICO_REV) vs the base build ($PORTICO_BASE), CPU per check:"
    echo
    echo "| check | Portico µs/check | base µs/check (range) | Portico ÷ base |"
    echo "|---|---:|---:|---:|"
    for kind in $KINDS; do
        p=$(median ${US[portico-$kind]}) b=$(median ${US[base-$kind]})
        echo "| $kind | $p | $b ($(range "${US[base-$kind]}")) | $(ratio "$p" "$b") |"
    done
fi
