#!/usr/bin/env bash
# L7 benchmark: Portico vs HAProxy vs NGINX as reverse proxies in front of the same
# nginx backends (one nginx, worker_processes 1, two listeners = two backends,
# keep-alive, a 23-byte static response).
#   1. wrk, HTTP/1.1 keep-alive, 64 connections         -> req/s, p99
#   2. h2load, HTTPS HTTP/2, 16 connections x 10 streams -> req/s
#   3. new TLS handshakes/s: h2load -n N -c N -m 1 (one request per fresh connection)
# System under test on CPU 1 (one worker/thread), everything else on CPU 0. For wrk it
# also prints both cores' busy % (which side bounded the rate) and the kernel share.
# Usage: bash bench/http.sh   (RUNS=5 DURATION=8 HS_CONNS=1000)
#
# FIXED=1 measures at a fixed offered load instead, below every proxy's saturation, what
# each proxy *spends*: CPU µs per operation (user and kernel, from /proc/PID/stat over the
# generator's run), the rate achieved, and p50/p99 latency from h2load's per-request log:
#   1. HTTP/1.1 keep-alive, H1_CONNS (24) connections, H1_RATE (12,000) req/s in all
#   2. HTTPS HTTP/2, 16 connections x 10 streams, H2_RATE (8,000) req/s in all
#   3. new TLS handshakes, HS_CONNS connections opened HS_PER_SEC (200) a second, one
#      request each
# With FIXED=1 the certificate is ECDSA P-256 (KEY=rsa for RSA 2048). HS_BURST=1 opens
# each second's HS_PER_SEC connections at once instead (a reconnect storm, as after a
# site fails over), and the table adds the mean time to first byte (TCP connect, TLS
# handshake and the request). FIXED_KINDS="hs" runs only some of h1, h2, hs.
# Usage: FIXED=1 bash bench/http.sh   (RUNS=5 DURATION=8 H1_RATE=12000 H2_RATE=8000
#                                      HS_PER_SEC=200 HS_CONNS=1000)
# PORTICO_BASE=BINARY adds a second Portico build (say, one from before a change),
# measured in every round right after the first, and a "Portico / base" table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-8}
HS_CONNS=${HS_CONNS:-1000}
WRK_CONNS=${WRK_CONNS:-64}

need haproxy:haproxy nginx:nginx-light wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl taskset:util-linux python3:python3
build_portico
raise_nofile

FIXED=${FIXED:-0}
if ((FIXED)); then KEY=${KEY:-ec}; else KEY=${KEY:-rsa}; fi
case $KEY in
    rsa) KEYGEN=(-newkey rsa:2048) ;;
    ec) KEYGEN=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) die "KEY=$KEY: rsa or ec" ;;
esac

# ------------------------------------------------------------------ TLS material
# Self-signed (RSA 2048 is what `openssl req` makes by default), the same for all three.
openssl req -x509 "${KEYGEN[@]}" -nodes -days 2 -subj "/CN=bench.example.test" \
    -addext "subjectAltName=DNS:bench.example.test,IP:127.0.0.1" \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

# ------------------------------------------------------------------ backends
B1=18080 B2=18081
mkdir -p "$TMP/nginx-backend" "$TMP/nginx-proxy"
nginx_backend_conf "$TMP/nginx-backend" $B1 $B2 >"$TMP/nginx-backend.conf"
nginx -t -q -p "$TMP/nginx-backend" -e stderr -c "$TMP/nginx-backend.conf" || die "backend nginx config invalid"
run_gen nginx-backend nginx -p "$TMP/nginx-backend" -e stderr -c "$TMP/nginx-backend.conf"
wait_tcp 127.0.0.1 $B1; wait_tcp 127.0.0.1 $B2

# ------------------------------------------------------------------ proxies
# All three: two backends round robin, upstream keep-alive, X-Forwarded-For/-Proto
# added (Portico always adds them), one worker/thread, listen backlog >= 1024.
P_HTTP=28080 P_HTTPS=28443
cat >"$TMP/portico.toml" <<EOF
[[vip]]
name = "web"
listen = "127.0.0.1:$P_HTTP"
mode = "http"
backends = [
  { name = "b1", address = "127.0.0.1:$B1" },
  { name = "b2", address = "127.0.0.1:$B2" },
]
probe = { kind = "http", path = "/health", interval = "5s", timeout = "1s" }

[[vip]]
name = "webs"
listen = "127.0.0.1:$P_HTTPS"
mode = "https"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
backends = [
  { name = "b1", address = "127.0.0.1:$B1" },
  { name = "b2", address = "127.0.0.1:$B2" },
]
probe = { kind = "http", path = "/health", interval = "5s", timeout = "1s" }
EOF

BASE_HTTP=29080 BASE_HTTPS=29443
if [[ -n ${PORTICO_BASE:-} ]]; then
    [[ -x $PORTICO_BASE ]] || die "PORTICO_BASE=$PORTICO_BASE is not an executable"
    sed -e "s/:$P_HTTP\"/:$BASE_HTTP\"/; s/:$P_HTTPS\"/:$BASE_HTTPS\"/" "$TMP/portico.toml" >"$TMP/portico-base.toml"
fi

H_HTTP=23080 H_HTTPS=23443
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $(((NOFILE - 200) / 2))
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    option http-keep-alive
    option forwardfor
frontend web
    bind 127.0.0.1:$H_HTTP backlog 4096
    bind 127.0.0.1:$H_HTTPS backlog 4096 ssl crt $TMP/haproxy.pem alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    default_backend be
backend be
    balance roundrobin
    http-reuse always
    option httpchk GET /health
    server b1 127.0.0.1:$B1 check inter 5s
    server b2 127.0.0.1:$B2 check inter 5s
EOF
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy config invalid"

N_HTTP=24080 N_HTTPS=24443
{
    nginx_common "$TMP/nginx-proxy"
    cat <<EOF
http {
    access_log off;
    client_body_temp_path $TMP/nginx-proxy/body;
    proxy_temp_path $TMP/nginx-proxy/proxy;
    fastcgi_temp_path $TMP/nginx-proxy/fastcgi;
    uwsgi_temp_path $TMP/nginx-proxy/uwsgi;
    scgi_temp_path $TMP/nginx-proxy/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream be {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$N_HTTP backlog=4096;
        listen 127.0.0.1:$N_HTTPS ssl http2 backlog=4096;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
} >"$TMP/nginx-proxy.conf"
nginx -t -q -p "$TMP/nginx-proxy" -e stderr -c "$TMP/nginx-proxy.conf" || die "proxy nginx config invalid"

declare -A PID HTTP_PORT HTTPS_PORT
HTTP_PORT=([portico]=$P_HTTP [haproxy]=$H_HTTP [nginx]=$N_HTTP)
HTTPS_PORT=([portico]=$P_HTTPS [haproxy]=$H_HTTPS [nginx]=$N_HTTPS)
run_sut portico "$PORTICO" run --config "$TMP/portico.toml"; PID[portico]=$BG_PID
run_sut haproxy haproxy -db -f "$TMP/haproxy.cfg"; PID[haproxy]=$BG_PID
run_sut nginx-proxy nginx -p "$TMP/nginx-proxy" -e stderr -c "$TMP/nginx-proxy.conf"; PID[nginx]=$BG_PID
PROXIES=(portico haproxy nginx)
if [[ -n ${PORTICO_BASE:-} ]]; then
    HTTP_PORT[base]=$BASE_HTTP; HTTPS_PORT[base]=$BASE_HTTPS
    run_sut portico-base "$PORTICO_BASE" run --config "$TMP/portico-base.toml"; PID[base]=$BG_PID
    PROXIES=(portico base haproxy nginx)
fi
for px in "${PROXIES[@]}"; do
    wait_tcp 127.0.0.1 "${HTTP_PORT[$px]}"; wait_tcp 127.0.0.1 "${HTTPS_PORT[$px]}"
done
# Every proxy must answer 200 through both listeners before anything is measured.
for i in $(seq 100); do
    ok=1
    for px in "${PROXIES[@]}"; do
        curl -sfo /dev/null "http://127.0.0.1:${HTTP_PORT[$px]}/" || ok=0
        curl -skfo /dev/null --http2 "https://127.0.0.1:${HTTPS_PORT[$px]}/" || ok=0
    done
    ((ok)) && break
    sleep 0.2
done
((ok)) || die "a proxy does not answer 200"

# to_ms VALUE_WITH_UNIT (wrk, h2load: 812.00us, 1.23ms, 1.02s)
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0; else if (v ~ /s$/) printf "%.3f", v * 1000; else print "nan" }'; }

# ------------------------------------------------------------------ fixed offered load
if ((FIXED)); then
    H1_RATE=${H1_RATE:-12000} H1_CONNS=${H1_CONNS:-24} H2_RATE=${H2_RATE:-8000}
    HS_PER_SEC=${HS_PER_SEC:-200} HS_BURST=${HS_BURST:-0} FIXED_KINDS=${FIXED_KINDS:-h1 h2 hs}
    # pct LOG P: the P-th percentile of h2load's per-request times (µs, third column), in ms.
    pct() { sort -n -k3,3 "$1" | awk -v p="$2" '{ a[NR] = $3 } END { if (NR == 0) { print "nan"; exit }
        i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.3f", a[i] / 1000 }'; }
    # measure KIND PX H2LOAD-ARGS...: one fixed-rate run through PX, recorded under KIND.
    declare -A F_RATE F_CPU F_SYS F_P50 F_P99 F_TTFB
    measure() {
        local kind=$1 px=$2 c0 c1 k0 k1 ok rate failed
        shift 2
        rm -f "$TMP/lat.log"
        c0=$(cpu_ticks "${PID[$px]}"); k0=$(cpu_ticks "${PID[$px]}" sys)
        taskset -c "$GEN_CPU" h2load "$@" --log-file="$TMP/lat.log" >"$TMP/h2load.out" 2>&1 || true
        c1=$(cpu_ticks "${PID[$px]}"); k1=$(cpu_ticks "${PID[$px]}" sys)
        ok=$(awk '/^requests:/ {print $8}' "$TMP/h2load.out")
        failed=$(awk '/^requests:/ {print $10 + $12 + $14}' "$TMP/h2load.out")
        ((failed == 0)) || log "WARNING ($px, $kind): $(grep '^requests:' "$TMP/h2load.out")"
        [[ ${ok:-0} -gt 0 ]] || { cat "$TMP/h2load.out" >&2; die "h2load through $px ($kind) completed nothing"; }
        rate=$(awk '/^finished in/ {print $4}' "$TMP/h2load.out")
        F_RATE[$kind-$px]+="$rate "
        F_CPU[$kind-$px]+="$(cpu_us_per_op $((c1 - c0)) "$ok") "
        F_SYS[$kind-$px]+="$(cpu_us_per_op $((k1 - k0)) "$ok") "
        F_P50[$kind-$px]+="$(pct "$TMP/lat.log" 50) "
        F_P99[$kind-$px]+="$(pct "$TMP/lat.log" 99) "
        # h2load's summary: "time to 1st byte:  MIN MAX MEAN SD ...", per connection.
        F_TTFB[$kind-$px]+="$(to_ms "$(awk '/^time to 1st byte:/ {print $7}' "$TMP/h2load.out")") "
        log "run $r $kind $px: $rate/s, $(cpu_us_per_op $((c1 - c0)) "$ok") us CPU/op ($(cpu_us_per_op $((k1 - k0)) "$ok") kernel), p50 $(pct "$TMP/lat.log" 50) ms, p99 $(pct "$TMP/lat.log" 99) ms"
    }
    for r in $(seq "$RUNS"); do
        for px in "${PROXIES[@]}"; do
            [[ " $FIXED_KINDS " == *" h1 "* ]] && measure h1 "$px" --h1 -D "$DURATION" -c "$H1_CONNS" --rps $((H1_RATE / H1_CONNS)) "http://127.0.0.1:${HTTP_PORT[$px]}/"
            [[ " $FIXED_KINDS " == *" h2 "* ]] && measure h2 "$px" -D "$DURATION" -c 16 -m 10 --rps $((H2_RATE / 16)) "https://127.0.0.1:${HTTPS_PORT[$px]}/"
            if [[ " $FIXED_KINDS " == *" hs "* ]]; then
                if ((HS_BURST)); then
                    measure hs "$px" -n "$HS_CONNS" -c "$HS_CONNS" -m 1 -r "$HS_PER_SEC" --rate-period 1s "https://127.0.0.1:${HTTPS_PORT[$px]}/"
                else
                    # Connections opened evenly (HS_PER_SEC / 100 every 10 ms), not in a burst a second.
                    measure hs "$px" -n "$HS_CONNS" -c "$HS_CONNS" -m 1 -r $(((HS_PER_SEC + 99) / 100)) --rate-period 10ms "https://127.0.0.1:${HTTPS_PORT[$px]}/"
                fi
            fi
        done
    done
    echo
    echo "### HTTP at a fixed offered load: Portico vs HAProxy $(haproxy -v | awk 'NR==1 {print $3}') vs NGINX $(nginx -v 2>&1 | cut -d/ -f2)"
    echo
    echo "$(machine_line), KEY=$KEY, H1_RATE=$H1_RATE (H1_CONNS=$H1_CONNS), H2_RATE=$H2_RATE, HS_PER_SEC=$HS_PER_SEC (HS_CONNS=$HS_CONNS, HS_BURST=$HS_BURST)"
    echo
    echo "| work (median of $RUNS) | system | rate achieved /s | CPU µs per op | of which kernel | p50 ms | p99 ms | mean time to 1st byte ms | CPU ÷ HAProxy, paired per run (range) | CPU ÷ NGINX |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for kind in $FIXED_KINDS; do
        case $kind in
            h1) label="HTTP/1.1 keep-alive request" ;;
            h2) label="HTTP/2 over TLS request" ;;
            hs) label="new TLS connection + 1 request" ;;
        esac
        for px in "${PROXIES[@]}"; do
            echo "| $label | $px | $(fmt "$(median ${F_RATE[$kind-$px]})" 0) | $(fmt "$(median ${F_CPU[$kind-$px]})" 1) | $(fmt "$(median ${F_SYS[$kind-$px]})" 1) | $(fmt "$(median ${F_P50[$kind-$px]})" 2) | $(fmt "$(median ${F_P99[$kind-$px]})" 2) | $(fmt "$(median ${F_TTFB[$kind-$px]})" 2) | $(paired_ratio "${F_CPU[$kind-$px]}" "${F_CPU[$kind-haproxy]}") | $(paired_ratio "${F_CPU[$kind-$px]}" "${F_CPU[$kind-nginx]}") |"
        done
    done
    echo
    for kind in $FIXED_KINDS; do
        for px in "${PROXIES[@]}"; do
            echo "Per-run $kind $px: CPU µs/op [${F_CPU[$kind-$px]% }] rate [${F_RATE[$kind-$px]% }] p50 [${F_P50[$kind-$px]% }] p99 [${F_P99[$kind-$px]% }] ttfb [${F_TTFB[$kind-$px]% }]"
        done
    done
    exit 0
fi

declare -A WRK_RPS WRK_P99 WRK_CPU WRK_SYS WRK_GEN WRK_SUT H2_RPS H2_CPU HS_RATE HS_CPU
for r in $(seq "$RUNS"); do
    for px in "${PROXIES[@]}"; do
        # 1. wrk: HTTP/1.1 keep-alive
        c0=$(cpu_ticks "${PID[$px]}"); k0=$(cpu_ticks "${PID[$px]}" sys)
        g0=$(core_ticks "$GEN_CPU"); s0=$(core_ticks "$SUT_CPU")
        taskset -c "$GEN_CPU" wrk -t1 -c"$WRK_CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${HTTP_PORT[$px]}/" >"$TMP/wrk.out" 2>&1
        g1=$(core_ticks "$GEN_CPU"); s1=$(core_ticks "$SUT_CPU")
        c1=$(cpu_ticks "${PID[$px]}"); k1=$(cpu_ticks "${PID[$px]}" sys)
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk.out")
        total=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
        p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$TMP/wrk.out")")
        if grep -q 'Non-2xx\|Socket errors' "$TMP/wrk.out"; then log "WARNING ($px): $(grep 'Non-2xx\|Socket errors' "$TMP/wrk.out")"; fi
        WRK_RPS[$px]+="$rps "; WRK_P99[$px]+="$p99 "; WRK_CPU[$px]+="$(cpu_us_per_op $((c1 - c0)) "$total") "
        WRK_SYS[$px]+="$(cpu_us_per_op $((k1 - k0)) "$total") "
        WRK_GEN[$px]+="$(core_busy "$g0" "$g1") "; WRK_SUT[$px]+="$(core_busy "$s0" "$s1") "
        log "run $r wrk    $px: $rps req/s, p99 $p99 ms, $(cpu_us_per_op $((c1 - c0)) "$total") us CPU/req ($(cpu_us_per_op $((k1 - k0)) "$total") kernel), CPU $GEN_CPU $(core_busy "$g0" "$g1")% / CPU $SUT_CPU $(core_busy "$s0" "$s1")% busy"

        # 2. h2load: HTTPS, HTTP/2, 16 connections x 10 streams
        c0=$(cpu_ticks "${PID[$px]}")
        taskset -c "$GEN_CPU" h2load -D "$DURATION" -c 16 -m 10 "https://127.0.0.1:${HTTPS_PORT[$px]}/" >"$TMP/h2load.out" 2>&1 || true
        c1=$(cpu_ticks "${PID[$px]}")
        grep -qi 'application protocol: h2' "$TMP/h2load.out" || { cat "$TMP/h2load.out" >&2; die "h2load via $px did not negotiate h2"; }
        rps=$(awk '/^finished in/ {print $4}' "$TMP/h2load.out")
        done_=$(awk '/^requests:/ {print $8}' "$TMP/h2load.out")
        failed=$(awk '/^requests:/ {print $10 + $12 + $14}' "$TMP/h2load.out")
        ((failed == 0)) || log "WARNING ($px): h2load: $(grep '^requests:' "$TMP/h2load.out")"
        H2_RPS[$px]+="$rps "; H2_CPU[$px]+="$(cpu_us_per_op $((c1 - c0)) "$done_") "
        log "run $r h2load $px: $rps req/s, $(cpu_us_per_op $((c1 - c0)) "$done_") us CPU/req"

        # 3. new TLS handshakes: HS_CONNS fresh connections, one request each
        c0=$(cpu_ticks "${PID[$px]}")
        taskset -c "$GEN_CPU" h2load -n "$HS_CONNS" -c "$HS_CONNS" -m 1 "https://127.0.0.1:${HTTPS_PORT[$px]}/" >"$TMP/hs.out" 2>&1 || true
        c1=$(cpu_ticks "${PID[$px]}")
        rate=$(awk '/^finished in/ {print $4}' "$TMP/hs.out")
        ok=$(awk '/^requests:/ {print $8}' "$TMP/hs.out")
        [[ $ok == "$HS_CONNS" ]] || log "WARNING ($px): handshakes: $(grep '^requests:' "$TMP/hs.out")"
        HS_RATE[$px]+="$rate "; HS_CPU[$px]+="$(cpu_us_per_op $((c1 - c0)) "$ok") "
        log "run $r tls    $px: $rate handshakes/s, $(cpu_us_per_op $((c1 - c0)) "$ok") us CPU/handshake"
    done
done

# ------------------------------------------------------------------ report
declare -A M
for px in "${PROXIES[@]}"; do
    for k in WRK_RPS WRK_P99 WRK_CPU WRK_SYS WRK_GEN WRK_SUT H2_RPS H2_CPU HS_RATE HS_CPU; do
        declare -n arr=$k
        M[$k-$px]=$(median ${arr[$px]})
        unset -n arr
    done
done
row() { # row LABEL KEY DECIMALS
    local k=$2 d=$3
    echo "| $1 | $(fmt "${M[$k-portico]}" "$d") | $(fmt "${M[$k-haproxy]}" "$d") | $(fmt "${M[$k-nginx]}" "$d") | $(ratio "${M[$k-portico]}" "${M[$k-haproxy]}") | $(ratio "${M[$k-portico]}" "${M[$k-nginx]}") |"
}
echo
echo "### HTTP: Portico vs HAProxy $(haproxy -v | awk 'NR==1 {print $3}') vs NGINX $(nginx -v 2>&1 | cut -d/ -f2)"
echo
echo "$(machine_line), WRK_CONNS=$WRK_CONNS, HS_CONNS=$HS_CONNS"
echo
echo "| measure (median of $RUNS) | Portico | HAProxy | NGINX | Portico/HAProxy | Portico/NGINX |"
echo "|---|---:|---:|---:|---:|---:|"
row "HTTP/1.1 keep-alive req/s (wrk -c$WRK_CONNS)" WRK_RPS 0
row "p99 latency ms (wrk)" WRK_P99 2
row "CPU µs per request (wrk)" WRK_CPU 1
row "of which kernel µs per request (wrk)" WRK_SYS 1
row "CPU $GEN_CPU busy %: wrk + backends (wrk)" WRK_GEN 0
row "CPU $SUT_CPU busy %: the proxy (wrk)" WRK_SUT 0
row "HTTPS HTTP/2 req/s (h2load -c16 -m10)" H2_RPS 0
row "CPU µs per request (h2load)" H2_CPU 1
row "new TLS handshakes/s (h2load -n$HS_CONNS -c$HS_CONNS -m1)" HS_RATE 0
row "CPU µs per handshake + request" HS_CPU 0
echo
echo "Per-run ratios (median, range; each run measures the three back to back):"
echo
echo "| measure | Portico/HAProxy | Portico/NGINX |"
echo "|---|---:|---:|"
for k in WRK_RPS H2_RPS HS_RATE; do
    declare -n arr=$k
    echo "| $k | $(paired_ratio "${arr[portico]}" "${arr[haproxy]}") | $(paired_ratio "${arr[portico]}" "${arr[nginx]}") |"
    unset -n arr
done
echo
for k in WRK_RPS H2_RPS HS_RATE; do
    declare -n arr=$k
    echo "Per-run $k: portico [${arr[portico]% }] haproxy [${arr[haproxy]% }] nginx [${arr[nginx]% }]"
    unset -n arr
done

if [[ -n ${PORTICO_BASE:-} ]]; then
    echo
    echo "### Portico ($PORTICO) vs the base build ($PORTICO_BASE)"
    echo
    echo "| measure (median of $RUNS) | Portico | base | Portico/base | Portico/HAProxy | base/HAProxy |"
    echo "|---|---:|---:|---:|---:|---:|"
    for k in WRK_RPS WRK_CPU H2_RPS H2_CPU HS_RATE HS_CPU; do
        echo "| $k | $(fmt "${M[$k-portico]}" 1) | $(fmt "${M[$k-base]}" 1) | $(ratio "${M[$k-portico]}" "${M[$k-base]}") | $(ratio "${M[$k-portico]}" "${M[$k-haproxy]}") | $(ratio "${M[$k-base]}" "${M[$k-haproxy]}") |"
    done
    echo
    for k in WRK_RPS H2_RPS HS_RATE; do
        declare -n arr=$k
        echo "Per-run $k: portico [${arr[portico]% }] base [${arr[base]% }]; paired Portico/base $(paired_ratio "${arr[portico]}" "${arr[base]}")"
        unset -n arr
    done
fi
