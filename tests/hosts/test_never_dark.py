"""Never IMAP-dark with exit 0: a change Dovecot refuses only at reload is rolled back.

The administrator caps Dovecot's config process in local.conf (read after the plugin's drop-in, so
it overrides the limit the drop-in sets); a bulk import then grows the blocks past what a reload
can hold under that cap. ``doveconf`` accepts the candidate, ``systemctl reload`` exits 0, and the
config process dies (``block_alloc: Out of memory``): every IMAP/POP3 TLS connection is reset. The
run must see that, put the previous configuration back, reload, and exit non-zero with one line.
"""

from __future__ import annotations

import pytest

from tests.hosts.conftest import GUEST, KINDS, Kind
from tests.hosts.machine import Machine
from tests.hosts.mailhost import Mailhost

pytestmark = pytest.mark.hosts

#: Per Dovecot version: lineages deployed first (enough that the drop-in sets its own limit), the
#: administrator's cap (holds those at a restart), lineages added (a reload of both is over the cap).
SIZES = {"2.4": (1400, "128M", 3000), "2.3": (210, "160M", 800)}


@pytest.mark.parametrize(
    "kind", [k for k in KINDS if k.init == "systemd"], indirect=True, ids=lambda k: k.name
)
def test_a_reload_that_leaves_dovecot_dark_is_rolled_back_and_fails(machine: Machine, kind: Kind) -> None:
    host = Mailhost(machine, kind)
    host.start_pebble()
    host.issue("a", ["a.example.test", "mail.a.example.test"])
    first, cap, added = SIZES[kind.dovecot]
    host.sh(f"python3 {GUEST}/make-lineages.py {first} /etc/letsencrypt")
    host.tool("deploy", "--all")
    assert "vsz_limit" in machine.path("/etc/dovecot/conf.d/99-mailstack-sni.conf").read_text()
    machine.path("/etc/dovecot/local.conf").write_text(f"service config {{\n  vsz_limit = {cap}\n}}\n")
    host.sh("systemctl restart dovecot")
    machine.wait_booted_ports()
    expected = {
        ("mail.a.example.test", ""): host.leaf("a"),
        (f"mail.d{first - 1}.bulk.test", ""): host.fingerprint(
            f"/etc/letsencrypt/live/d{first - 1}/cert.pem"
        ),
    }
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
    files = host.files_digest()

    host.sh(f"python3 {GUEST}/make-lineages.py {added} /etc/letsencrypt {first}")
    run = host.tool("deploy", "--all", check=False)

    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if "WARNING" not in line]
    assert len(lines) == 1 and "Traceback" not in run.output, run.output
    assert "dovecot serves no TLS after the reload" in lines[0], lines[0]
    assert "the previous configuration was restored, reloaded and serves TLS" in lines[0], lines[0]
    assert host.files_digest() == files
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
    journal = host.sh("journalctl -u dovecot -o cat").stdout
    assert "Out of memory" in journal  # the fault was real: Dovecot's config process died
