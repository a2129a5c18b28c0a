"""dovecot/daemon.py: the private copy of the config tree, doveconf's answers, and the config
process limit step.

Validating a candidate never reads the live drop-in, whatever way dovecot.conf includes it.

At 10,000 blocks a doveconf run that reads the live drop-in takes ~10 s and over 1 GB; a private
copy of the config tree holds the candidate (or nothing, to ask Dovecot's own settings) instead."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from mailstack_installer.constants import HEADER
from mailstack_installer.dovecot import Dovecot
from mailstack_installer.dovecot import daemon as dovecot_module
from mailstack_installer.dovecot.daemon import doveconf_values
from mailstack_installer.listeners import first_address
from mailstack_installer.runner import Result
from mailstack_installer.settings import resolve

LIVE_BLOCKS = '# {header}\nlocal_name "mail.live.test" {{\n  ssl_cert = </nowhere\n}}\n'

#: How dovecot.conf reaches the drop-in conf.d/99-mailstack-sni.conf, given the config dir.
STYLES: Dict[str, Callable[[Path], Dict[str, str]]] = {
    "relative": lambda d: {"dovecot.conf": "!include conf.d/*.conf\n"},
    "absolute": lambda d: {"dovecot.conf": f"!include {d}/conf.d/*.conf\n"},
    "include_try quoted": lambda d: {"dovecot.conf": f'!include_try "{d}/conf.d/*.conf"\n'},
    "from local.conf": lambda d: {
        "dovecot.conf": f"!include_try {d}/local.conf\n",
        "local.conf": f"!include {d}/conf.d/99-mailstack-sni.conf\n",
    },
}


def _reachable(conf: str) -> List[str]:
    """Every file the include lines of ``conf`` reach, as Dovecot resolves them."""
    found: List[str] = []
    for line in Path(conf).read_text().splitlines():
        match = re.match(r'^\s*!include(?:_try)?\s+"?([^"\s]+)"?', line)
        if match:
            pattern = os.path.join(os.path.dirname(conf), match.group(1))
            for path in sorted(glob.glob(pattern)):
                found += [path, *_reachable(path)]
    return found


@pytest.mark.parametrize("style", sorted(STYLES))
def test_the_private_copy_reads_its_own_drop_in_at_every_include_style(tmp_path: Path, style: str) -> None:
    config_dir = tmp_path / "dovecot"
    (config_dir / "conf.d").mkdir(parents=True)
    for name, text in STYLES[style](config_dir).items():
        (config_dir / name).write_text(text)
    (config_dir / "conf.d" / "10-ssl.conf").write_text("ssl = yes\n")
    dropin = config_dir / "conf.d" / "99-mailstack-sni.conf"
    dropin.write_text(LIVE_BLOCKS.format(header=HEADER))
    before = {p: p.read_bytes() for p in config_dir.rglob("*") if p.is_file()}
    dovecot = Dovecot(resolve({"dovecot-dir": str(config_dir), "dovecot-syntax": "2.3"}))

    with dovecot.settings_conf() as conf:
        assert not conf.startswith(str(config_dir) + os.sep)
        reached = _reachable(conf)
        copy = os.path.dirname(conf)
        assert reached and all(path.startswith(copy + os.sep) for path in reached)
        assert os.path.join(copy, "conf.d", "99-mailstack-sni.conf") in reached
        assert Path(copy, "conf.d", "99-mailstack-sni.conf").read_text() == f"# {HEADER}\n"

    assert {p: p.read_bytes() for p in config_dir.rglob("*") if p.is_file()} == before


def test_an_included_file_kept_as_a_symlink_is_rewritten_in_the_copy_not_through_it(tmp_path: Path) -> None:
    config_dir, elsewhere = tmp_path / "dovecot", tmp_path / "shared"
    (config_dir / "conf.d").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "local.conf").write_text(f"!include {config_dir}/conf.d/*.conf\n")
    (config_dir / "local.conf").symlink_to(elsewhere / "local.conf")
    (config_dir / "dovecot.conf").write_text("!include_try local.conf\n")
    (config_dir / "conf.d" / "99-mailstack-sni.conf").write_text(LIVE_BLOCKS.format(header=HEADER))
    dovecot = Dovecot(resolve({"dovecot-dir": str(config_dir), "dovecot-syntax": "2.3"}))

    with dovecot.settings_conf() as conf:
        copied = Path(os.path.dirname(conf), "local.conf")
        assert not copied.is_symlink()
        assert str(config_dir) not in copied.read_text()

    assert (elsewhere / "local.conf").read_text() == f"!include {config_dir}/conf.d/*.conf\n"


def test_a_drop_in_outside_the_config_dir_is_validated_in_the_live_tree(tmp_path: Path) -> None:
    """No copy can hold it: the caller swaps it in, validates the live tree and puts it back."""
    config_dir = tmp_path / "dovecot"
    config_dir.mkdir()
    (config_dir / "dovecot.conf").write_text(f"!include {tmp_path}/sni.conf\n")
    options = {"dovecot-dir": str(config_dir), "dovecot-config": str(tmp_path / "sni.conf")}
    dovecot = Dovecot(resolve({**options, "dovecot-syntax": "2.3"}))

    with dovecot.settings_conf() as conf:
        assert conf == str(config_dir / "dovecot.conf")


def test_doveconf_values_of_either_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """2.4 prints nothing for a service limit left unset; 2.3 prints the largest size."""
    printed = {
        "2.4": "default_vsz_limit = 256 M\nlisten = * ::\n",
        "2.3": "service/config/vsz_limit = 18446744073709551615 B\n"
        "default_vsz_limit = 256 M\nlisten = *, ::\n",
    }
    for version, out in printed.items():
        monkeypatch.setattr(dovecot_module.runner, "run", lambda argv, out=out, **kw: Result(0, out, ""))
        values = doveconf_values(
            "/etc/dovecot/dovecot.conf", ["service/config/vsz_limit", "default_vsz_limit", "listen"]
        )
        assert values["default_vsz_limit"] == "256 M", version
        assert first_address(values["listen"]) == "*", version
        assert values["service/config/vsz_limit"] in ("", "18446744073709551615 B"), version


class _Running(dovecot_module.Dovecot):
    """A Dovecot whose running config process has ``running`` MB and whose live drop-in has
    ``live`` blocks (no daemon: the decision only)."""

    def __init__(self, running: int, live: int, syntax: str) -> None:
        self._running, self._live, self._syntax = running, live, syntax

    def is_running(self) -> bool:
        return True

    def running_limit_mb(self, wait: float) -> int:
        return self._running

    def current(self) -> bytes:
        return b"# head\n" + b'\nlocal_name "x" {\n}\n' * self._live

    def syntax(self) -> str:
        return self._syntax


@pytest.mark.parametrize(
    "running, live, blocks, step",
    [
        (2048, 20_000, 20_002, None),  # the running limit holds a reload of both
        (256, 100, 9_000, "reload"),  # grows past it: raise the limit by reload first
        (256, 100, 150, "reload"),  # not needed yet: raised now, while a reload is cheap
        (2048, 100, 9_000, None),  # it has the limit already
        (256, 10_000, 10_002, "restart"),  # even a reload of the live blocks does not fit
    ],
)
def test_24_limit_step(running: int, live: int, blocks: int, step: object) -> None:
    assert _Running(running, live, "2.4").limit_step(2048, blocks) == step


def test_no_limit_no_step() -> None:
    assert _Running(256, 10_000, "2.4").limit_step(None, 20_000) is None
