"""Self-signed certificates for the lab daemons (``cryptography`` only)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_keys
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec_keys.EllipticCurvePrivateKey]


def _san_entry(value: str) -> x509.GeneralName:
    """Map a name to an IP address or DNS SAN entry."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def make_self_signed(
    directory: Path,
    name: str,
    *,
    ec: bool = False,
    extra_names: Sequence[str] = (),
    days: int = 365,
) -> tuple[Path, Path]:
    """Write ``<name>.key`` (0600) and ``<name>.crt`` (CN and first SAN = name); return (key, cert).

    ``extra_names`` adds more SAN entries (DNS names or IP addresses); ``ec`` picks P-256 over RSA-2048.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key: PrivateKey = (
        ec_keys.generate_private_key(ec_keys.SECP256R1())
        if ec
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [_san_entry(value) for value in (name, *extra_names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = directory / f"{name}.key"
    cert_path = directory / f"{name}.crt"
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def common_name(pem: str | bytes) -> str:
    """Return the subject CN of the first certificate in ``pem``."""
    data = pem.encode() if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def dns_names(pem: str | bytes) -> list[str]:
    """Return the DNS SAN entries of the first certificate in ``pem``."""
    data = pem.encode() if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.DNSName))
