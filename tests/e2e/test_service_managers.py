"""The native backend on a real Dovecot: the restart that gives its config process a new limit.

``doveadm stop`` may return while the master is still exiting, and a Dovecot master started from a
command keeps that command's output pipe open: both made the restart fail or hang before.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from mailstack_installer import service_managers
from mailstack_installer.probe import SERVICES, ProbeError, served_certificate
from mailstack_installer.settings import resolve
from tests.lab.dovecot import DovecotInstance
from tests.lab.ports import LOCALHOST

pytestmark = pytest.mark.e2e


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[DovecotInstance]:
    instance = DovecotInstance(tmp_path / "dc")
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def answers(port: int, within: float = 10.0) -> bool:
    """Whether the port completes a TLS handshake within ``within`` seconds (a master just started
    opens its listeners a moment after the command returns)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return bool(served_certificate(LOCALHOST, port, SERVICES["imaps"][1], None, 2.0))
        except ProbeError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def test_native_restart_gives_a_new_master_that_serves_each_time(dovecot: DovecotInstance) -> None:
    settings = resolve({"dovecot-dir": str(dovecot.config_dir), "service-manager": "native"})
    manager = service_managers.for_settings(settings)
    masters = [dovecot.master_pid]
    for _ in range(3):
        service_managers.restart(manager, "dovecot")
        masters.append(dovecot.master_pid)
        assert answers(dovecot.ports["imaps"])
    assert None not in masters and len(set(masters)) == 4
