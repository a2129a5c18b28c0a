"""Plan step: check a lineage's key and full chain before anything points at them.

``postmap -F`` silently skips missing or unreadable files and stores non-PEM data; a wrong key aborts
every handshake for that name. So each pair is read and parsed here first.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from typing import List, Set, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import InputError
from .model import CertFiles, Plan
from .names import check_path

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_PEM_ANY = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


def pem_digest(data: bytes) -> str:
    """SHA-256 over the PEM blocks in ``data``, ignoring what lies between them.

    The same value for key + chain files and for ``postmap -Fq`` output (which joins the files'
    contents), so the compiled map can be checked against the very files that were checked.
    """
    return _digest(_blocks(data))


def _blocks(data: bytes) -> List[bytes]:
    return [match.group(0).replace(b"\r\n", b"\n") for match in _PEM_ANY.finditer(data)]


def _digest(blocks: List[bytes]) -> str:
    return hashlib.sha256(b"\n".join(blocks)).hexdigest()


def pair_digests(data: bytes) -> List[str]:
    """pem_digest of each key + chain pair in ``data``, cut before each private key block: what a
    ``postmap -Fq`` value listing several pairs (RSA and ECDSA) holds, pair by pair, to compare
    with each lineage's digest."""
    pairs: List[List[bytes]] = []
    for block in _blocks(data):
        if b"PRIVATE KEY-----" in block.partition(b"\n")[0] or not pairs:
            pairs.append([])
        pairs[-1].append(block)
    return [_digest(pair) for pair in pairs]


def key_type(key: object) -> str:
    """ "rsa", "ec", or the key class's own short name (e.g. "ed25519"): which lineages may serve a
    name side by side (model.slots) is decided by this."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec"
    return type(key).__name__.lower().replace("privatekey", "").lstrip("_") or "other"


def key_type_of_file(path: str) -> str:
    """The type of the private key in ``path``, or "" if it cannot be read or parsed (a lineage
    whose type is not known serves its names alone, as before types were kept)."""
    try:
        with open(path, "rb") as handle:
            return key_type(serialization.load_pem_private_key(handle.read(), password=None))
    except (OSError, ValueError, TypeError):
        return ""


@dataclass(frozen=True)
class CheckedFiles:
    """A key/full-chain pair that parsed and matched, with the leaf's DNS names and a content digest."""

    files: CertFiles
    dns_names: Tuple[str, ...]
    digest: str
    key_type: str = ""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise InputError(f"{what} {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be read: {exc.strerror}") from None


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_chain(data: bytes, path: str) -> List[x509.Certificate]:
    """Parse every PEM certificate in ``data`` (works on cryptography 38, Debian 12's version)."""
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise InputError(f"certificate chain {path} holds no PEM certificate")
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError:
        raise InputError(f"certificate chain {path} holds a PEM block that does not parse") from None


def not_after(cert: x509.Certificate) -> datetime.datetime:
    # not_valid_after_utc appeared in cryptography 42; Debian 12 ships 38.
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc  # type: ignore[no-any-return]
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def check_chain(chain: List[x509.Certificate], path: str) -> None:
    """The leaf, then each issuer in order; a lone leaf must be self-issued; the leaf not expired.

    A leaf-only file (cert.pem given as the chain) makes clients that lack the intermediate fail,
    which is the classic incomplete-chain mistake; refuse it rather than serve it.
    """
    leaf = chain[0]
    if len(chain) == 1 and leaf.issuer != leaf.subject:
        raise InputError(
            f"certificate chain {path} holds only the leaf, not its issuers: use fullchain.pem, not cert.pem"
        )
    for index, (cert, issuer) in enumerate(zip(chain, chain[1:])):
        if cert.issuer != issuer.subject:
            raise InputError(
                f"certificate chain {path} is out of order: certificate {index + 1} was not issued "
                f"by certificate {index + 2}"
            )
    expiry = not_after(leaf)
    if expiry <= datetime.datetime.now(datetime.timezone.utc):
        raise InputError(
            f"certificate in {path} expired on {expiry:%Y-%m-%d %H:%M} UTC: renew it before deploying"
        )


def check_files(files: CertFiles) -> CheckedFiles:
    """Read, parse and match one key/full-chain pair; raise InputError with one line on any fault."""
    check_path(files.key)
    check_path(files.fullchain)
    key_data = _read(files.key, "private key")
    chain_data = _read(files.fullchain, "certificate chain")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        raise InputError(f"private key {files.key} is not an unencrypted PEM private key") from None
    chain = load_chain(chain_data, files.fullchain)
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise InputError(f"private key {files.key} does not match the certificate in {files.fullchain}")
    check_chain(chain, files.fullchain)
    digest = pem_digest(key_data + b"\n" + chain_data)
    return CheckedFiles(files, dns_names_of(leaf), digest, key_type(key))


def dns_names_of(cert: x509.Certificate) -> Tuple[str, ...]:
    """The DNS names of a certificate's subjectAltName (none without one: the CN is not used)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(name) for name in san.get_values_for_type(x509.DNSName))


def fingerprint(der: bytes) -> str:
    """The SHA-256 of a DER certificate, in hex: how a served leaf is compared with a lineage's."""
    return hashlib.sha256(der).hexdigest()


def gone_lineages(plan: Plan, keep: Set[str]) -> Set[str]:
    """The lineages of ``plan`` (but those in ``keep``, checked now) whose full chain or key no
    longer exists.

    certbot removes a whole ``live/<name>`` directory, so the directory the lineages share is
    listed once and only those missing from the listing are looked up on their own: 10,000
    lineages cost one ``listdir`` and set operations, not 20,000 ``stat`` calls. A key kept
    outside its lineage directory is looked up on its own.
    """
    lineages = plan.lineages
    every = lineages.ids()
    if not every:
        return set()
    ids = every - keep
    shared = os.path.commonpath([min(every), max(every)])  # every id lies between them
    head = shared.rstrip("/") + "/"  # paths are absolute (names.check_path)
    try:
        listed = {head + entry for entry in os.listdir(head)}
    except OSError:
        listed = set()
    missing = {lid for lid in ids - listed if not os.path.exists(lineages[lid].files.fullchain)}
    apart = lineages.keys_apart()
    missing.update(lid for lid, key in apart if lid in ids and lid not in missing and not os.path.exists(key))
    return missing
