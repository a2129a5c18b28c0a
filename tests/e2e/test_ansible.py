"""The Ansible collection (ansible/): its playbook and modules driving real certbot-mailstack, Postfix
and Dovecot, with certificates from real certbot and Pebble. The node is this machine (connection
local; the booted fleet over SSH is tests/hosts/test_fleet.py): changed only when what the daemons
serve changes, check mode, one lineage per renewal, a node with Dovecot stopped fails and keeps its
previous files and configuration, and no key in the output even at -vvv."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.lab.certbot import Certbot
from tests.lab.pebble import Pebble

from .conftest import REPO, Stack, pem_fingerprint

pytestmark = pytest.mark.e2e

LINEAGES = ("f1.test", "f2.test", "f3.test")
PLAYBOOK = "mailstack.fleet.deploy"
ZERO = {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0, "rescued": 0, "ignored": 0}


class Play:
    """ansible-playbook of this environment, with the collection from this tree and one node:
    localhost, whose mail stack is the lab's and whose certbot config dir is ``node_dir``."""

    def __init__(self, issuer: Certbot, stack: Stack, pebble: Pebble, tmp_path: Path) -> None:
        self.node_dir = tmp_path / "node-letsencrypt"
        ca_file = tmp_path / "pebble-root.pem"
        ca_file.write_bytes(pebble.root_ca_pem())
        ports = ",".join(f"{service}={port}" for service, port in sorted(stack.ports.items()))
        self.inventory = tmp_path / "inventory.ini"
        self.inventory.write_text(
            f"[mailnodes]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        )
        self.extra = tmp_path / "vars.json"
        self.extra.write_text(json.dumps({
            "mailstack_issuer_config_dir": str(issuer.config_dir),
            "mailstack_config_dir": str(self.node_dir),
            "mailstack_executable": os.path.join(sys.prefix, "bin", "certbot-mailstack"),
            "mailstack_options": {"postfix-dir": str(stack.postfix.config_dir),
                                  "dovecot-dir": str(stack.dovecot.config_dir)},
            "mailstack_verify_ports": ports,
            "mailstack_verify_ca_file": str(ca_file),
        }))  # fmt: skip
        self.env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible"), "LC_ALL": "C.UTF-8",
                    "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [os.path.join(sys.prefix, "bin", "ansible-playbook"), "-i", str(self.inventory), PLAYBOOK,
             "-e", f"@{self.extra}", *args],
            capture_output=True, text=True, timeout=600, env=self.env, check=False,
        )  # fmt: skip

    def recap(self, *args: str, failed: int = 0) -> Dict[str, int]:
        proc = self.run(*args)
        match = re.search(r"^localhost\s+:\s+(.*)$", proc.stdout, re.M)
        assert match, proc.stdout + proc.stderr
        counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}
        assert counts["failed"] == failed and counts["unreachable"] == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        self.last = proc
        return counts

    def files(self) -> Dict[str, str]:
        """Each lineage file on the node by content."""
        return {
            str(path.relative_to(self.node_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((self.node_dir / "live").glob("*/*.pem"))
        }


@pytest.fixture
def issuer(pebble: Pebble, tmp_path: Path) -> Certbot:
    certbot = Certbot(pebble, tmp_path / "issuer", command=[os.path.join(sys.prefix, "bin", "certbot")])
    for lineage in LINEAGES:
        certbot.run("certonly", *certbot.webroot_args(), "-d", f"mail.{lineage}", "--cert-name", lineage)
    return certbot


def leaf(issuer: Certbot, lineage: str) -> str:
    return pem_fingerprint(issuer.live_dir(lineage) / "cert.pem")


def assert_served(stack: Stack, issuer: Certbot) -> None:
    for lineage in LINEAGES:
        served = stack.served(f"mail.{lineage}")
        assert set(served.values()) == {leaf(issuer, lineage)}, f"mail.{lineage}: {served}"


def postfix_files(stack: Stack) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in stack.postfix.config_dir.glob("*") if p.is_file()}


def key_lines(issuer: Certbot) -> List[str]:
    """The base64 lines of every private key on the issuer: none may appear in Ansible's output."""
    return [line for lineage in LINEAGES
            for line in (issuer.live_dir(lineage) / "privkey.pem").read_text().splitlines()
            if line and not line.startswith("-----")]  # fmt: skip


def test_the_playbook_deploys_is_idempotent_rolls_one_lineage_and_fails_alone(
    issuer: Certbot, stack: Stack, pebble: Pebble, tmp_path: Path
) -> None:
    play = Play(issuer, stack, pebble, tmp_path)

    # From scratch: deployed, verified by handshakes on all seven ports; the keys 0600.
    assert play.recap() == {**ZERO, "ok": 2, "changed": 1}  # deployed, then verified
    assert_served(stack, issuer)
    for lineage in LINEAGES:
        assert (play.node_dir / "live" / lineage / "privkey.pem").stat().st_mode & 0o777 == 0o600

    # The second run changes nothing.
    before = play.files()
    assert play.recap() == {**ZERO, "ok": 1, "skipped": 1}  # nothing deployed: nothing to verify
    assert play.files() == before
    assert play.recap("-e", "mailstack_verify_all=true") == {**ZERO, "ok": 2}  # every mapped name

    # One lineage renewed on the issuer: check mode says it would change and changes nothing ...
    issuer.run("renew", "--force-renewal", "--cert-name", "f2.test", "--no-directory-hooks")
    assert play.recap("--check", "-e", "mailstack_cert_names=f2.test") == {**ZERO, "ok": 1, "changed": 1,
                                                                          "skipped": 1}  # fmt: skip
    assert play.files() == before
    # ... and the play for that lineage changes its files only, and serves it; no key in the
    # output even at -vvv.
    assert play.recap("-vvv", "-e", "mailstack_cert_names=f2.test")["changed"] == 1
    after = play.files()
    assert {path for path in after if after[path] != before[path]} == {
        "live/f2.test/fullchain.pem", "live/f2.test/privkey.pem"}  # fmt: skip
    assert_served(stack, issuer)
    output = play.last.stdout + play.last.stderr
    assert not [line for line in key_lines(issuer) if line in output], "a private key reached the output"

    # Dovecot stopped: the node fails with one clear reason, its files and configuration as they were.
    issuer.run("renew", "--force-renewal", "--cert-name", "f3.test", "--no-directory-hooks")
    stack.dovecot.stop()
    postfix_before = {p.name: p.read_bytes() for p in stack.postfix.config_dir.glob("*") if p.is_file()}
    play.recap("-e", "mailstack_cert_names=f3.test", failed=1)
    assert "dovecot not running: nothing changed" in play.last.stdout
    assert play.files() == after
    assert {
        p.name: p.read_bytes() for p in stack.postfix.config_dir.glob("*") if p.is_file()
    } == postfix_before
