"""Fixtures for the real-host suite: booted Debian systems with the distribution's own daemons.

Roots come from tests/hosts/make-root.sh (built once and kept in ``MAILSTACK_HOSTS_DIR``); once
per run each gets the plugin installed exactly as the README tells Debian users; every test boots
its own copy, and the copy is killed and deleted when the test ends, whatever it did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.hosts.machine import Machine

REPO = Path(__file__).resolve().parents[2]
HOSTS_DIR = Path(os.environ.get("MAILSTACK_HOSTS_DIR", "/var/tmp/mailstack-hosts"))
PLUGIN_PATH = "/usr/local/lib/certbot-plugins"
GUEST = "/root/mailstack-tests"


@dataclass(frozen=True)
class Kind:
    release: str  # bookworm (Debian 12: Dovecot 2.3) or trixie (Debian 13: Dovecot 2.4)
    init: str  # systemd or openrc

    @property
    def name(self) -> str:
        return f"{self.release}-{self.init}"

    @property
    def dovecot(self) -> str:
        return "2.4" if self.release == "trixie" else "2.3"


KINDS = [Kind("trixie", "systemd"), Kind("bookworm", "systemd"), Kind("bookworm", "openrc")]

_IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def _base_root(kind: Kind) -> Path:
    """The root make-root.sh builds for ``kind`` (make-roots.sh builds the missing or stale ones)."""
    subprocess.run(["bash", str(REPO / "tests/hosts/make-roots.sh")], check=True)
    return HOSTS_DIR / kind.name


def _prepare(kind: Kind, into: Path) -> Path:
    """A copy of the base root with the plugin installed as the README says for Debian's certbot."""
    root = into / kind.name
    subprocess.run(["cp", "-a", "--reflink=auto", str(_base_root(kind)), str(root)], check=True)
    shutil.copytree(REPO, root / "root/certbot-mailstack", ignore=_IGNORED)
    shutil.copytree(REPO / "tests/hosts/guest", root / GUEST.lstrip("/"))
    chroot = ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
    # README, "Use on a mail server", Debian's certbot package:
    pip = ["python3", "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*chroot, *pip,
                    "--target", PLUGIN_PATH, "/root/certbot-mailstack"], check=True)  # fmt: skip
    if kind.init == "systemd":  # what `systemctl edit certbot.service` writes
        dropin = root / "etc/systemd/system/certbot.service.d/override.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(f"[Service]\nEnvironment=CERTBOT_PLUGIN_PATH={PLUGIN_PATH}\n")
    else:  # cron reads /etc/environment through pam_env
        with open(root / "etc/environment", "a", encoding="utf-8") as handle:
            handle.write(f"CERTBOT_PLUGIN_PATH={PLUGIN_PATH}\n")
    return root


class PreparedRoots:
    """The prepared roots of this run, each made on first use and deleted at the end."""

    def __init__(self, into: Path) -> None:
        self.into = into
        self.made: Dict[str, Path] = {}

    def get(self, kind: Kind) -> Path:
        if kind.name not in self.made:
            self.made[kind.name] = _prepare(kind, self.into)
        return self.made[kind.name]


@pytest.fixture(scope="session")
def prepared_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreparedRoots]:
    roots = PreparedRoots(tmp_path_factory.mktemp("roots"))
    try:
        yield roots
    finally:
        shutil.rmtree(roots.into, ignore_errors=True)


def booted_with(init: str) -> pytest.MarkDecorator:
    """Run a test on the hosts booted with ``init`` only ("systemd" or "openrc")."""
    kinds = [k for k in KINDS if k.init == init]
    return pytest.mark.parametrize("kind", kinds, indirect=True, ids=[k.name for k in kinds])


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    param: Kind = request.param
    return param


@pytest.fixture
def machine(kind: Kind, prepared_roots: PreparedRoots, tmp_path: Path) -> Iterator[Machine]:
    """A booted copy of the prepared root for ``kind``; killed and deleted after the test."""
    host = Machine(prepared_roots.get(kind), tmp_path, kind.init, f"mh-{os.getpid()}")
    try:
        host.copy()
        host.boot()
        yield host
    finally:
        host.destroy()
