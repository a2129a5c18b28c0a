"""Fetch the leaf certificate a server presents, via ``openssl s_client`` (smoke tests, cross-checks)."""

from __future__ import annotations

import re
import subprocess

OPENSSL = "/usr/bin/openssl"
MODES = ("smtp", "imap", "pop3", "tls")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?\n-----END CERTIFICATE-----\n?", re.S)


#: TLS 1.3 signature algorithms of a client that accepts only one key type (``-sigalgs``): the
#: independent judge of which leaf a name served by an RSA and an ECDSA lineage gives each client.
SIGALGS = {
    "ec": "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384",
    "rsa": "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256",
}


def served_leaf_pem(
    host: str,
    port: int,
    mode: str,
    server_name: str | None = None,
    *,
    timeout: float = 15.0,
    key_type: str | None = None,
) -> str:
    """Return the PEM leaf certificate served on ``host:port``.

    ``mode`` is "smtp", "imap" or "pop3" (STARTTLS/STLS first) or "tls" (implicit TLS).  SNI is sent
    only when ``server_name`` is given; otherwise ``-noservername`` suppresses it. ``key_type``
    ("ec" or "rsa") makes a TLS 1.3 client that offers only that type's signature algorithms.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    argv = [OPENSSL, "s_client", "-connect", f"{host}:{port}"]
    if mode != "tls":
        argv += ["-starttls", mode]
    argv += ["-servername", server_name] if server_name else ["-noservername"]
    if key_type is not None:
        argv += ["-tls1_3", "-sigalgs", SIGALGS[key_type]]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"openssl s_client timed out after {timeout} s: {argv}") from exc
    match = _PEM.search(proc.stdout)
    if match is None:
        raise RuntimeError(
            f"no certificate from {host}:{port} ({mode}, SNI {server_name!r}), exit {proc.returncode}:\n"
            f"{proc.stderr[-2000:]}"
        )
    pem = match.group(0)
    return pem if pem.endswith("\n") else pem + "\n"
