#!/usr/bin/env bash
# Build the sdist and the wheel as a packager would, and prove what they ship:
# - the sdist unpacks and carries the test suite and the man page (MANIFEST.in), and its unit tests
#   pass with Debian's python3 packages alone (certbot 2.1, cryptography, pytest), as a packager runs them;
# - the wheel installs into a fresh virtualenv (certbot comes from the package index), the
#   certbot-mailstack command runs, certbot discovers the mailstack plugin, the man page is installed.
# Quiet on success; on failure it says which check failed and shows the tool's output.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log="$tmp/log"

step() {  # step DESCRIPTION COMMAND...: run quietly, show the output only if it fails
    local what=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "check-build.sh: $what failed:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}
fail() {
    echo "check-build.sh: $*" >&2
    exit 1
}

step "python -m build" .venv/bin/python -m build --outdir "$tmp/dist" .
sdists=("$tmp"/dist/*.tar.gz)
wheels=("$tmp"/dist/*.whl)
[ ${#sdists[@]} -eq 1 ] && [ -f "${sdists[0]}" ] || fail "expected one sdist in the build output"
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel in the build output"

mkdir "$tmp/sdist"
step "unpacking the sdist" tar -xzf "${sdists[0]}" -C "$tmp/sdist"
top=$(find "$tmp/sdist" -mindepth 1 -maxdepth 1 -type d)
for path in tests/unit tests/e2e tests/lab docs/certbot-mailstack.1 scripts/test.sh; do
    [ -e "$top/$path" ] || fail "the sdist lacks $path (MANIFEST.in)"
done

# A packager's offline test run: the unit suite from the unpacked sdist with Debian's own python3,
# certbot, cryptography and pytest (no virtualenv, no network).
step "the unit tests from the unpacked sdist with Debian's python3 packages" \
    env -C "$top" -u PYTHONPATH /usr/bin/python3 -m pytest -q -p no:cacheprovider -W error tests/unit

step "creating a fresh virtualenv" python3 -m venv "$tmp/venv"
step "pip install of the wheel" "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "${wheels[0]}"

version=$(.venv/bin/python -c 'import mailstack_installer; print(mailstack_installer.__version__)')
out=$("$tmp/venv/bin/certbot-mailstack" --version 2>&1) || fail "certbot-mailstack --version failed: $out"
[ "$out" = "certbot-mailstack $version" ] || fail "certbot-mailstack --version printed '$out', not $version"

# Private certbot dirs, so nothing is written under /etc/letsencrypt or /var/log.
certbot_dirs=(--config-dir "$tmp/le" --work-dir "$tmp/le/work" --logs-dir "$tmp/le/logs")
out=$("$tmp/venv/bin/certbot" plugins --installers "${certbot_dirs[@]}" 2>&1) \
    || fail "certbot plugins failed: $out"
grep -q '^\* mailstack$' <<<"$out" || fail "certbot does not list the mailstack plugin: $out"

[ -f "$tmp/venv/share/man/man1/certbot-mailstack.1" ] || fail "the wheel did not install share/man/man1/certbot-mailstack.1"
