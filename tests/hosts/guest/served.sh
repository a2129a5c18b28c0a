#!/bin/sh
# Inside a booted test host: the SHA-256 fingerprint of the leaf certificate a mail port serves.
#   served.sh PORT NAME|- [ecdsa|rsa]    (NAME "-": no SNI; a key type: a client accepting only it)
port=$1 name=$2 only=${3:-}
case "$port" in
    25|587) starttls="-starttls smtp" ;;
    143) starttls="-starttls imap" ;;
    110) starttls="-starttls pop3" ;;
    *) starttls="" ;;
esac
sni="-noservername"
[ "$name" = - ] || sni="-servername $name"
sigalgs=""
[ "$only" = ecdsa ] && sigalgs="-sigalgs ECDSA+SHA256:ECDSA+SHA384 -tls1_2"
[ "$only" = rsa ] && sigalgs="-sigalgs RSA-PSS+SHA256:RSA+SHA256 -tls1_2"
# shellcheck disable=SC2086
echo QUIT | timeout 20 openssl s_client -connect "127.0.0.1:$port" $starttls $sni $sigalgs 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//'
