"""Never IMAP-dark with exit 0: a change Dovecot refuses only at reload is rolled back.

The administrator caps Dovecot's config process in local.conf, a little above what it uses. A
deployment then adds blocks that do not fit under the cap, in one candidate: ``doveconf`` accepts
it, ``systemctl reload`` exits 0, and the config process dies (``Out of memory``): every IMAP/POP3
TLS connection is reset, old names included. The run must see that, put the previous configuration
back, reload, and exit non-zero with one line. A bulk import that grows past what the plugin would
raise the limit for finds the cap before adding blocks, and stops with the same guarantees.
"""

from __future__ import annotations

import re

import pytest

from tests.hosts.conftest import GUEST, Kind, booted_with
from tests.hosts.machine import Machine
from tests.hosts.mailhost import Mailhost, error_line

pytestmark = pytest.mark.hosts

#: Per Dovecot version: lineages added in one deployment (their blocks are well over the cap's
#: headroom, and too few for the plugin to raise the limit), then by a bulk import (enough for it).
SIZES = {"2.4": (500, 1400), "2.3": (200, 300)}
CAP_HEADROOM_MB = 12
CONFIG_PEAK_MB = (
    "echo $(( $(awk '/VmPeak/ {print $2}' /proc/$(pgrep -f dovecot/config | head -n 1)/status) / 1024 ))"
)


@booted_with("systemd")
def test_a_reload_that_leaves_dovecot_dark_is_rolled_back_and_fails(machine: Machine, kind: Kind) -> None:
    host = Mailhost(machine, kind)
    host.start_pebble()
    host.issue("a", ["a.example.test", "mail.a.example.test"])
    host.served(993, "mail.a.example.test")  # the config process is started on demand
    cap = int(host.sh(CONFIG_PEAK_MB).stdout) + CAP_HEADROOM_MB
    machine.path("/etc/dovecot/local.conf").write_text(f"service config {{\n  vsz_limit = {cap}M\n}}\n")
    host.sh("systemctl restart dovecot")
    host.wait_serving()
    expected = {("mail.a.example.test", ""): host.leaf("a")}
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
    files = host.files_digest()

    added, imported = SIZES[kind.dovecot]
    host.sh(f"python3 {GUEST}/make-lineages.py {added} /etc/letsencrypt")
    run = host.tool("deploy", *[arg for k in range(added) for arg in ("--cert-name", f"d{k}")], check=False)

    assert run.returncode != 0
    line = error_line(run)
    assert "dovecot serves no TLS on" in line and "after the reload (it did before)" in line, line
    assert "the previous configuration was restored, reloaded and serves TLS" in line, line
    assert host.files_digest() == files
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
    assert "Out of memory" in host.sh("journalctl -u dovecot -o cat").stdout  # the fault was real

    # A bulk import big enough that the plugin raises the limit: it reloads with the new limit
    # first, finds the cap still in force, and stops before adding the blocks.
    host.sh(f"python3 {GUEST}/make-lineages.py {imported} /etc/letsencrypt {added}")
    run = host.tool("deploy", "--all", check=False)
    assert run.returncode != 0
    line = error_line(run)
    assert "local.conf" in line, line
    assert re.search(r"previous (drop-in was put back|configuration was restored)", line), line
    assert host.files_digest() == files
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
