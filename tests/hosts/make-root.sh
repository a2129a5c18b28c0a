#!/usr/bin/env bash
# Build a Debian root for a booted test host: make-root.sh RELEASE INIT ROOT
#   RELEASE  bookworm | trixie
#   INIT     systemd | openrc
# The root has the distribution's own postfix, dovecot-imapd, dovecot-pop3d, certbot, pebble,
# openssh-server and ansible-core (for the fleet suite) on
# their standard paths, submission (587) and smtps (465) enabled as an admin would, and autopkgtest
# with what it needs for a source tree (dpkg-dev, make, patch), to run debian/tests on the booted
# host. The plugin is not in the root: each test installs the .deb that scripts/build-deb.sh built.
# Packages come from the mirror this machine's apt uses.
set -euo pipefail
release=$1 init=$2 root=$3

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib/debroot.sh
. "$here/../../scripts/lib/debroot.sh"

case "$init" in
    systemd) init_packages=(systemd-sysv dbus) ;;
    # Debian 12's rsyslog has its init script in orphan-sysvinit-scripts; mail.log shows the reloads.
    openrc) init_packages=(sysvinit-core openrc cron rsyslog orphan-sysvinit-scripts) ;;
    *) echo "make-root.sh: INIT must be systemd or openrc, not $init" >&2; exit 2 ;;
esac

bootstrap_root "$release" "$root.tmp" "$root.debootstrap.log"
echo "mailhost" >"$root.tmp/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tmailhost.example.test mailhost\n::1\tlocalhost\n' >"$root.tmp/etc/hosts"

# No daemon starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"
chmod 0755 "$root.tmp/usr/sbin/policy-rc.d"
in_root "$root.tmp" debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select Internet Site
postfix postfix/mailname string mailhost.example.test
SEL
in_root "$root.tmp" apt-get install -y -q --no-install-recommends "${init_packages[@]}" \
    postfix dovecot-imapd dovecot-pop3d certbot pebble openssl ca-certificates \
    iproute2 procps autopkgtest dpkg-dev make patch \
    openssh-server openssh-client ansible-core >"$root.apt.log" 2>&1 || { tail -n 30 "$root.apt.log" >&2; exit 1; }
in_root "$root.tmp" update-ca-certificates >/dev/null 2>&1 || true
rm -f "$root.tmp/usr/sbin/policy-rc.d"
in_root "$root.tmp" apt-get clean

# Postfix configured in a chroot finds no address family: the host has loopback v4 and v6.
in_root "$root.tmp" postconf -e inet_protocols=all myhostname=mailhost.example.test
# Submission (587, STARTTLS) and submissions (465, TLS from the first byte) as an admin enables them.
in_root "$root.tmp" postconf -M 'submission/inet=submission inet n - y - - smtpd' \
    'submissions/inet=submissions inet n - y - - smtpd'
in_root "$root.tmp" postconf -P submissions/inet/smtpd_tls_wrappermode=yes submissions/inet/syslog_name=postfix/submissions
# Boot quickly in a container: nothing waits for a network that --private-network never brings up.
if [ "$init" = systemd ]; then
    in_root "$root.tmp" systemctl mask systemd-networkd-wait-online.service systemd-resolved.service \
        getty@tty1.service console-getty.service >/dev/null 2>&1 || true
fi
# The fleet suite (tests/hosts/fleet.py) gives each booted copy its own SSH host keys.
rm -f "$root.tmp"/etc/ssh/ssh_host_*
# Which recipe made this root: make-roots.sh rebuilds a root made by another.
recipe "$here" >"$root.tmp/etc/mailstack-test-root"
rm -rf "$root"
mv "$root.tmp" "$root"
