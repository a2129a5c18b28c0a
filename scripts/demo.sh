#!/usr/bin/env bash
# The main job on loopback: Pebble + Postfix + Dovecot on free high ports with private config dirs,
# real certificates from certbot for three test domains, deployed with -i mailstack, renewed, and
# a table of which certificate each name gets on each mail port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tests.lab.demo "$@"
