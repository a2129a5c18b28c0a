"""Faults of the host, not of the input: a reload the service manager refuses, and a service manager
that is not there. Each gets one clear line and a non-zero exit, and the daemons keep serving the
configuration they served before."""

from __future__ import annotations

import pytest

from tests.hosts.conftest import Kind, booted_with
from tests.hosts.machine import Machine
from tests.hosts.mailhost import Mailhost, error_line

pytestmark = pytest.mark.hosts


def _deploy_fails_and_changes_nothing(host: Mailhost, fault: str, *options: str) -> str:
    """Serve lineage a, run the shell command ``fault``, then deploy lineage b with ``options``:
    returns the error line."""
    host.start_pebble()
    host.issue("a", ["mail.a.example.test"])
    host.issue("b", ["mail.b.example.test"], install=False)
    host.sh(fault)
    expected = {("mail.a.example.test", ""): host.leaf("a")}
    files = host.files_digest()
    before_b = {port: host.served(port, "mail.b.example.test") for port in (25, 993)}
    run = host.tool("deploy", "--cert-name", "b", *options, check=False)
    assert run.returncode != 0
    line = error_line(run)
    assert host.files_digest() == files
    assert not (wrong := host.wrong_ports(expected)), "\n".join(wrong)
    assert {port: host.served(port, "mail.b.example.test") for port in (25, 993)} == before_b
    return line


@booted_with("systemd")
def test_a_reload_systemd_refuses_is_one_line_and_the_previous_configuration_stays(
    machine: Machine, kind: Kind
) -> None:
    host = Mailhost(machine, kind)
    # A masked unit: `systemctl reload dovecot.service` fails ("Unit dovecot.service is masked").
    line = _deploy_fails_and_changes_nothing(host, "systemctl mask --runtime dovecot.service")
    assert "reloading dovecot (systemd) failed" in line and "masked" in line, line
    assert "the previous configuration was restored" in line, line


@booted_with("openrc")
def test_systemd_chosen_on_a_host_without_it_is_one_line_and_nothing_changes(
    machine: Machine, kind: Kind
) -> None:
    host = Mailhost(machine, kind)
    line = _deploy_fails_and_changes_nothing(host, "true", "--service-manager", "systemd")
    assert "reloading postfix (systemd) failed: systemctl not found" in line, line
