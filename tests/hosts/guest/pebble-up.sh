#!/bin/sh
# Inside a booted test host: start Debian's pebble on 127.0.0.1:14000 (its own network namespace
# holds nothing else) with a listener certificate the system trusts, so certbot and the
# distribution's certbot.service reach it without extra options. Challenges always pass.
set -eu
dir=/var/lib/pebble-test
mkdir -p "$dir"
cd "$dir"
if [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=pebble-test-ca \
        -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout tls.key -out tls.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile ext.cnf \
        -out tls.pem 2>/dev/null
    cp ca.pem /usr/local/share/ca-certificates/pebble-test-ca.crt
    update-ca-certificates >/dev/null 2>&1
    cat >config.json <<JSON
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
 "certificate": "$dir/tls.pem", "privateKey": "$dir/tls.key", "httpPort": 5002, "tlsPort": 5001}}
JSON
fi
PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    setsid pebble -config config.json >pebble.log 2>&1 </dev/null &
for _ in $(seq 100); do
    if openssl s_client -connect 127.0.0.1:14000 </dev/null >/dev/null 2>&1; then exit 0; fi
    sleep 0.1
done
echo "pebble did not start:" >&2
cat pebble.log >&2
exit 1
