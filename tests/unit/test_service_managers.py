"""Each backend's real command line, run through a stand-in binary on PATH that records its argv."""

import os
import stat

import pytest

from mailstack_installer import service_managers
from mailstack_installer.errors import InputError
from mailstack_installer.settings import resolve


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    for tool in ("systemctl", "rc-service", "service", "postfix", "doveadm"):
        script = bindir / tool
        script.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize(
    ("backend", "postfix_line", "dovecot_line"),
    [
        ("systemd", "systemctl reload postfix.service", "systemctl reload dovecot.service"),
        ("openrc", "rc-service postfix reload", "rc-service dovecot reload"),
        ("sysvinit", "service postfix reload", "service dovecot reload"),
        ("native", "postfix -c /srv/pf reload", "doveadm -c /srv/dc/dovecot.conf reload"),
    ],
)
def test_backend_runs_its_exact_reload_command(recorder, backend, postfix_line, dovecot_line):
    settings = resolve({"service-manager": backend, "postfix-dir": "/srv/pf", "dovecot-dir": "/srv/dc"})
    manager = service_managers.for_settings(settings)
    manager.reload("postfix")
    manager.reload("dovecot")
    assert recorder.read_text().splitlines() == [postfix_line, dovecot_line]


def test_auto_uses_native_for_private_config_dirs():
    settings = resolve({"postfix-dir": "/srv/pf"})
    assert service_managers.detect(settings) == "native"


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(InputError, match="native.*systemd"):
        service_managers.for_settings(resolve({"service-manager": "upstart"}))


def test_builtin_backends_are_registered_as_entry_points():
    assert {"systemd", "openrc", "sysvinit", "native"} <= set(service_managers.registered())
