"""Fixtures for the real-host suite: booted Debian systems with the distribution's own daemons.

Roots come from tests/hosts/make-root.sh (built once and kept in ``MAILSTACK_HOSTS_DIR``); once
per run each gets the release's python3-certbot-mailstack package that scripts/build-deb.sh built
from this tree; every test boots its own copy, installs the package there with apt as the README
tells Debian users (nothing else: no CERTBOT_PLUGIN_PATH, no PYTHONPATH), and the copy is killed and
deleted when the test ends, whatever it did.
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
GUEST = "/root/mailstack-tests"
#: Where each booted host finds the package built for its release.
DEBS = "/root/debs"


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


def _package(release: str) -> Path:
    """python3-certbot-mailstack built from this tree for ``release`` (build-deb.sh skips the build
    when its output already holds this tree's package)."""
    out = Path(os.environ.get("MAILSTACK_DEB_DIR", REPO / "dist/deb")) / release
    subprocess.run(["bash", str(REPO / "scripts/build-deb.sh"), release, str(out)], check=True)
    (deb,) = out.glob("python3-certbot-mailstack_*_all.deb")
    return deb


def _prepare(kind: Kind, into: Path) -> Path:
    """A copy of the base root with this tree's package for its release (not installed yet: each
    booted host installs it with apt), this tree (for debian/tests) and the test helpers."""
    root = into / kind.name
    subprocess.run(["cp", "-a", "--reflink=auto", str(_base_root(kind)), str(root)], check=True)
    shutil.copytree(REPO, root / "root/certbot-mailstack", ignore=_IGNORED)
    shutil.copytree(REPO / "tests/hosts/guest", root / GUEST.lstrip("/"))
    deb = _package(kind.release)
    (root / DEBS.lstrip("/")).mkdir()
    shutil.copy(deb, root / DEBS.lstrip("/") / deb.name)
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


def install_package(host: Machine) -> None:
    """README, "Use on a mail server", Debian: the package, with apt (offline: its dependencies,
    certbot among them, are the distribution's and already there)."""
    host.run(f"cd {DEBS} && apt-get install -y -q --no-install-recommends ./python3-certbot-mailstack_*.deb")


@pytest.fixture
def bare_machine(kind: Kind, prepared_roots: PreparedRoots, tmp_path: Path) -> Iterator[Machine]:
    """A booted copy of the prepared root for ``kind``, without the package; killed and deleted
    after the test."""
    host = Machine(prepared_roots.get(kind), tmp_path, kind.init, f"mh-{os.getpid()}")
    try:
        host.copy()
        host.boot()
        yield host
    finally:
        host.destroy()


@pytest.fixture
def machine(bare_machine: Machine) -> Machine:
    """A booted host with the package installed by apt."""
    install_package(bare_machine)
    return bare_machine
