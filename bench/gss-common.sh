# Shared by bench/dns.sh and bench/dnssec.sh (sourced after lib.sh): the zone, its
# site-selected names, the keepalive targets that keep both sites up, Portico's gss
# config for them, and the same names as a static zone file for the peers.

ZONE=gslb.example.test
NAMES=(smtp submission imap pop3 webmail mapi autodiscover mail)
KA_PORT=19053
DC1=127.0.0.11 DC2=127.0.0.12   # answers, and where each site's keepalive listener runs

# Keepalive targets that stay up (the "site" health), on the generator core.
declare -A KA_PID
start_ka() { run_gen "ka-$1" python3 "$BENCH_DIR/helpers.py" listener "$1" $KA_PORT; KA_PID[$1]=$BG_PID; wait_tcp "$1" $KA_PORT; }

# portico_conf FILE PORT [EXTRA]: the gss config for the names in NAMES, EXTRA (TOML)
# after the sites; GSS_TTL sets the answers' TTL (20).
portico_conf() {
    local n
    {
        cat <<EOC
[gss]
listen = "127.0.0.1:$2"
zone = "$ZONE"
ttl = ${GSS_TTL:-20}
nameservers = ["ns1.$ZONE"]
records = ["ns1 3600 A 127.0.0.53"]

[[gss.site]]
name = "dc1"
keepalives = [ { kind = "tcp", address = "$DC1:$KA_PORT" } ]
probe_defaults = { interval = "1s", timeout = "500ms", rise = 2, fall = 2 }

[[gss.site]]
name = "dc2"
keepalives = [ { kind = "tcp", address = "$DC2:$KA_PORT" } ]
probe_defaults = { interval = "1s", timeout = "500ms", rise = 2, fall = 2 }
EOC
        if [[ -n ${3:-} ]]; then printf '\n%s\n' "$3"; fi
        for n in "${NAMES[@]}"; do
            printf '\n[[gss.name]]\nname = "%s"\nsites = ["dc1", "dc2"]\nanswers = { dc1 = ["%s"], dc2 = ["%s"] }\n' "$n" $DC1 $DC2
        done
    } >"$1"
}

# static_zone FILE: the same names as static A records (the answer while dc1 is up).
static_zone() {
    {
        echo "\$ORIGIN $ZONE."
        echo "\$TTL 20"
        echo "@ 3600 IN SOA ns1.$ZONE. hostmaster.$ZONE. 1 3600 600 86400 30"
        echo "@ 3600 IN NS ns1.$ZONE."
        echo "ns1 3600 IN A 127.0.0.53"
        for n in "${NAMES[@]}"; do echo "$n 20 IN A $DC1"; done
    } >"$1"
}

# knot_conf DIR PORT [signed]: Knot serving DIR/$ZONE.zone on 127.0.0.1@PORT, one
# worker of each kind; with "signed" it signs the zone itself at load (ECDSA P-256
# KSK + ZSK) and answers from the signed zone in memory.
knot_conf() {
    local policy="" signing=""
    if [[ ${3:-} == signed ]]; then
        policy=$'policy:\n  - id: p256\n    algorithm: ecdsap256sha256\n    ksk-size: 256\n    zsk-size: 256\n    single-type-signing: off'
        signing=$'    dnssec-signing: on\n    dnssec-policy: p256'
    fi
    {
        cat <<EOC
server:
    rundir: "$1"
    listen: 127.0.0.1@$2
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$1"
EOC
        if [[ -n $policy ]]; then echo "$policy"; fi
        cat <<EOC
template:
  - id: default
    storage: "$1"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: $ZONE
    file: "$ZONE.zone"
EOC
        if [[ -n $signing ]]; then echo "$signing"; fi
    } >"$1/knot.conf"
    knotc -c "$1/knot.conf" conf-check >/dev/null || die "knot config invalid"
}

# queries_file FILE: one A query per site-selected name, for dnsperf.
queries_file() {
    : >"$1"
    for n in "${NAMES[@]}"; do echo "$n.$ZONE A" >>"$1"; done
}
