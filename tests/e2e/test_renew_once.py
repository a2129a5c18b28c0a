"""One reload per renew run, and the bulk import: real certbot, Pebble, Postfix and Dovecot.

``certbot renew`` over K lineages must reload each daemon once (the post hook does it at the end of
the run), whichever path redeploys them: certbot's renew_deploy for lineages it installs with
mailstack, the deploy hook for lineages mapped by ``certbot install`` or ``certbot-mailstack deploy``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.lab.certbot import Certbot
from tests.lab.pebble import Pebble

from .conftest import Stack, pem_fingerprint

pytestmark = pytest.mark.e2e

LINEAGES = ["r1.test", "r2.test", "r3.test"]


def names_of(lineage: str) -> List[str]:
    return [lineage, f"mail.{lineage}"]


def leaves(certbot: Certbot) -> Dict[str, str]:
    return {lin: pem_fingerprint(certbot.live_dir(lin) / "cert.pem") for lin in LINEAGES}


def assert_all_served(stack: Stack, expected: Dict[str, str]) -> None:
    for lineage, want in expected.items():
        for name in names_of(lineage):
            wrong = {svc: fp[:12] for svc, fp in stack.served(name).items() if fp != want}
            assert not wrong, f"{name}: ports serving another certificate: {wrong}"


def pypi_certbot(pebble: Pebble, tmp_path: Path) -> Certbot:
    return Certbot(pebble, tmp_path / "certbot", command=[os.path.join(sys.prefix, "bin", "certbot")])


def mailstack(certbot: Certbot, stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the certbot-mailstack command of this environment against the test stack."""
    return subprocess.run(
        [os.path.join(sys.prefix, "bin", "certbot-mailstack"), *args, "--config-dir", str(certbot.config_dir),
         "--postfix-dir", str(stack.postfix.config_dir), "--dovecot-dir", str(stack.dovecot.config_dir)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def renew_and_count(certbot: Certbot, stack: Stack, *extra: str) -> Dict[str, int]:
    before = stack.reload_counts()
    certbot.env["PATH"] = "/usr/bin:/bin"  # cron's PATH
    certbot.run("renew", "--force-renewal", *extra)
    after = stack.reload_counts()
    return {daemon: after[daemon] - before[daemon] for daemon in after}


def test_renew_of_installer_lineages_reloads_each_daemon_once(certbot: Certbot, stack: Stack) -> None:
    for lineage in LINEAGES:
        certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", ",".join(names_of(lineage)),
                    "--cert-name", lineage, *stack.options())  # fmt: skip
    old = leaves(certbot)
    assert_all_served(stack, old)

    assert renew_and_count(certbot, stack) == {"postfix": 1, "dovecot": 1}

    new = leaves(certbot)
    assert all(new[lin] != old[lin] for lin in LINEAGES)
    assert_all_served(stack, new)


def test_renew_of_bulk_imported_lineages_reloads_each_daemon_once(certbot: Certbot, stack: Stack) -> None:
    for lineage in LINEAGES:
        certbot.run("certonly", *certbot.webroot_args(), "-d", ",".join(names_of(lineage)),
                    "--cert-name", lineage)  # fmt: skip
    before = stack.reload_counts()
    proc = mailstack(certbot, stack, "deploy", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "deployed 3 of 3 lineage(s), 6 name(s); 0 failed" in proc.stdout
    after = stack.reload_counts()
    assert {d: after[d] - before[d] for d in after} == {"postfix": 1, "dovecot": 1}
    old = leaves(certbot)
    assert_all_served(stack, old)
    for kind in ("deploy", "post"):
        assert os.access(certbot.config_dir / "renewal-hooks" / kind / "mailstack", os.X_OK)

    assert renew_and_count(certbot, stack) == {"postfix": 1, "dovecot": 1}

    new = leaves(certbot)
    assert all(new[lin] != old[lin] for lin in LINEAGES)
    assert_all_served(stack, new)


def test_renew_without_directory_hooks_still_serves_every_renewed_certificate(
    pebble: Pebble, stack: Stack, tmp_path: Path
) -> None:
    """--no-directory-hooks: no post hook will run, so the installer reloads at once."""
    certbot = pypi_certbot(pebble, tmp_path)
    for lineage in LINEAGES[:2]:
        certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", ",".join(names_of(lineage)),
                    "--cert-name", lineage, *stack.options())  # fmt: skip
    old = {lin: pem_fingerprint(certbot.live_dir(lin) / "cert.pem") for lin in LINEAGES[:2]}

    counts = renew_and_count(certbot, stack, "--no-directory-hooks")

    assert counts["postfix"] >= 1 and counts["dovecot"] >= 1
    new = {lin: pem_fingerprint(certbot.live_dir(lin) / "cert.pem") for lin in LINEAGES[:2]}
    assert all(new[lin] != old[lin] for lin in new)
    assert_all_served(stack, new)


def test_bulk_import_skips_a_broken_lineage_and_maps_the_rest(
    pebble: Pebble, stack: Stack, tmp_path: Path
) -> None:
    certbot = pypi_certbot(pebble, tmp_path)
    for lineage in LINEAGES[:2]:
        certbot.run("certonly", *certbot.webroot_args(), "-d", ",".join(names_of(lineage)),
                    "--cert-name", lineage)  # fmt: skip
    broken = certbot.live_dir("broken.test")  # a key that does not match its certificate
    broken.mkdir()
    shutil.copy(certbot.live_dir(LINEAGES[0]) / "fullchain.pem", broken / "fullchain.pem")
    shutil.copy(certbot.live_dir(LINEAGES[1]) / "privkey.pem", broken / "privkey.pem")

    proc = mailstack(certbot, stack, "deploy", "--all")

    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "broken.test" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "deployed 2 of 3 lineage(s), 4 name(s); 1 failed" in proc.stdout
    expected = {lin: pem_fingerprint(certbot.live_dir(lin) / "cert.pem") for lin in LINEAGES[:2]}
    assert_all_served(stack, expected)
