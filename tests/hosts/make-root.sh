#!/usr/bin/env bash
# Build a Debian root for a booted test host: make-root.sh RELEASE INIT ROOT
#   RELEASE  bookworm | trixie
#   INIT     systemd | openrc
# The root has the distribution's own postfix, dovecot-imapd, dovecot-pop3d, certbot and pebble on
# their standard paths, submission (587) and smtps (465) enabled as an admin would, and python3-pip for
# the README's install command. Packages come from the mirror this machine's apt uses; run as root.
set -euo pipefail
release=$1 init=$2 root=$3

mirror=${MAILSTACK_HOSTS_MIRROR:-}
if [ -z "$mirror" ]; then
    # The first Debian archive this machine's apt reads (deb822 .sources or one-line .list).
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -oE '^(URIs:|deb)[[:space:]]+[^[:space:]]+/debian/?([[:space:]]|$)' \
        | awk '{print $2; exit}' || true)
fi
[ -n "$mirror" ] || { echo "make-root.sh: no Debian mirror found in /etc/apt (set MAILSTACK_HOSTS_MIRROR)" >&2; exit 2; }

case "$init" in
    systemd) init_packages=(systemd-sysv dbus) ;;
    # Debian 12's rsyslog has its init script in orphan-sysvinit-scripts; mail.log shows the reloads.
    openrc) init_packages=(sysvinit-core openrc cron rsyslog orphan-sysvinit-scripts) ;;
    *) echo "make-root.sh: INIT must be systemd or openrc, not $init" >&2; exit 2 ;;
esac

rm -rf "$root.tmp"
debootstrap --variant=minbase "$release" "$root.tmp" "$mirror" >"$root.debootstrap.log" 2>&1 \
    || { tail -n 20 "$root.debootstrap.log" >&2; exit 1; }

# Extra CA certificates of this machine (a TLS-inspecting proxy on the way to the registries).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$root.tmp/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root.tmp/usr/local/share/ca-certificates/"
fi
cp /etc/resolv.conf "$root.tmp/etc/resolv.conf"
echo "mailhost" >"$root.tmp/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tmailhost.example.test mailhost\n::1\tlocalhost\n' >"$root.tmp/etc/hosts"

in_root() { chroot "$root.tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
# No daemon starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"
chmod 0755 "$root.tmp/usr/sbin/policy-rc.d"
in_root debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select Internet Site
postfix postfix/mailname string mailhost.example.test
SEL
in_root apt-get install -y -q --no-install-recommends "${init_packages[@]}" \
    postfix dovecot-imapd dovecot-pop3d certbot pebble python3-pip python3-setuptools python3-wheel openssl ca-certificates \
    iproute2 procps >"$root.apt.log" 2>&1 || { tail -n 30 "$root.apt.log" >&2; exit 1; }
in_root update-ca-certificates >/dev/null 2>&1 || true
rm -f "$root.tmp/usr/sbin/policy-rc.d"
in_root apt-get clean

# Postfix configured in a chroot finds no address family: the host has loopback v4 and v6.
in_root postconf -e inet_protocols=all myhostname=mailhost.example.test
# Submission (587, STARTTLS) and submissions (465, TLS from the first byte) as an admin enables them.
in_root postconf -M 'submission/inet=submission inet n - y - - smtpd' \
    'submissions/inet=submissions inet n - y - - smtpd'
in_root postconf -P submissions/inet/smtpd_tls_wrappermode=yes submissions/inet/syslog_name=postfix/submissions
# Boot quickly in a container: nothing waits for a network that --private-network never brings up.
if [ "$init" = systemd ]; then
    in_root systemctl mask systemd-networkd-wait-online.service systemd-resolved.service \
        getty@tty1.service console-getty.service >/dev/null 2>&1 || true
fi
# Which recipe made this root: make-roots.sh rebuilds a root made by another.
sha256sum <"$0" | cut -d' ' -f1 >"$root.tmp/etc/mailstack-test-root"
rm -rf "$root"
mv "$root.tmp" "$root"
