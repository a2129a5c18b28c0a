"""Issue 6: `certbot-mailstack remove` for a customer who leaves, and `--mailstack-verify`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.certbot import Certbot

from .conftest import Stack, pem_fingerprint

pytestmark = pytest.mark.e2e

CLI = os.path.join(sys.prefix, "bin", "certbot-mailstack")


@pytest.mark.parametrize("certbot", ["pypi"], indirect=True)
def test_remove_unmaps_a_name_and_a_whole_lineage_from_both_daemons(certbot: Certbot, stack: Stack) -> None:
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "r.test,mail.r.test",
                "--cert-name", "r.test", *stack.options())  # fmt: skip
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "s.test,mail.s.test",
                "--cert-name", "s.test", *stack.options())  # fmt: skip
    fp_r = pem_fingerprint(certbot.live_dir("r.test") / "cert.pem")

    def remove(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, "remove", "--config-dir", str(certbot.config_dir), *args],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    done = remove("mail.r.test")
    assert done.returncode == 0, done.stderr
    assert stack.served("mail.r.test") == stack.defaults()
    assert set(stack.served("r.test").values()) == {fp_r}

    done = remove("--cert-name", "s.test")
    assert done.returncode == 0, done.stderr
    for name in ("s.test", "mail.s.test"):
        assert stack.served(name) == stack.defaults()
    assert "s.test" not in (stack.postfix.config_dir / "tls_server_sni_maps").read_text()

    missing = remove("never.test")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "never.test is not mapped" in missing.stderr


@pytest.mark.parametrize("certbot", ["pypi"], indirect=True)
def test_mailstack_verify_checks_after_deploy_and_renewal(
    certbot: Certbot, stack: Stack, tmp_path: Path
) -> None:
    # The test CA stands in for the system trust store, as Let's Encrypt's root does on a server.
    roots = tmp_path / "pebble-root.pem"
    roots.write_bytes(certbot.pebble.root_ca_pem())
    certbot.env["SSL_CERT_FILE"] = str(roots)
    log_file = certbot.logs_dir / "letsencrypt.log"

    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "v.test,mail.v.test",
                *stack.options(), "--mailstack-verify", "-v")  # fmt: skip
    assert "mailstack verify: 2 name(s) served correctly" in log_file.read_text()
    assert "mailstack_verify = True" in (certbot.config_dir / "renewal" / "v.test.conf").read_text()

    certbot.run("renew", "--force-renewal", "--no-directory-hooks", "-v")  # restored from the renewal conf
    assert "mailstack verify: 2 name(s) served correctly" in log_file.read_text()

    # A hand edit of the plugin's drop-in is put right by the next deployment, and verified.
    dropin = stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf"
    dropin.write_text(dropin.read_text().replace("/fullchain.pem", "/cert.pem"))
    certbot.run("renew", "--force-renewal", "--no-directory-hooks", "-v")
    assert "/cert.pem" not in dropin.read_text()
    assert "mailstack verify: 2 name(s) served correctly" in log_file.read_text()
