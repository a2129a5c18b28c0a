"""The Debian package on booted Debian 12 and 13 hosts: autopkgtest installs it with apt and runs
debian/tests there; certbot finds the plugin with no option; removing and purging the package leave
Postfix and Dovecot serving what they served, and certbot's renewals keep working
(docs/packaging.md, "Remove and purge")."""

from __future__ import annotations

import re

import pytest

from tests.hosts.conftest import DEBS, Kind, booted_with
from tests.hosts.machine import Machine
from tests.hosts.mailhost import PORTS, Mailhost

pytestmark = pytest.mark.hosts

A = ["a.test", "mail.a.test"]  # the lineages debian/tests/end-to-end deploys
B = ["b.test", "mail.b.test"]
HOOKS = "/etc/letsencrypt/renewal-hooks/deploy/mailstack /etc/letsencrypt/renewal-hooks/post/mailstack"
POSTFIX_PORTS = (25, 587, 465)


@booted_with("systemd")
def test_debian_tests_pass_then_remove_and_purge_leave_the_daemons_serving(
    bare_machine: Machine, kind: Kind
) -> None:
    """autopkgtest installs the .deb and runs debian/tests on the booted host itself (the null
    runner: the host is the container the tests ask for, thrown away afterwards). Its end-to-end
    test leaves the package installed and two lineages deployed, a.test by certbot run --installer
    mailstack, b.test by certonly + certbot install: then apt-get remove, and purge."""
    machine = bare_machine
    run = machine.run(
        "autopkgtest --ignore-restrictions=isolation-container,breaks-testbed --no-built-binaries "
        f"{DEBS}/python3-certbot-mailstack_*.deb /root/certbot-mailstack/ -- null",
        check=False,
        timeout=900,
    )
    assert run.returncode == 0, run.output[-5000:]
    results = dict(re.findall(r"^(plugin-listed|end-to-end)\s+(\S+)", run.stdout, re.M))
    assert results == {"plugin-listed": "PASS", "end-to-end": "PASS"}, run.output[-5000:]
    assert "28 handshakes, each name served its own certificate on every port" in run.output

    host = Mailhost(machine, kind)
    # installed by apt: found by certbot with no option; the command and its man page
    assert "* mailstack" in host.certbot("plugins", "--installers").stdout.splitlines()
    host.sh("test -x /usr/bin/certbot-mailstack && test -f /usr/share/man/man1/certbot-mailstack.1.gz")
    served = {(A[1], ""): host.leaf(A[0]), (B[1], ""): host.leaf(B[0])}
    assert not (wrong := host.wrong_ports(served)), "\n".join(wrong)
    files = host.files_digest()

    # remove: nothing of the configuration is touched; the hooks left behind say so and exit 0, and
    # certbot renews without the plugin (it drops `installer = mailstack`); nothing is reloaded, so
    # the daemons go on serving the certificates deployed before
    assert "installer = mailstack" in host.sh("cat /etc/letsencrypt/renewal/a.test.conf").stdout
    host.sh("apt-get remove -y -q python3-certbot-mailstack")
    host.sh(f"test -x /usr/bin/certbot || exit 1; ls {HOOKS}")
    renew = host.certbot("renew", "--force-renewal", "--no-random-sleep-on-renew")
    assert "certbot-mailstack is not installed any more" in renew.output, renew.output
    assert not re.search(r"Traceback|error", renew.output, re.I), renew.output
    assert "installer = mailstack" not in host.sh("cat /etc/letsencrypt/renewal/a.test.conf").stdout
    assert host.files_digest() == files
    assert not (wrong := host.wrong_ports(served)), "\n".join(wrong)

    # purge: the hooks go; the map, the drop-in and main.cf stay; certbot renews with no word of
    # this package. After a reboot Postfix serves the copies its table embeds, Dovecot the files
    # its blocks name (renewed twice since)
    host.sh("apt-get purge -y -q python3-certbot-mailstack")
    assert host.sh(f"ls {HOOKS}", check=False).returncode != 0, "purge leaves no hook behind"
    host.sh("test -f /etc/letsencrypt/mailstack/state.json")
    assert host.files_digest() == files
    renew = host.certbot("renew", "--force-renewal", "--no-random-sleep-on-renew")
    assert not re.search(r"Traceback|error|mailstack", renew.output, re.I), renew.output
    machine.reboot()
    host.wait_serving()
    renewed = {A[1]: host.leaf(A[0]), B[1]: host.leaf(B[0])}
    for (name, _), deployed in served.items():
        for port in PORTS:
            want = deployed if port in POSTFIX_PORTS else renewed[name]
            assert host.served(port, name) == want, f"{name} on port {port} after purge and reboot"
