"""Fixtures for end-to-end tests: real Pebble, certbot, Postfix and Dovecot on 127.0.0.1.

Every daemon a fixture starts is stopped in its ``finally``, whatever the test did.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from mailstack_installer.probe import SERVICES, served_certificate
from tests.lab.certbot import Certbot
from tests.lab.dovecot import DovecotInstance
from tests.lab.pebble import Pebble
from tests.lab.ports import LOCALHOST
from tests.lab.postfix import PostfixInstance

REPO = Path(__file__).resolve().parents[2]
DEBIAN_CERTBOT = "/usr/bin/certbot"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(path: Path) -> str:
    """Fingerprint of the first certificate in a PEM file (the leaf, for cert.pem/fullchain.pem)."""
    import ssl

    text = path.read_text()
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return fingerprint(ssl.PEM_cert_to_DER_cert(text[start:end]))


@dataclass
class Stack:
    """One private Postfix + Dovecot pair and the plugin options that point at it."""

    postfix: PostfixInstance
    dovecot: DovecotInstance

    @property
    def ports(self) -> Dict[str, int]:
        return {**self.postfix.ports, **self.dovecot.ports}

    def options(self) -> List[str]:
        return [
            "--mailstack-postfix-dir",
            str(self.postfix.config_dir),
            "--mailstack-dovecot-dir",
            str(self.dovecot.config_dir),
        ]

    def served(self, server_name: Optional[str]) -> Dict[str, str]:
        """Fingerprint of the leaf each of the seven mail ports serves for ``server_name``."""
        return {
            service: fingerprint(served_certificate(LOCALHOST, port, SERVICES[service][1], server_name))
            for service, port in sorted(self.ports.items())
        }

    def reload_counts(self) -> Dict[str, int]:
        """How often each daemon has reloaded, read from its own log."""
        postfix = sum(
            "reload -- version" in line
            for line in self.postfix.log_path.read_text(errors="replace").splitlines()
        )
        dovecot = self.dovecot.log_path.read_text(errors="replace").count("SIGHUP received - reloading")
        return {"postfix": postfix, "dovecot": dovecot}

    def defaults(self) -> Dict[str, str]:
        """What each port serves without a matching SNI name: its daemon's default certificate."""
        assert self.postfix.default_cert is not None and self.dovecot.default_cert is not None
        postfix, dovecot = (
            pem_fingerprint(self.postfix.default_cert),
            pem_fingerprint(self.dovecot.default_cert),
        )
        return {service: postfix if service in self.postfix.ports else dovecot for service in self.ports}


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble(tmp_path_factory.mktemp("pebble"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This package installed for Debian's certbot, found through CERTBOT_PLUGIN_PATH."""
    target = tmp_path_factory.mktemp("plugin-path")
    build = tmp_path_factory.mktemp("plugin-build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)],
        check=True,
        timeout=300,
        cwd=build,
    )
    return target


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    postfix = PostfixInstance(tmp_path / "pf")
    dovecot = DovecotInstance(tmp_path / "dc")
    try:
        postfix.start()
        dovecot.start()
        yield Stack(postfix, dovecot)
    finally:
        try:
            dovecot.stop()
        finally:
            postfix.stop()


@pytest.fixture(params=["pypi", "debian"])
def certbot(request: pytest.FixtureRequest, pebble: Pebble, tmp_path: Path) -> Certbot:
    """Newest certbot from PyPI (this venv) and Debian's certbot 2.1 with the plugin on its path."""
    if request.param == "pypi":
        return Certbot(pebble, tmp_path / "certbot", command=[os.path.join(sys.prefix, "bin", "certbot")])
    plugin_dir = request.getfixturevalue("plugin_path")
    env = {**os.environ, "CERTBOT_PLUGIN_PATH": str(plugin_dir)}
    env.pop("VIRTUAL_ENV", None)
    return Certbot(pebble, tmp_path / "certbot", command=[DEBIAN_CERTBOT], env=env)
