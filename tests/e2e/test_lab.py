"""Smoke test of the test lab: Pebble, Postfix, Dovecot and certbot come up and behave."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.certbot import Certbot
from tests.lab.certs import common_name, dns_names
from tests.lab.dovecot import DovecotInstance
from tests.lab.handshake import served_leaf_pem
from tests.lab.pebble import Pebble
from tests.lab.ports import LOCALHOST
from tests.lab.postfix import PostfixInstance

pytestmark = pytest.mark.e2e

DEFAULT_NAME = "mail.default.test"
# service -> openssl s_client mode
MODES = {
    "smtp": "smtp",
    "submission": "smtp",
    "smtps": "tls",
    "imap": "imap",
    "imaps": "tls",
    "pop3": "pop3",
    "pop3s": "tls",
}


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixInstance]:
    instance = PostfixInstance(tmp_path_factory.mktemp("postfix"))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotInstance]:
    instance = DovecotInstance(tmp_path_factory.mktemp("dovecot"))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def mail_ports(postfix: PostfixInstance, dovecot: DovecotInstance) -> dict[str, int]:
    ports = {**postfix.ports, **dovecot.ports}
    assert sorted(ports) == sorted(MODES)
    assert len(set(ports.values())) == len(MODES)
    return ports


@pytest.mark.parametrize("server_name", [None, DEFAULT_NAME], ids=["no-sni", "sni"])
@pytest.mark.parametrize("service", sorted(MODES))
def test_default_certificate(mail_ports: dict[str, int], service: str, server_name: str | None) -> None:
    pem = served_leaf_pem(LOCALHOST, mail_ports[service], MODES[service], server_name)
    assert common_name(pem) == DEFAULT_NAME


def test_certbot_issues_with_webroot(pebble: Pebble, tmp_path: Path) -> None:
    certbot = Certbot(pebble, tmp_path, command=[sys.prefix + "/bin/certbot"])
    certbot.run("certonly", *certbot.webroot_args(), "--cert-name", "a.test", "-d", "a.test,mail.a.test")
    fullchain = (certbot.live_dir("a.test") / "fullchain.pem").read_text()
    assert sorted(dns_names(fullchain)) == ["a.test", "mail.a.test"]
    assert (certbot.live_dir("a.test") / "privkey.pem").is_file()
    assert b"BEGIN CERTIFICATE" in pebble.root_ca_pem()
