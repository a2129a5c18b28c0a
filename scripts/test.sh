#!/usr/bin/env bash
# Lint, type-check and run every test: unit tests and end-to-end tests against real Pebble,
# certbot (newest from PyPI and Debian's 2.1), Postfix and Dovecot on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check mailstack_installer tests scripts
.venv/bin/ruff format --check mailstack_installer
.venv/bin/mypy mailstack_installer
# The sdist and wheel as shipped: contents, a clean install, plugin discovery (scripts/check-build.sh).
bash scripts/check-build.sh
# End-to-end tests must not skip here: a missing daemon is a failure (MAILSTACK_E2E=require).
MAILSTACK_E2E=require .venv/bin/python -m pytest -ra "$@"
