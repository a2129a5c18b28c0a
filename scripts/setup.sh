#!/usr/bin/env bash
# Install what the demo and the tests need on a Debian 12 machine, as root: the Debian packages
# (Postfix, Dovecot, Pebble, Debian's own certbot 2.1) and a virtualenv (.venv) holding the newest
# certbot from PyPI, this package and the test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages and runs mail daemons on 127.0.0.1)" >&2
    exit 2
fi

packages=(postfix postfix-lmdb postfix-cdb dovecot-core dovecot-imapd dovecot-pop3d pebble
          certbot python3-certbot python3-pytest openssl ca-certificates
          systemd-container debootstrap man-db iproute2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Postfix without a system configuration: the demo and tests run private instances only.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q --upgrade certbot
.venv/bin/python -m pip install -q -e . -r requirements-test.txt
