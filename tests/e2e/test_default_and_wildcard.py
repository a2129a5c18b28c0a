"""The default certificate and wildcards, end to end: certbot (PyPI) -> Pebble -> -i mailstack ->
a private Postfix and Dovecot, judged by TLS handshakes on all seven mail ports.

Default certificate: SMTP clients on port 25 send no SNI, nor do some IMAP clients; the lineage
that covers the default name (Postfix's myhostname, or --mailstack-default-name) must be what they
get. Wildcards: Postfix's ``.domain`` key matches names at any depth, Dovecot's ``*.domain`` one
label; neither matches the parent itself, and an exact name beats a wildcard in both.

Pebble issues a wildcard only through DNS-01; the lab Pebble accepts every challenge
(PEBBLE_VA_ALWAYS_VALID), so certbot's manual authenticator with a no-op hook gets a real, renewable
wildcard lineage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest

from mailstack_installer.errors import MisconfiguredError
from mailstack_installer.model import CertFiles
from mailstack_installer.pipeline import Pipeline, Request
from tests.lab.certbot import Certbot
from tests.lab.pebble import Pebble
from tests.unit.helpers import make_lineage

from .conftest import Stack, pem_fingerprint

pytestmark = pytest.mark.e2e

DROPIN = Path("conf.d") / "99-mailstack-sni.conf"


@pytest.fixture
def pypi_certbot(pebble: Pebble, tmp_path: Path) -> Certbot:
    """The newest certbot, from this venv."""
    return Certbot(pebble, tmp_path / "certbot", command=[os.path.join(sys.prefix, "bin", "certbot")])


def leaf(certbot: Certbot, lineage: str) -> str:
    return pem_fingerprint(certbot.live_dir(lineage) / "cert.pem")


def everywhere(stack: Stack, fingerprint: str) -> Dict[str, str]:
    return dict.fromkeys(stack.ports, fingerprint)


def run(certbot: Certbot, stack: Stack, lineage: str, names: Sequence[str], *extra: str) -> None:
    certbot.run("run", *certbot.webroot_args(), "-i", "mailstack", "-d", ",".join(names),
                "--cert-name", lineage, *stack.options(), *extra)  # fmt: skip


def mailstack(certbot: Certbot, stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The certbot-mailstack command of this environment, against the test stack."""
    proc = subprocess.run(
        [os.path.join(sys.prefix, "bin", "certbot-mailstack"), *args, "--config-dir", str(certbot.config_dir),
         "--postfix-dir", str(stack.postfix.config_dir), "--dovecot-dir", str(stack.dovecot.config_dir)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def chain_files(stack: Stack) -> str:
    return stack.postfix.postconf("-h", "smtpd_tls_chain_files").strip()


# -- the default certificate -------------------------------------------------------------------------


def test_lineage_covering_myhostname_is_served_without_sni_on_every_port_and_after_renewal(
    pypi_certbot: Certbot, stack: Stack
) -> None:
    certbot = pypi_certbot
    myhostname = stack.postfix.postconf("-h", "myhostname").strip()
    lab_chain = chain_files(stack)
    assert stack.served(None) == stack.defaults()

    run(certbot, stack, "other.test", ["other.test", "mail.other.test"])
    assert stack.served(None) == stack.defaults()  # no lineage covers myhostname yet
    run(certbot, stack, "host", [myhostname, "imap.default.test"])

    host, other = leaf(certbot, "host"), leaf(certbot, "other.test")
    assert stack.served(None) == everywhere(stack, host)
    assert stack.served("unknown.test") == everywhere(stack, host)  # an unmapped name gets the default
    for name, expected in [(myhostname, host), ("imap.default.test", host), ("mail.other.test", other)]:
        assert stack.served(name) == everywhere(stack, expected), name
    live = certbot.live_dir("host")
    assert chain_files(stack) == f"{live}/privkey.pem, {live}/fullchain.pem"
    dropin = (stack.dovecot.config_dir / DROPIN).read_text()
    assert dropin.index(f"ssl_cert = <{live}/fullchain.pem\n") < dropin.index("local_name")

    certbot.env["PATH"] = "/usr/bin:/bin"  # cron's PATH
    certbot.run("renew", "--force-renewal")

    renewed = leaf(certbot, "host")
    assert renewed != host
    assert stack.served(None) == everywhere(stack, renewed)
    assert stack.served(myhostname) == everywhere(stack, renewed)
    assert stack.served("mail.other.test") == everywhere(stack, leaf(certbot, "other.test"))

    # Unmapping the lineage puts Postfix's earlier default back; Dovecot's comes from 10-ssl.conf again.
    mailstack(certbot, stack, "remove", "--cert-name", "host")
    assert chain_files(stack) == lab_chain
    assert stack.served(None) == stack.defaults()
    assert stack.served("mail.other.test") == everywhere(stack, leaf(certbot, "other.test"))


def test_default_name_option_picks_the_lineage_and_a_change_of_default_alone_is_applied(
    pypi_certbot: Certbot, stack: Stack
) -> None:
    certbot = pypi_certbot
    myhostname = stack.postfix.postconf("-h", "myhostname").strip()
    run(certbot, stack, "host", [myhostname], "--mailstack-default-name", "none")
    assert stack.served(None) == stack.defaults()  # none: the daemons' own defaults stay
    assert stack.served(myhostname) == everywhere(stack, leaf(certbot, "host"))

    run(certbot, stack, "b.test", ["b.test", "mail.b.test"], "--mailstack-default-name", "mail.b.test")
    assert stack.served(None) == everywhere(stack, leaf(certbot, "b.test"))

    # Nothing mapped changes, only the default: still written, and both daemons reloaded.
    before = stack.reload_counts()
    proc = mailstack(certbot, stack, "deploy", "--cert-name", "host", "--default-name", "auto")
    assert "reloaded: postfix, dovecot" in proc.stdout, proc.stdout
    after = stack.reload_counts()
    assert {d: after[d] - before[d] for d in after} == {"postfix": 1, "dovecot": 1}
    assert stack.served(None) == everywhere(stack, leaf(certbot, "host"))
    assert stack.served("mail.b.test") == everywhere(stack, leaf(certbot, "b.test"))


def test_a_failed_confirmation_puts_the_earlier_default_back_in_main_cf(tmp_path: Path, stack: Stack) -> None:
    pipeline = Pipeline(
        str(tmp_path / "le"),
        {"postfix-dir": str(stack.postfix.config_dir), "dovecot-dir": str(stack.dovecot.config_dir),
         "default-name": "mail.d.test"},
    )  # fmt: skip
    requests = {}
    for name in ("a", "b"):
        key, chain = make_lineage(tmp_path / "le" / "live" / name, ["mail.d.test", f"{name}.d.test"])
        requests[name] = Request(CertFiles(str(key), str(chain)), ("mail.d.test", f"{name}.d.test"))
    pipeline.deploy([requests["a"]])
    pipeline.reload_pending()
    fp_a = pem_fingerprint(Path(requests["a"].files.fullchain))
    chain_a = chain_files(stack)
    assert stack.served(None) == everywhere(stack, fp_a)

    pipeline.deploy([requests["b"]])  # b takes mail.d.test, and with it the default
    assert chain_files(stack) != chain_a
    os.unlink(requests["b"].files.key)  # Dovecot's reload now fails to read it, yet doveadm exits 0
    with pytest.raises(MisconfiguredError, match="restored"):
        pipeline.reload_pending()

    assert chain_files(stack) == chain_a
    assert stack.served(None) == everywhere(stack, fp_a)
    assert stack.served("mail.d.test") == everywhere(stack, fp_a)


# -- wildcards ---------------------------------------------------------------------------------------


def issue_wildcard(certbot: Certbot, stack: Stack, lineage: str, names: Sequence[str]) -> None:
    hook = shutil.which("true") or "/bin/true"
    certbot.run("run", "-a", "manual", "--preferred-challenges", "dns", "--manual-auth-hook", hook,
                "-i", "mailstack", "-d", ",".join(names), "--cert-name", lineage,
                *stack.options())  # fmt: skip


def test_wildcard_one_label_everywhere_deeper_only_in_postfix_exact_names_win_parent_unmatched(
    pypi_certbot: Certbot, stack: Stack
) -> None:
    certbot = pypi_certbot
    run(certbot, stack, "mail", ["mail.domain1.test"])
    issue_wildcard(certbot, stack, "wild", ["*.domain1.test"])
    wild, mail = leaf(certbot, "wild"), leaf(certbot, "mail")
    defaults = stack.defaults()

    assert stack.served("x.domain1.test") == everywhere(stack, wild)
    deep = stack.served("a.b.domain1.test")
    for service, fingerprint in deep.items():  # Postfix: any depth; Dovecot: one label only
        assert fingerprint == (wild if service in stack.postfix.ports else defaults[service]), service
    assert stack.served("mail.domain1.test") == everywhere(stack, mail)  # exact beats the wildcard
    assert stack.served("domain1.test") == defaults  # the parent is not covered
    map_source = (stack.postfix.config_dir / "tls_server_sni_maps").read_text()
    assert f".domain1.test {certbot.live_dir('wild')}/privkey.pem" in map_source

    # Deployed again in the other order, the exact name still wins in both daemons.
    certbot.run("install", "--cert-name", "mail", "-i", "mailstack")
    assert stack.served("mail.domain1.test") == everywhere(stack, mail)
    assert stack.served("x.domain1.test") == everywhere(stack, wild)

    certbot.env["PATH"] = "/usr/bin:/bin"  # cron's PATH
    certbot.run("renew", "--force-renewal", "--cert-name", "wild")
    renewed = leaf(certbot, "wild")
    assert renewed != wild
    assert stack.served("imap.domain1.test") == everywhere(stack, renewed)
    assert stack.served("mail.domain1.test") == everywhere(stack, mail)
