#!/usr/bin/env bash
# Build the real-host suite's Debian roots that are missing, side by side (each takes a few minutes,
# mostly downloads): Debian 13 and 12 with systemd, Debian 12 with OpenRC. Where: MAILSTACK_HOSTS_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib/debroot.sh
. "$here/../../scripts/lib/debroot.sh"
dir=${MAILSTACK_HOSTS_DIR:-/var/tmp/mailstack-hosts}
mkdir -p "$dir"
pids=()
for kind in trixie-systemd bookworm-systemd bookworm-openrc; do
    [ "$(cat "$dir/$kind/etc/mailstack-test-root" 2>/dev/null)" = "$(recipe "$here")" ] && continue
    bash "$here/make-root.sh" "${kind%-*}" "${kind#*-}" "$dir/$kind" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
