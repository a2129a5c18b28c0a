"""RSA and ECDSA side by side, end to end: certbot (PyPI) -> Pebble with ``--key-type rsa`` and
``--key-type ecdsa`` for the same names -> -i mailstack -> a private Postfix and Dovecot, judged
by TLS handshakes with SNI on all seven mail ports.

A client that offers only ECDSA signatures must get the ECDSA leaf and one that offers only RSA
the RSA leaf: judged by openssl s_client (TLS 1.3, ``-sigalgs``) and by this package's own probe
(TLS 1.2 with one key type's cipher suites), for SNI names and, the default name being covered by
both lineages, for clients without SNI. A renewal of one lineage changes only its leaf; removing
a name unmaps it from both; removing one lineage leaves the other serving alone.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Dict, Optional

import pytest

from mailstack_installer.probe import SERVICES, served_certificate
from tests.lab.certbot import Certbot
from tests.lab.handshake import served_leaf_pem
from tests.lab.pebble import Pebble
from tests.lab.ports import LOCALHOST

from .conftest import Stack, fingerprint
from .test_default_and_wildcard import leaf, mailstack, run

pytestmark = pytest.mark.e2e

SHARED = ["mail.a.test", "a.test"]
DEFAULT_NAME = "mail.a.test"


def openssl_served(stack: Stack, name: Optional[str], key_type: str) -> Dict[str, str]:
    """Leaf fingerprint per port for a TLS 1.3 client offering only ``key_type`` signatures."""
    return {
        service: fingerprint(ssl.PEM_cert_to_DER_cert(
            served_leaf_pem(LOCALHOST, port, SERVICES[service][1], name, key_type=key_type)
        ))
        for service, port in sorted(stack.ports.items())
    }  # fmt: skip


def probe_served(stack: Stack, name: Optional[str], key_type: str) -> Dict[str, str]:
    """The same through this package's probe: TLS 1.2 with only ``key_type``'s cipher suites."""
    return {
        service: fingerprint(served_certificate(LOCALHOST, port, SERVICES[service][1], name, 10.0, key_type))
        for service, port in sorted(stack.ports.items())
    }


def assert_dual(stack: Stack, name: Optional[str], ec: str, rsa: str) -> None:
    for judge in (openssl_served, probe_served):
        assert judge(stack, name, "ec") == dict.fromkeys(stack.ports, ec), (judge.__name__, name)
        assert judge(stack, name, "rsa") == dict.fromkeys(stack.ports, rsa), (judge.__name__, name)


@pytest.mark.parametrize("certbot", ["pypi"], indirect=True)
def test_rsa_and_ecdsa_lineages_for_the_same_names_each_serve_the_clients_of_their_key_type(
    certbot: Certbot, stack: Stack, pebble: Pebble, tmp_path: Path
) -> None:
    default = ("--mailstack-default-name", DEFAULT_NAME)
    run(certbot, stack, "a-rsa", [*SHARED, "rsa-only.a.test"], "--key-type", "rsa", *default)
    run(certbot, stack, "a-ec", [*SHARED, "ec-only.a.test"], "--key-type", "ecdsa", *default)
    run(certbot, stack, "b-rsa", ["b.test"], "--key-type", "rsa")
    ec, rsa = leaf(certbot, "a-ec"), leaf(certbot, "a-rsa")
    live_ec, live_rsa = certbot.live_dir("a-ec"), certbot.live_dir("a-rsa")

    map_source = (stack.postfix.config_dir / "tls_server_sni_maps").read_text()
    pairs = f"{live_ec}/privkey.pem {live_ec}/fullchain.pem {live_rsa}/privkey.pem {live_rsa}/fullchain.pem"
    assert f"\nmail.a.test {pairs}\n" in map_source
    dropin = (stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf").read_text()
    assert f"  ssl_alt_cert = <{live_rsa}/fullchain.pem\n" in dropin
    chain = stack.postfix.postconf("-h", "smtpd_tls_chain_files").strip()
    assert chain == pairs.replace(" ", ", ")

    for name in (*SHARED, None):  # None: no SNI, the default name is served by both
        assert_dual(stack, name, ec, rsa)
    # A name of one lineage keeps its own leaf under the dual default (Dovecot blocks must not
    # inherit the default's alternative pair, which would replace theirs).
    assert openssl_served(stack, "rsa-only.a.test", "rsa") == dict.fromkeys(stack.ports, rsa)
    assert openssl_served(stack, "b.test", "rsa") == dict.fromkeys(stack.ports, leaf(certbot, "b-rsa"))
    assert openssl_served(stack, "ec-only.a.test", "ec") == dict.fromkeys(stack.ports, ec)
    # A client that accepts both key types (most do) gets that name's own leaf too, not the
    # default's pair of the other type (neither daemon carries it over into an SNI match).
    assert stack.served("rsa-only.a.test") == dict.fromkeys(stack.ports, rsa)
    assert stack.served("ec-only.a.test") == dict.fromkeys(stack.ports, ec)
    assert stack.served("b.test") == dict.fromkeys(stack.ports, leaf(certbot, "b-rsa"))

    ca_file = tmp_path / "pebble-root.pem"
    ca_file.write_bytes(pebble.root_ca_pem())
    ports = ",".join(f"{service}={port}" for service, port in sorted(stack.ports.items()))
    doc = json.loads(mailstack(certbot, stack, "verify", "--ports", ports, "--ca-file", str(ca_file),
                               "--json", "mail.a.test", "rsa-only.a.test").stdout)  # fmt: skip
    assert doc["exit_code"] == 0 and doc["summary"]["ok"] == 3 * len(stack.ports), doc["summary"]
    clients = {(c["name"], c.get("client_key_type"), c["served"]) for c in doc["checks"]}
    assert clients == {("mail.a.test", "ec", ec), ("mail.a.test", "rsa", rsa), ("rsa-only.a.test", None, rsa)}
    status = json.loads(mailstack(certbot, stack, "status", "--json").stdout)
    assert status["exit_code"] == 0 and len(status["names"]) == 7, status

    # A renewal of the RSA lineage (cron's PATH, the deploy hook) patches the shared entries.
    certbot.env["PATH"] = "/usr/bin:/bin"
    certbot.run("renew", "--force-renewal", "--cert-name", "a-rsa")
    renewed = leaf(certbot, "a-rsa")
    assert renewed != rsa
    for name in ("a.test", None):
        assert_dual(stack, name, ec, renewed)

    # Removing a name unmaps it from both lineages; removing one lineage leaves the other alone.
    mailstack(certbot, stack, "remove", "mail.a.test")
    map_source = (stack.postfix.config_dir / "tls_server_sni_maps").read_text()
    assert "mail.a.test" not in map_source and f"\na.test {pairs}\n" in map_source
    mailstack(certbot, stack, "remove", "--cert-name", "a-rsa")
    map_source = (stack.postfix.config_dir / "tls_server_sni_maps").read_text()
    assert f"\na.test {live_ec}/privkey.pem {live_ec}/fullchain.pem\n" in map_source
    assert (
        "rsa-only" not in map_source
        and "ssl_alt" not in (stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf").read_text()
    )
    assert openssl_served(stack, "a.test", "ec") == dict.fromkeys(stack.ports, ec)
    assert stack.served("a.test") == dict.fromkeys(stack.ports, ec)
