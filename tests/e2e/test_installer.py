"""The issue's proof: certbot -> Pebble -> -i mailstack -> Postfix + Dovecot, judged by TLS handshakes.

Each test runs with the newest certbot from PyPI and with Debian's certbot 2.1.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.lab.certbot import Certbot

from .conftest import Stack, pem_fingerprint

pytestmark = pytest.mark.e2e


def leaf(certbot: Certbot, lineage: str) -> str:
    return pem_fingerprint(certbot.live_dir(lineage) / "cert.pem")


def assert_served(stack: Stack, names: list, expected: str) -> None:
    for name in names:
        served = stack.served(name)
        wrong = {service: fp[:12] for service, fp in served.items() if fp != expected}
        assert not wrong, f"{name}: ports serving another certificate: {wrong}"


def test_run_and_install_are_served_on_every_port_and_renew_serves_the_new_certificates(
    certbot: Certbot, stack: Stack
) -> None:
    # Path 1: certbot run -i mailstack (renewal goes through renew_deploy + restart).
    certbot.run(
        "run",
        *certbot.webroot_args(),
        "-i",
        "mailstack",
        "-d",
        "a.test,mail.a.test",
        "--cert-name",
        "a.test",
        *stack.options(),
    )
    # Path 2: the classic how-to: certonly, then certbot install (renewal goes through the hook).
    certbot.run(
        "certonly", *certbot.webroot_args(), "-d", "b.test,mail.b.test,imap.b.test", "--cert-name", "b.test"
    )
    certbot.run("install", "--cert-name", "b.test", "-i", "mailstack")  # options persisted by the run

    old_a, old_b = leaf(certbot, "a.test"), leaf(certbot, "b.test")
    assert_served(stack, ["a.test", "mail.a.test"], old_a)
    assert_served(stack, ["b.test", "mail.b.test", "imap.b.test"], old_b)
    assert stack.served(None) == stack.defaults()
    assert stack.served("unknown.test") == stack.defaults()

    renewal = certbot.config_dir / "renewal"
    assert "installer = mailstack" in (renewal / "a.test.conf").read_text()
    assert "installer = mailstack" not in (renewal / "b.test.conf").read_text()

    reloads = stack.reload_counts()
    certbot.env["PATH"] = "/usr/bin:/bin"  # cron's PATH: postfix, postmap and friends are in sbin
    certbot.run("renew", "--force-renewal")  # exactly as cron runs it, no plugin flags

    # Two lineages renewed through both paths (for a.test the hook and then certbot's renew_deploy
    # both fire; the second sees the same content and does nothing): one reload per daemon, by the
    # post hook at the end of the run.
    after = stack.reload_counts()
    assert {d: after[d] - reloads[d] for d in after} == {"postfix": 1, "dovecot": 1}

    new_a, new_b = leaf(certbot, "a.test"), leaf(certbot, "b.test")
    assert new_a != old_a and new_b != old_b
    assert_served(stack, ["a.test", "mail.a.test"], new_a)
    assert_served(stack, ["b.test", "mail.b.test", "imap.b.test"], new_b)
    for name in ["mail.a.test", "mail.b.test"]:
        assert not {old_a, old_b} & set(stack.served(name).values())


def test_map_and_compiled_map_are_private_and_point_at_live_fullchain(certbot: Certbot, stack: Stack) -> None:
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "c.test", *stack.options())
    map_source = stack.postfix.config_dir / "tls_server_sni_maps"
    tables = [p for p in stack.postfix.config_dir.iterdir() if p.name.startswith("tls_server_sni_maps.")]
    assert tables, "no compiled map"
    for path in [map_source, *tables]:
        mode = path.stat()
        assert (mode.st_uid, stat.S_IMODE(mode.st_mode)) == (0, 0o600), path
    live = certbot.live_dir("c.test")
    assert f"c.test {live}/privkey.pem {live}/fullchain.pem" in map_source.read_text()
    dropin = (stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf").read_text()
    assert f"ssl_cert = <{live}/fullchain.pem" in dropin and "cert.pem\n" not in dropin.replace(
        "fullchain", ""
    )
    hook = certbot.config_dir / "renewal-hooks" / "deploy" / "mailstack"
    assert os.access(hook, os.X_OK)


def _snapshot(*dirs: Path) -> dict:
    return {
        str(p): p.read_bytes()
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", "-lock")) and "pid" not in p.parts
    }


def test_foreign_sni_map_stops_with_one_line_and_changes_nothing(certbot: Certbot, stack: Stack) -> None:
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "d.test", *stack.options())
    served_before = stack.served("d.test")
    stack.postfix.postconf("-e", "tls_server_sni_maps = hash:/etc/postfix/someone_elses_map")
    before = _snapshot(stack.postfix.config_dir, stack.dovecot.config_dir)

    certbot.run("certonly", *certbot.webroot_args(), "-d", "e.test")
    result = certbot.run("install", "--cert-name", "e.test", "-i", "mailstack", check=False)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "tls_server_sni_maps" in result.stderr and "someone_elses_map" in result.stderr
    assert _snapshot(stack.postfix.config_dir, stack.dovecot.config_dir) == before
    assert stack.served("d.test") == served_before


def test_dovecot_that_does_not_include_the_dropin_is_refused_clearly(certbot: Certbot, stack: Stack) -> None:
    conf = stack.dovecot.config_file
    conf.write_text(
        "\n".join(line for line in conf.read_text().splitlines() if "!include" not in line) + "\n"
    )
    before = _snapshot(stack.postfix.config_dir, stack.dovecot.config_dir)

    result = certbot.run(
        "run", *certbot.webroot_args(), "-i", "mailstack", "-d", "f.test", *stack.options(), check=False
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "does not include" in result.stderr and str(conf) in result.stderr
    assert _snapshot(stack.postfix.config_dir, stack.dovecot.config_dir) == before


def test_renew_deploy_alone_serves_the_renewed_certificate(certbot: Certbot, stack: Stack) -> None:
    """Without the deploy hook (--no-directory-hooks), certbot's renew_deploy + restart must do it."""
    certbot.run(
        "run", *certbot.webroot_args(), "-i", "mailstack", "-d", "g.test,mail.g.test", *stack.options()
    )
    old = leaf(certbot, "g.test")
    assert_served(stack, ["mail.g.test"], old)

    certbot.run("renew", "--force-renewal", "--no-directory-hooks")

    new = leaf(certbot, "g.test")
    assert new != old
    assert_served(stack, ["g.test", "mail.g.test"], new)


def test_rollback_restores_the_previous_mapping_and_serves_it(certbot: Certbot, stack: Stack) -> None:
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "h.test,mail.h.test",
                "--cert-name", "h.test", *stack.options())  # fmt: skip
    first = leaf(certbot, "h.test")
    # A second lineage takes over mail.h.test; rolling that back must give the name back to h.test.
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", "mail.h.test",
                "--cert-name", "other", *stack.options())  # fmt: skip
    assert_served(stack, ["mail.h.test"], leaf(certbot, "other"))

    certbot.run("rollback", "-i", "mailstack", "--checkpoints", "1")

    assert_served(stack, ["mail.h.test", "h.test"], first)
