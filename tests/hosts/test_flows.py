"""The flows a Debian admin runs, on booted Debian 12 and 13 hosts (systemd) and Debian 12 with
OpenRC, with the distribution's own certbot, Postfix and Dovecot on /etc and the standard ports.

Each step is judged by TLS handshakes with SNI on all seven mail ports (tests/hosts/mailhost.py).
"""

from __future__ import annotations

import pytest

from tests.hosts.conftest import Kind
from tests.hosts.machine import Machine
from tests.hosts.mailhost import MYHOSTNAME, Mailhost

pytestmark = pytest.mark.hosts

A = ["a.example.test", "mail.a.example.test"]
B = ["b.example.test", "mail.b.example.test"]
WILD = ["w.example.test", "*.w.example.test"]
DUAL = ["mail.d.example.test"]


def test_admin_flows_are_served_on_every_port_and_survive_renewal_bad_input_and_reboot(
    machine: Machine, kind: Kind
) -> None:
    host = Mailhost(machine, kind)
    host.start_pebble()
    assert host.sh("dovecot --version").stdout.startswith(kind.dovecot)
    assert host.service_manager() == kind.init  # what --mailstack-service-manager auto picks

    # certbot run -i mailstack, and the classic certonly + certbot install
    start = host.marker()
    host.issue("a", A)
    assert host.reloads_since(start) == {"postfix": 1, "dovecot": 1}, "service manager auto: one reload each"
    host.issue("b", B, install=False)
    host.certbot("install", "-i", "mailstack", "--cert-name", "b")
    # a wildcard, RSA and ECDSA side by side, and the default certificate (Postfix's myhostname)
    host.issue("w", WILD)
    host.issue("d-ec", DUAL, "--key-type", "ecdsa")
    host.issue("d-rsa", DUAL, "--key-type", "rsa")
    host.issue("default", [MYHOSTNAME])
    expected = {
        ("mail.a.example.test", ""): host.leaf("a"),
        ("mail.b.example.test", ""): host.leaf("b"),
        ("imap.w.example.test", ""): host.leaf("w"),
        ("mail.d.example.test", "ecdsa"): host.leaf("d-ec"),
        ("mail.d.example.test", "rsa"): host.leaf("d-rsa"),
        (None, ""): host.leaf("default"),
    }
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
    # --mailstack-dovecot-syntax auto read `dovecot --version` of the distribution's binary
    dropin = machine.path("/etc/dovecot/conf.d/99-mailstack-sni.conf").read_text()
    assert ("ssl_server_cert_file = /" if kind.dovecot == "2.4" else "ssl_cert = </") in dropin
    assert "0 with problems" in host.tool("status").stdout  # status reads the drop-in of either syntax

    # renewal by the distribution's own job: certbot.service (systemd) or the cron job (OpenRC)
    for name in ("a", "b"):  # due now, as they would be 30 days before expiry
        host.sh(f"sed -i '1i renew_before_expiry = 3000 days' /etc/letsencrypt/renewal/{name}.conf")
    before = {name: host.leaf(name) for name in ("a", "b")}
    start = host.marker()
    host.renew_as_the_distribution_does()
    assert {name: host.leaf(name) for name in ("a", "b")} != before, "the lineages were not renewed"
    assert host.reloads_since(start) == {"postfix": 1, "dovecot": 1}, "one reload per daemon per renew run"
    expected[("mail.a.example.test", "")] = host.leaf("a")
    expected[("mail.b.example.test", "")] = host.leaf("b")
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)

    # bad input: a key that does not match its certificate changes nothing
    files = host.files_digest()
    host.issue("c", ["mail.c.example.test"], install=False)
    host.sh('cp /etc/letsencrypt/live/a/privkey.pem "$(readlink -f /etc/letsencrypt/live/c/privkey.pem)"')
    bad = host.certbot("install", "-i", "mailstack", "--cert-name", "c", check=False)
    assert bad.returncode != 0
    assert "does not match" in bad.output and "Traceback" not in bad.output
    assert host.files_digest() == files
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)

    # a reboot: everything comes back as it was
    machine.reboot()
    host.wait_serving()
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
