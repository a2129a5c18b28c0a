"""Every Postfix table type an SNI map can use, end to end: certbot (PyPI) -> Pebble -> -i mailstack
-> a real Postfix, judged by TLS handshakes on the Postfix ports.

hash and btree need Berkeley DB, lmdb and cdb the postfix-lmdb and postfix-cdb packages; ``auto``
follows ``default_database_type``. One certbot flavour only: the type is Postfix's business, and the
certbot versions are covered by test_installer.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Sequence

import pytest

from mailstack_installer.constants import MAP_SUFFIXES
from mailstack_installer.probe import SERVICES, served_certificate
from tests.lab.certbot import Certbot
from tests.lab.pebble import Pebble
from tests.lab.ports import LOCALHOST

from .conftest import Stack, fingerprint, pem_fingerprint

pytestmark = pytest.mark.e2e

MAP = "tls_server_sni_maps"
A_NAMES, B_NAMES = ("a.test", "mail.a.test"), ("b.test", "mail.b.test")


@pytest.fixture
def pypi_certbot(pebble: Pebble, tmp_path: Path) -> Certbot:
    """The newest certbot, from this venv."""
    return Certbot(pebble, tmp_path / "certbot", command=[os.path.join(sys.prefix, "bin", "certbot")])


def postfix_served(stack: Stack, name: str) -> Dict[str, str]:
    """Fingerprint of the leaf each Postfix port (smtp, submission, smtps) serves for ``name``."""
    return {
        service: fingerprint(served_certificate(LOCALHOST, port, SERVICES[service][1], name))
        for service, port in sorted(stack.postfix.ports.items())
    }


def assert_postfix_serves(stack: Stack, names: Sequence[str], expected: str, timeout: float = 10.0) -> None:
    """Every Postfix port serves ``expected`` for each name (waiting out a reload in progress)."""
    deadline = time.monotonic() + timeout
    while True:
        wrong = {
            name: {service: fp[:12] for service, fp in postfix_served(stack, name).items() if fp != expected}
            for name in names
        }
        wrong = {name: ports for name, ports in wrong.items() if ports}
        if not wrong:
            return
        assert time.monotonic() < deadline, f"Postfix ports serving another certificate: {wrong}"
        time.sleep(0.2)


def leaf(certbot: Certbot, lineage: str) -> str:
    return pem_fingerprint(certbot.live_dir(lineage) / "cert.pem")


def tables(stack: Stack) -> Dict[str, int]:
    """Compiled map files beside the sources (lock files aside), with their permission bits."""
    return {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in stack.postfix.config_dir.iterdir()
        if path.name.startswith(f"{MAP}.") and path.name.endswith(tuple(MAP_SUFFIXES.values()))
    }


def deploy(certbot: Certbot, stack: Stack, lineage: str, names: Sequence[str], *extra: str) -> None:
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", ",".join(names),
                "--cert-name", lineage, *stack.options(), *extra)  # fmt: skip


@pytest.mark.parametrize("map_type", list(MAP_SUFFIXES))
def test_each_map_type_serves_each_lineage_and_a_renewal(
    map_type: str, pypi_certbot: Certbot, stack: Stack
) -> None:
    certbot, source = pypi_certbot, stack.postfix.config_dir / MAP
    table = f"{MAP}{MAP_SUFFIXES[map_type]}"
    deploy(certbot, stack, "a.test", A_NAMES, "--mailstack-postfix-map-type", map_type)
    deploy(certbot, stack, "b.test", B_NAMES, "--mailstack-postfix-map-type", map_type)

    assert stack.postfix.postconf("-h", MAP).strip() == f"{map_type}:{source}"
    assert tables(stack) == {table: 0o600}
    old_a, old_b = leaf(certbot, "a.test"), leaf(certbot, "b.test")
    assert old_a != old_b
    assert_postfix_serves(stack, A_NAMES, old_a)
    assert_postfix_serves(stack, B_NAMES, old_b)
    assert (
        f"mailstack_postfix_map_type = {map_type}"
        in (certbot.config_dir / "renewal" / "b.test.conf").read_text()
    )

    certbot.run("renew", "--force-renewal", "--cert-name", "b.test")

    new_b = leaf(certbot, "b.test")
    assert new_b != old_b
    assert_postfix_serves(stack, B_NAMES, new_b)
    assert_postfix_serves(stack, A_NAMES, old_a)
    assert stack.postfix.postconf("-h", MAP).strip() == f"{map_type}:{source}"
    assert tables(stack) == {table: 0o600}
    assert stat.S_IMODE(source.stat().st_mode) == 0o600


def test_auto_follows_postfix_default_database_type(pypi_certbot: Certbot, stack: Stack) -> None:
    stack.postfix.postconf("-e", "default_database_type = lmdb")
    deploy(pypi_certbot, stack, "c.test", ("c.test",))  # no --mailstack-postfix-map-type: auto

    source = stack.postfix.config_dir / MAP
    assert stack.postfix.postconf("-h", MAP).strip() == f"lmdb:{source}"
    assert tables(stack) == {f"{MAP}.lmdb": 0o600}
    assert_postfix_serves(stack, ["c.test"], leaf(pypi_certbot, "c.test"))


@pytest.fixture
def postfix_without_lmdb(stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    """The lab Postfix with lmdb support really gone: ``meta_directory`` points at a copy of the
    packaged one whose dynamicmaps.cf lacks the lmdb line, so postconf -m and postmap lose it."""
    meta = Path(stack.postfix.postconf("-h", "meta_directory").strip())
    copy = tmp_path / "meta-without-lmdb"
    shutil.copytree(meta, copy, symlinks=True)
    for maps in [copy / "dynamicmaps.cf", *sorted((copy / "dynamicmaps.cf.d").glob("*"))]:
        if maps.is_file():
            kept = [line for line in maps.read_text().splitlines(True) if line.split()[:1] != ["lmdb"]]
            maps.write_text("".join(kept))
    stack.postfix.postconf("-e", f"meta_directory = {copy}")
    try:
        yield stack
    finally:
        stack.postfix.postconf("-X", "meta_directory")


def test_map_type_this_postfix_lacks_is_refused_with_one_line(
    pypi_certbot: Certbot, postfix_without_lmdb: Stack
) -> None:
    stack = postfix_without_lmdb
    types = stack.postfix.postconf("-m").split()
    assert "lmdb" not in types and "cdb" in types
    main_cf = (stack.postfix.config_dir / "main.cf").read_bytes()
    files = sorted(p.name for p in stack.postfix.config_dir.iterdir())

    certbot = pypi_certbot
    result = certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "d.test",
                         *stack.options(), "--mailstack-postfix-map-type", "lmdb", check=False)  # fmt: skip

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "map type lmdb" in line]
    assert len(lines) == 1, result.stderr
    assert "postfix-lmdb" in lines[0] and "use --postfix-map-type cdb" in lines[0], lines[0]
    assert (stack.postfix.config_dir / "main.cf").read_bytes() == main_cf
    assert sorted(p.name for p in stack.postfix.config_dir.iterdir()) == files  # no map, no leftovers
    assert not (stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf").exists()
    assert_postfix_serves(stack, ["d.test"], stack.defaults()["smtp"])  # Postfix's default certificate


def table_identities(stack: Stack) -> Dict[str, tuple]:
    return {
        name: (
            os.stat(stack.postfix.config_dir / name).st_ino,
            os.stat(stack.postfix.config_dir / name).st_mtime_ns,
        )
        for name in tables(stack)
    }


def test_a_split_map_serves_every_lineage_and_a_renewal_rebuilds_one_table(
    pypi_certbot: Certbot, stack: Stack
) -> None:
    """The map split into tables (as on a host past 1,024 names, forced here to 4): the split of a
    one-table map, every lineage served from its table on every Postfix port, and a renewal that
    replaces only the table holding the renewed lineage's entries."""
    certbot, config_dir = pypi_certbot, stack.postfix.config_dir
    deploy(certbot, stack, "a.test", A_NAMES)
    assert tables(stack) == {f"{MAP}.db": 0o600}

    deploy(certbot, stack, "b.test", B_NAMES, "--mailstack-postfix-map-tables", "4")
    deploy(certbot, stack, "c.test", ("c.test", "mail.c.test"))  # the count is kept in the state

    split = [f"hash:{config_dir / MAP}.{index}" for index in range(4)]
    assert stack.postfix.postconf("-h", MAP).strip() == ", ".join(split)
    assert tables(stack) == {f"{MAP}.{index}.db": 0o600 for index in range(4)}
    assert not (config_dir / MAP).exists()  # the one-table map is gone with the split
    sources = "".join((config_dir / f"{MAP}.{index}").read_text() for index in range(4))
    assert sorted(line.split()[0] for line in sources.splitlines() if not line.startswith("#")) == sorted(
        A_NAMES + B_NAMES + ("c.test", "mail.c.test")
    )
    old = {lineage: leaf(certbot, lineage) for lineage in ("a.test", "b.test", "c.test")}
    assert len(set(old.values())) == 3
    assert_postfix_serves(stack, A_NAMES, old["a.test"])
    assert_postfix_serves(stack, B_NAMES, old["b.test"])
    assert_postfix_serves(stack, ("c.test", "mail.c.test"), old["c.test"])
    before = table_identities(stack)

    certbot.run("renew", "--force-renewal", "--cert-name", "b.test")

    new_b = leaf(certbot, "b.test")
    assert new_b != old["b.test"]
    assert_postfix_serves(stack, B_NAMES, new_b)
    assert_postfix_serves(stack, A_NAMES, old["a.test"])
    assert_postfix_serves(stack, ("c.test", "mail.c.test"), old["c.test"])
    after = table_identities(stack)
    assert sum(after[name] != before[name] for name in before) == 1, (before, after)
    assert tables(stack) == {f"{MAP}.{index}.db": 0o600 for index in range(4)}
