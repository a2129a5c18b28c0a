"""Real key/certificate files for unit tests (made with cryptography, no network, no daemons)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.lab.certs import make_self_signed


def make_lineage(live: Path, names: Sequence[str]) -> Tuple[Path, Path]:
    """Write ``live/privkey.pem`` and ``live/fullchain.pem`` (self-signed EC leaf) for ``names``."""
    live.mkdir(parents=True, exist_ok=True)
    key, cert = make_self_signed(live, names[0], ec=True, extra_names=names[1:], days=90)
    key_path, chain_path = live / "privkey.pem", live / "fullchain.pem"
    key.replace(key_path)
    cert.replace(chain_path)
    return key_path, chain_path


def make_issued_lineage(
    live: Path, names: Sequence[str], *, expired: bool = False, leaf_only: bool = False, order_ok: bool = True
) -> Tuple[Path, Path]:
    """A leaf issued by a throw-away CA, as ``live/privkey.pem`` + ``live/fullchain.pem`` (leaf, CA),
    optionally with the classic faults: expired, leaf only (cert.pem as the chain), out of order."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(
        subject: str, issuer: str, public_key: Any, signer: Any, days: int, ca: bool, sans: Sequence[str]
    ) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
            .sign(signer, hashes.SHA256())
        )

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("Throw-away CA", "Throw-away CA", ca_key.public_key(), ca_key, 365, True, ["ca.invalid"])
    leaf = build(
        names[0], "Throw-away CA", leaf_key.public_key(), ca_key, -1 if expired else 90, False, names
    )
    certs = [leaf] if leaf_only else ([leaf, ca] if order_ok else [ca, leaf])
    live.mkdir(parents=True, exist_ok=True)
    key_path, chain_path = live / "privkey.pem", live / "fullchain.pem"
    pem = serialization.Encoding.PEM
    key_path.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    chain_path.write_bytes(b"".join(c.public_bytes(pem) for c in certs))
    return key_path, chain_path
