#!/usr/bin/env bash
# The fleet scenario (docs/fleet.md) on a fresh Debian machine, as root: four booted Debian hosts on
# a private network (an issuer with certbot, Pebble and Ansible; three mail nodes: Debian 13 with
# systemd, Debian 12 with systemd and with OpenRC), certificates issued once and rolled out by the
# mailstack.fleet collection over SSH. Ends with "N passed, N failed"; exit 0 only if none failed.
#   bash scripts/fleet-demo.sh [--bulk N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "Building the Debian roots (first time: a few minutes) ..."
bash tests/hosts/make-roots.sh
exec .venv/bin/python -m tests.hosts.fleet_demo "$@"
