"""certbot-mailstack verify and status against real Pebble, certbot, Postfix and Dovecot on loopback.

What verify reports is cross-checked with ``openssl s_client`` on the same cells.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from mailstack_installer.probe import SERVICES, ProbeError, served_certificate
from tests.lab.certbot import Certbot
from tests.lab.handshake import served_leaf_pem
from tests.lab.pebble import Pebble
from tests.lab.ports import LOCALHOST, free_port

from .conftest import Stack, fingerprint, pem_fingerprint

pytestmark = pytest.mark.e2e

COMMAND = os.path.join(sys.prefix, "bin", "certbot-mailstack")
DOVECOT_SERVICES = ("imap", "imaps", "pop3", "pop3s")
NAMES = {"a.test": ["a.test", "mail.a.test"], "b.test": ["b.test"]}


@pytest.fixture
def ca_file(pebble: Pebble, tmp_path: Path) -> str:
    """Pebble's root only: the served full chain carries the intermediate (a CA file that also held
    the intermediate would make a leaf-only chain verify)."""
    path = tmp_path / "pebble-root.pem"
    path.write_bytes(pebble.root_ca_pem())
    return str(path)


@pytest.fixture
def deployed(certbot: Certbot, stack: Stack) -> Certbot:
    for lineage, names in NAMES.items():
        certbot.run(
            "run", *certbot.webroot_args(), "-i", "mailstack", "-d", ",".join(names),
            "--cert-name", lineage, *stack.options(),
        )  # fmt: skip
    return certbot


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never says a word."""
    with socket.create_server((LOCALHOST, 0), backlog=64) as listener:
        yield listener.getsockname()[1]


def lab_ports(stack: Stack, **override: int) -> str:
    ports = {**stack.ports, **override}
    return ",".join(f"{service}={port}" for service, port in sorted(ports.items()))


def command(certbot: Certbot, *args: str, timeout: float = 120) -> Tuple[int, dict, str]:
    proc = subprocess.run(
        [COMMAND, *args, "--config-dir", str(certbot.config_dir), "--json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


def verify(certbot: Certbot, stack: Stack, ca_file: str, *args: str, **ports: int) -> Tuple[int, dict, str]:
    return command(certbot, "verify", "--ports", lab_ports(stack, **ports), "--ca-file", ca_file, *args)


def cells(doc: dict) -> Dict[Tuple[str, str], dict]:
    return {(c["name"], c["service"]): c for c in doc["checks"]}


def leaf(certbot: Certbot, lineage: str, file: str = "cert.pem") -> str:
    return pem_fingerprint(certbot.live_dir(lineage) / file)


def openssl_leaf(stack: Stack, service: str, name: str) -> str:
    pem = served_leaf_pem(LOCALHOST, stack.ports[service], SERVICES[service][1], name)
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def dropin(stack: Stack) -> Path:
    return stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf"


def edit_dropin_and_reload(
    stack: Stack, text: str, edits: List[Tuple[str, str]], name: str, expect: str
) -> None:
    """Write the plugin's Dovecot drop-in as ``text`` with ``edits``, as an admin would by hand; reload,
    and wait until ``name`` gets the leaf ``expect`` on IMAPS."""
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    dropin(stack).write_text(text)
    stack.dovecot.reload()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            served = served_certificate(LOCALHOST, stack.ports["imaps"], "tls", name, timeout=5)
            if fingerprint(served) == expect:
                return
        except ProbeError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"Dovecot did not serve {expect[:12]} for {name} after the reload")


@pytest.mark.parametrize("certbot", ["pypi"], indirect=True)
def test_a_correct_deployment_verifies_clean_on_all_seven_ports_and_agrees_with_openssl(
    deployed: Certbot, stack: Stack, ca_file: str, silent_port: int
) -> None:
    certbot = deployed
    code, doc, err = verify(certbot, stack, ca_file)
    assert (code, err) == (0, "")
    assert doc["summary"] == {"ok": 21, "problem": 0, "error": 0, "skipped": 0}
    expected = {lineage: leaf(certbot, lineage) for lineage in NAMES}
    for (name, _service), cell in cells(doc).items():
        lineage = "b.test" if name == "b.test" else "a.test"
        assert (cell["served"], cell["expected"], cell["match"]) == (expected[lineage],) * 2 + (True,)
        assert cell["chain_verified"] and cell["hostname_match"] and cell["protocol"].startswith("TLSv1.")
        assert cell["days_left"] > 300, "Pebble issues certificates for years"
    for name, service in [("mail.a.test", "submission"), ("b.test", "imaps"), ("a.test", "pop3")]:
        assert cells(doc)[name, service]["served"] == openssl_leaf(stack, service, name)
    defaults = stack.defaults()
    assert {p["service"]: p["served"] for p in doc["ports"]} == defaults
    assert all(p["status"] == "ok" and p["chain_verified"] is False for p in doc["ports"])  # self-signed

    assert command(certbot, "status")[:2][0] == 0

    # Expiry: Pebble's certificates live for years, so a long horizon flags every cell.
    code, doc, _ = verify(certbot, stack, ca_file, "--expiry-days", "3000")
    assert code == 1 and {tuple(c["problems"]) for c in doc["checks"]} == {("expiring",)}
    assert command(certbot, "status", "--expiry-days", "3000")[0] == 1

    # A closed port is skipped; a port that accepts and never answers is an error within the timeout.
    started = time.monotonic()
    code, doc, _ = verify(
        certbot, stack, ca_file, "--timeout", "2", "a.test", imaps=free_port(), smtp=silent_port
    )
    elapsed = time.monotonic() - started
    by_service = {service: cell for (name, service), cell in cells(doc).items()}
    assert by_service["imaps"]["status"] == "skipped"
    assert by_service["smtp"]["status"] == "error" and "timed out" in by_service["smtp"]["detail"]
    assert {c["status"] for s, c in by_service.items() if s not in ("imaps", "smtp")} == {"ok"}
    assert code == 2 and elapsed < 2 + 6, elapsed  # one timeout (the port is settled once), plus start-up


@pytest.mark.parametrize("certbot", ["pypi"], indirect=True)
def test_a_wrong_certificate_and_a_leaf_only_chain_are_flagged(
    deployed: Certbot, stack: Stack, ca_file: str
) -> None:
    certbot = deployed
    live_a, live_b = certbot.live_dir("a.test"), certbot.live_dir("b.test")
    leaf_a, leaf_b = leaf(certbot, "a.test"), leaf(certbot, "b.test")
    deployed_dropin = dropin(stack).read_text()

    # b.test is served a.test's certificate by Dovecot; Postfix still has it right.
    wrong = [
        (f"{live_b}/fullchain.pem", f"{live_a}/fullchain.pem"),
        (f"{live_b}/privkey.pem", f"{live_a}/privkey.pem"),
    ]
    edit_dropin_and_reload(stack, deployed_dropin, wrong, "b.test", leaf_a)
    code, doc, _ = verify(certbot, stack, ca_file)
    assert code == 1
    for (name, service), cell in cells(doc).items():
        if name == "b.test" and service in DOVECOT_SERVICES:
            assert cell["problems"] == ["wrong_certificate", "hostname_mismatch"], cell
            assert (cell["served"], cell["expected"]) == (leaf_a, leaf_b)
            assert cell["served"] == openssl_leaf(stack, service, name)
        else:
            assert cell["status"] == "ok", cell
    assert cells(doc)["b.test", "smtps"]["served"] == openssl_leaf(stack, "smtps", "b.test") == leaf_b
    code, status, _ = command(certbot, "status")
    assert code == 1
    assert [(n["name"], n["dovecot"]) for n in status["names"] if n["status"] != "ok"] == [
        ("b.test", "other")
    ]

    # Put b.test right again, and serve a.test without its intermediate.
    leaf_only = [(f"{live_a}/fullchain.pem", f"{live_a}/cert.pem")]
    edit_dropin_and_reload(stack, deployed_dropin, leaf_only, "b.test", leaf_b)
    code, doc, _ = verify(certbot, stack, ca_file, "a.test", "b.test")
    assert code == 1
    for (name, service), cell in cells(doc).items():
        if name == "a.test" and service in DOVECOT_SERVICES:
            assert cell["problems"] == ["chain_not_verified"] and cell["match"] is True, cell
            assert "issuer" in cell["chain_error"]
        else:
            assert cell["status"] == "ok", cell
