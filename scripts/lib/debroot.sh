# Shared by the scripts that make Debian roots with debootstrap (scripts/build-deb.sh, and the
# real-host suite's tests/hosts/make-root.sh). Source it; run as root.

# debian_mirror: the Debian archive to bootstrap from: MAILSTACK_DEBIAN_MIRROR, else the first
# Debian archive this machine's apt reads (deb822 .sources or one-line .list).
debian_mirror() {
    local mirror=${MAILSTACK_DEBIAN_MIRROR:-${MAILSTACK_HOSTS_MIRROR:-}}
    if [ -z "$mirror" ]; then
        mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
            2>/dev/null | grep -oE '^(URIs:|deb)[[:space:]]+[^[:space:]]+/debian/?([[:space:]]|$)' \
            | awk '{print $2; exit}' || true)
    fi
    [ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt (set MAILSTACK_DEBIAN_MIRROR)" >&2; return 2; }
    echo "$mirror"
}

# bootstrap_root RELEASE ROOT LOG: a minimal Debian root that reaches the archive as this machine
# does (its resolver, and its extra CA certificates for a TLS-inspecting proxy on the way).
bootstrap_root() {
    local release=$1 root=$2 log=$3 mirror
    mirror=$(debian_mirror) || return 2
    rm -rf "$root"
    debootstrap --variant=minbase "$release" "$root" "$mirror" >"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; return 1; }
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf"
}

# in_root ROOT COMMAND...: run COMMAND in ROOT with a clean environment (nothing from this
# machine's PATH, Python or locale).
in_root() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}

# recipe HOSTS_DIR: the digest of what makes a real-host root (tests/hosts/make-root.sh and this
# file); a root stamped with another digest is rebuilt.
recipe() {
    cat "$1/make-root.sh" "$1/../../scripts/lib/debroot.sh" | sha256sum | cut -d' ' -f1
}
