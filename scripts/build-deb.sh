#!/usr/bin/env bash
# Build the Debian packages (source and python3-certbot-mailstack) for one release, in a clean
# Debian root made with debootstrap: nothing from this machine's Python is used. Then lintian.
#   scripts/build-deb.sh RELEASE [OUTDIR]      RELEASE: bookworm | trixie
# OUTDIR (default dist/deb/RELEASE) receives the .deb, the source package, the .changes and
# lintian.txt. The build root is kept in MAILSTACK_BUILD_DIR (default /var/tmp/mailstack-build)
# and made again when this script or debian/control changes. Run as root (chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/debroot.sh
. scripts/lib/debroot.sh

release=${1:?usage: scripts/build-deb.sh RELEASE [OUTDIR]}
out=${2:-dist/deb/$release}
cache=${MAILSTACK_BUILD_DIR:-/var/tmp/mailstack-build}
root=$cache/$release
say() { echo "build-deb.sh ($release): $*" >&2; }

# Lintian tags accepted, each for a reason (all others, error or warning, fail the build):
#   initial-upload-closes-no-bugs  no ITP bug exists for a package that is not in Debian yet.
allowed='initial-upload-closes-no-bugs'

# The build root: the release's build-essential, lintian and debian/control's Build-Depends.
tools="build-essential dpkg-dev lintian"
stamp=$(echo "$tools" | cat - scripts/lib/debroot.sh debian/control | sha256sum | cut -d' ' -f1)
if [ "$(cat "$root/etc/mailstack-build-root" 2>/dev/null)" != "$stamp" ]; then
    say "making the build root $root (debootstrap; a few minutes)"
    mkdir -p "$cache"
    bootstrap_root "$release" "$root.tmp" "$root.debootstrap.log"
    mkdir -p "$root.tmp/tmp/deps/debian"
    cp debian/control "$root.tmp/tmp/deps/debian/"
    { in_root "$root.tmp" apt-get install -y -q --no-install-recommends $tools \
        && in_root "$root.tmp" apt-get build-dep -y -q --no-install-recommends /tmp/deps \
        && in_root "$root.tmp" apt-get clean; } >"$root.apt.log" 2>&1 \
        || { tail -n 30 "$root.apt.log" >&2; exit 1; }
    in_root "$root.tmp" useradd --create-home builder
    rm -rf "$root.tmp/tmp/deps"
    echo "$stamp" >"$root.tmp/etc/mailstack-build-root"
    rm -rf "$root"
    mv "$root.tmp" "$root"
fi

# The tree's files, NUL-separated: as git sees them (tracked and new, not ignored), or in an
# unpacked sdist or tarball everything but build products and caches.
sources() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard "$@"
    else
        find "${@:-.}" \( -name .git -o -name .venv -o -name dist -o -name build -o -name __pycache__ \
            -o -name '*.egg-info' -o -name '.*_cache' \) -prune -o -type f -printf '%p\0' | sed -z 's|^\./||'
    fi
}

# Nothing to do when OUTDIR holds the build of this very tree (and build root).
digest=$({ sources | sort -z | xargs -0 sha256sum; echo "$stamp"; } \
    | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/source-digest" 2>/dev/null)" = "$digest" ] && compgen -G "$out/*.deb" >/dev/null; then
    say "up to date: $(cd "$out" && ls ./*.deb)"
    exit 0
fi

# The source: the upstream tree (sources above) as the orig tarball, and
# debian/ beside it, unpacked where the unprivileged builder works.
upstream=$(python3 -c 'import re,sys; print(re.search(r"__version__ = \"(.+)\"", sys.stdin.read())[1])' \
    <mailstack_installer/__init__.py)
cp debian/changelog "$root/tmp/changelog"
version=$(in_root "$root" dpkg-parsechangelog -l /tmp/changelog -S Version)
[ "${version%-*}" = "$upstream" ] \
    || { say "debian/changelog is at $version, the package at $upstream: add a changelog entry"; exit 1; }
work=$root/home/builder/build
rm -rf "$work"
mkdir -p "$work/certbot-mailstack-$upstream"
sources | grep -zv '^debian/' \
    | xargs -0 tar -cf - --no-recursion | tar -xf - -C "$work/certbot-mailstack-$upstream"
tar -C "$work" --sort=name --owner=0 --group=0 --mtime=@0 -czf \
    "$work/python-certbot-mailstack_$upstream.orig.tar.gz" "certbot-mailstack-$upstream"
sources debian | xargs -0 tar -cf - | tar -xf - \
    -C "$work/certbot-mailstack-$upstream"
chroot "$root" chown -R builder: /home/builder/build

say "dpkg-buildpackage (the unit tests run in it)"
log=$work/build.log
if ! in_root "$root" runuser -u builder -- sh -c \
    "cd /home/builder/build/certbot-mailstack-$upstream && dpkg-buildpackage -us -uc" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    say "dpkg-buildpackage failed (log above)"
    exit 1
fi

changes=python-certbot-mailstack_${version}_$(in_root "$root" dpkg --print-architecture).changes
in_root "$root" runuser -u builder -- lintian --display-experimental --pedantic \
    "/home/builder/build/$changes" >"$work/lintian.txt" 2>&1 || true
mkdir -p "$out"
rm -f "$out"/*
for file in "$work"/*; do [ -f "$file" ] && cp "$file" "$out/"; done
if grep -q '^[EW]: ' "$work/lintian.txt" && grep '^[EW]: ' "$work/lintian.txt" \
    | grep -vE "^[EW]: [^ ]+: ($allowed)( |$)" >&2; then
    say "lintian reports the errors or warnings above (all of lintian's output: $out/lintian.txt)"
    exit 1
fi
echo "$digest" >"$out/source-digest"
say "built $(cd "$out" && ls ./*.deb); lintian: $(grep -c '^[EWIPX]: ' "$out/lintian.txt" || true) tags, \
no error or warning beyond the accepted ($allowed)"
