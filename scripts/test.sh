#!/usr/bin/env bash
# Lint, type-check and run every test: unit tests, end-to-end tests against real Pebble, certbot
# (newest from PyPI and Debian's 2.1), Postfix and Dovecot on 127.0.0.1, and the real-host suite on
# booted Debian 12 and 13 systems.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# While the checks below run: the real-host suite's Debian roots (tests/hosts), and the Debian
# package for each release, built in a clean root and checked by lintian (scripts/build-deb.sh).
bash tests/hosts/make-roots.sh >/tmp/mailstack-make-roots.log 2>&1 &
roots=$!
{ bash scripts/build-deb.sh bookworm && bash scripts/build-deb.sh trixie; } >/tmp/mailstack-build-deb.log 2>&1 &
debs=$!
.venv/bin/ruff check mailstack_installer tests scripts ansible
.venv/bin/ruff format --check mailstack_installer ansible
.venv/bin/mypy mailstack_installer
# The sdist and wheel as shipped: contents, a clean install, plugin discovery (scripts/check-build.sh).
bash scripts/check-build.sh
wait "$roots" || { cat /tmp/mailstack-make-roots.log >&2; exit 1; }
wait "$debs" || { cat /tmp/mailstack-build-deb.log >&2; exit 1; }
cat /tmp/mailstack-build-deb.log
# End-to-end and real-host tests must not skip here: a missing daemon is a failure (MAILSTACK_E2E=require).
MAILSTACK_E2E=require .venv/bin/python -m pytest -ra "$@"
