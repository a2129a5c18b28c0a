"""The installer class in-process, as certbot drives it, against a real Postfix and Dovecot."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from certbot import errors
from certbot.configuration import NamespaceConfig

from mailstack_installer.installer import Installer
from mailstack_installer.settings import OPTION_NAMES

from .conftest import Stack

pytestmark = pytest.mark.e2e


def make_installer(tmp_path: Path, **options: str) -> Installer:
    namespace = mock.MagicMock(
        config_dir=str(tmp_path / "config"),
        work_dir=str(tmp_path / "work"),
        logs_dir=str(tmp_path / "logs"),
        server="https://acme.invalid/directory",
    )
    for name in OPTION_NAMES:
        setattr(namespace, "mailstack_" + name.replace("-", "_"), options.get(name))
    namespace.mailstack_verify = False
    config = NamespaceConfig(namespace)
    if hasattr(config, "set_argument_sources"):
        config.set_argument_sources({})
    return Installer(config, "mailstack")


def test_prepare_passes_on_an_installed_stack_and_names_come_from_postfix(
    tmp_path: Path, stack: Stack
) -> None:
    installer = make_installer(
        tmp_path,
        **{"postfix-dir": str(stack.postfix.config_dir), "dovecot-dir": str(stack.dovecot.config_dir)},
    )
    stack.postfix.postconf("-e", "mydestination = example.test, $myhostname, hash:/etc/postfix/x")
    installer.prepare()
    cert, key = stack.dovecot.default_cert, stack.dovecot.default_key
    (stack.dovecot.config_dir / "conf.d" / "50-local.conf").write_text(
        f'local_name "imap.c.test" {{\n  ssl_cert = <{cert}\n  ssl_key = <{key}\n}}\n'
    )
    names = set(installer.get_all_names())
    assert {"mail.default.test", "example.test", "imap.c.test"} <= names
    assert not {n for n in names if "$" in n or ":" in n}
    assert installer.supported_enhancements() == []
    with pytest.raises(errors.PluginError):
        installer.enhance("mail.default.test", "redirect")
    assert "tls_server_sni_maps" in installer.more_info()


def test_prepare_reports_a_missing_postfix_as_not_installed(tmp_path: Path, stack: Stack) -> None:
    installer = make_installer(
        tmp_path, **{"postfix-dir": str(tmp_path / "nope"), "dovecot-dir": str(stack.dovecot.config_dir)}
    )
    with pytest.raises(errors.NoInstallationError, match="main.cf does not exist"):
        installer.prepare()


def test_prepare_without_dovecot_service_ignores_dovecot(tmp_path: Path, stack: Stack) -> None:
    installer = make_installer(
        tmp_path,
        **{
            "postfix-dir": str(stack.postfix.config_dir),
            "dovecot-dir": str(tmp_path / "none"),
            "services": "postfix",
        },
    )
    installer.prepare()  # no error: the missing Dovecot directory is not looked at
    both = make_installer(
        tmp_path, **{"postfix-dir": str(stack.postfix.config_dir), "dovecot-dir": str(tmp_path / "none")}
    )
    with pytest.raises(errors.NoInstallationError, match="none"):
        both.prepare()


def test_damaged_state_does_not_fail_prepare_during_renew(tmp_path: Path, stack: Stack) -> None:
    """Else certbot would silently drop installer = mailstack from the renewal conf."""
    options = {"postfix-dir": str(stack.postfix.config_dir), "dovecot-dir": str(stack.dovecot.config_dir)}
    state = tmp_path / "config" / "mailstack" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text("{damaged")
    renewing = make_installer(tmp_path, **options)
    renewing.config.namespace.verb = "renew"
    renewing.prepare()
    installing = make_installer(tmp_path, **options)
    installing.config.namespace.verb = "install"
    with pytest.raises(errors.MisconfigurationError, match="damaged"):
        installing.prepare()
