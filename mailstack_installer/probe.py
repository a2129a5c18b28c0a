"""Verify step: ask a daemon which certificate it serves for a name, by a real TLS handshake.

Mail ports speak a plain-text protocol before TLS (SMTP/IMAP/POP3 STARTTLS) or TLS at once
(SMTPS 465, IMAPS 993, POP3S 995). The leaf certificate is returned unverified: callers compare it
with what they expect. ``inspect`` also says whether the served chain verifies and which TLS
version was spoken, within one overall time budget per check.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: Mail service -> (usual port, how TLS starts: "smtp", "imap", "pop3" STARTTLS or "tls" at once).
SERVICES: Dict[str, tuple[int, str]] = {
    "smtp": (25, "smtp"),
    "submission": (587, "smtp"),
    "smtps": (465, "tls"),
    "imap": (143, "imap"),
    "imaps": (993, "tls"),
    "pop3": (110, "pop3"),
    "pop3s": (995, "tls"),
}


#: A client that offers only one key type's signatures, to see the leaf a name serves to such
#: clients when an ECDSA and an RSA lineage serve it side by side. Python cannot set signature
#: algorithms, so TLS 1.2 with only that type's cipher suites stands in for them.
CLIENT_CIPHERS = {"ec": "aECDSA", "rsa": "aRSA"}


def only_key_type(context: ssl.SSLContext, key_type: Optional[str]) -> ssl.SSLContext:
    """``context`` limited to servers authenticating with ``key_type`` (None: unchanged)."""
    if key_type is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(CLIENT_CIPHERS[key_type])
    return context


class ProbeError(Exception):
    """The port did not answer, refused TLS, or spoke something unexpected."""


class PortClosedError(ProbeError):
    """Nothing listens on the port (connection refused)."""


class PortError(ProbeError):
    """The port accepted but did not get as far as a TLS handshake, or timed out: no name can be
    checked on it. A plain ``ProbeError`` from ``inspect`` is a TLS failure for one server name."""


def _read_line(sock: socket.socket) -> str:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ProbeError("connection closed before TLS started")
        data += chunk
        if len(data) > 4096:
            raise ProbeError("line too long before TLS started")
    return data.decode("ascii", "replace").rstrip("\r\n")


def _smtp_reply(sock: socket.socket) -> str:
    """Read a possibly multi-line SMTP reply ("250-..." continues, "250 ..." ends)."""
    while True:
        line = _read_line(sock)
        if len(line) < 4 or line[3] != "-":
            return line


def _expect(line: str, prefix: str, step: str) -> None:
    if not line.startswith(prefix):
        raise ProbeError(f"{step}: expected {prefix!r}, got {line[:80]!r}")


def _starttls(sock: socket.socket, mode: str) -> None:
    if mode == "smtp":
        _expect(_smtp_reply(sock), "220", "greeting")
        sock.sendall(b"EHLO probe.invalid\r\n")
        _expect(_smtp_reply(sock), "250", "EHLO")
        sock.sendall(b"STARTTLS\r\n")
        _expect(_smtp_reply(sock), "220", "STARTTLS")
    elif mode == "imap":
        _expect(_read_line(sock), "* OK", "greeting")
        sock.sendall(b"a1 STARTTLS\r\n")
        while True:
            line = _read_line(sock)
            if line.startswith("a1 "):
                _expect(line, "a1 OK", "STARTTLS")
                return
    elif mode == "pop3":
        _expect(_read_line(sock), "+OK", "greeting")
        sock.sendall(b"STLS\r\n")
        _expect(_read_line(sock), "+OK", "STLS")
    elif mode != "tls":
        raise ValueError(f"unknown mode {mode!r}")


def served_certificate(
    host: str,
    port: int,
    mode: str,
    server_name: Optional[str],
    timeout: float = 10.0,
    key_type: Optional[str] = None,
) -> bytes:
    """DER of the leaf certificate served on ``host:port``; SNI ``server_name`` (None: no SNI),
    to a client accepting only ``key_type`` ("ec", "rsa"; None: any).

    Unverified: callers compare the leaf with what they expect. One budget of ``timeout`` seconds.
    """
    context = _unverified_context(key_type)
    return _attempt(host, port, mode, server_name, context, time.monotonic() + timeout)[0]


@dataclass(frozen=True)
class Handshake:
    """What one server name got on one port: the leaf (DER), the TLS version, and whether the chain
    verified (``chain_error`` is None) against the trust the caller gave."""

    leaf: bytes
    protocol: str
    chain_error: Optional[str]


def trust_context(ca_file: Optional[str] = None, key_type: Optional[str] = None) -> ssl.SSLContext:
    """A client context that verifies chains against ``ca_file`` (else the system's trust store).

    Hostnames are not checked here: the caller matches the served names itself, so that one
    handshake answers "does the chain verify" and "is the name covered" separately, the same on
    every Python version (no X509_STRICT or partial-chain flags, which vary between them).
    Raises OSError or ssl.SSLError if ``ca_file`` cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs()
    return only_key_type(context, key_type)


@functools.cache
def _unverified_context(key_type: Optional[str] = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return only_key_type(context, key_type)


class _DeadlineSocket(socket.socket):
    """A socket whose every read gets only what is left of one overall time budget, so a server
    that trickles bytes cannot stretch a check beyond it (a per-call timeout would restart)."""

    deadline = 0.0

    def budget(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.settimeout(left)

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self.budget()
        return super().recv(bufsize, flags)


def _connect(host: str, port: int, deadline: float) -> _DeadlineSocket:
    where = f"{host}:{port}"
    timeout = max(deadline - time.monotonic(), 0.001)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise PortClosedError(f"{where}: connection refused") from None
    except socket.timeout:
        raise PortError(f"{where}: no TCP connection within the timeout") from None
    except OSError as exc:
        raise PortError(f"{where}: cannot connect: {exc.strerror or exc}") from None
    sock = _DeadlineSocket(raw.family, raw.type, raw.proto, raw.detach())
    sock.deadline = deadline
    return sock


def _handshake(
    sock: _DeadlineSocket, context: ssl.SSLContext, server_name: Optional[str]
) -> Tuple[Optional[bytes], str]:
    """The TLS handshake over ``sock`` through memory buffers; (leaf DER, TLS version).

    Not ``wrap_socket``: when the peer resets the connection before the handshake, CPython's
    SSLSocket re-raises the reset without closing the socket it made (found by the build's
    ``-W error``). Here every read goes through ``sock``, within its deadline, and ``sock`` is
    the only thing to close.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(16384)
            if not data:
                raise ssl.SSLEOFError("the server closed the connection in the handshake") from None
            incoming.write(data)
    with contextlib.suppress(OSError):  # our Finished: the server logs no aborted handshake
        sock.sendall(outgoing.read())
    return tls.getpeercert(binary_form=True), tls.version() or "unknown"


def _attempt(
    host: str, port: int, mode: str, server_name: Optional[str], context: ssl.SSLContext, deadline: float
) -> Tuple[bytes, str]:
    """One connection: STARTTLS if the mode needs it, one handshake; (leaf DER, TLS version).

    ssl.SSLCertVerificationError passes through for the caller; everything else becomes ProbeError.
    """
    where = f"{host}:{port} ({mode})"
    with _connect(host, port, deadline) as sock:
        try:
            _starttls(sock, mode)
            sock.budget()
        except socket.timeout:
            raise PortError(f"{where}: timed out before TLS started") from None
        except ProbeError as exc:
            raise PortError(f"{where}: {exc}") from None
        except OSError as exc:
            raise PortError(f"{where}: {exc.strerror or exc} before TLS started") from None
        try:
            der, protocol = _handshake(sock, context, server_name)
        except ssl.SSLCertVerificationError:
            raise
        except socket.timeout:
            raise PortError(f"{where}: timed out in the TLS handshake") from None
        except ssl.SSLError as exc:
            raise ProbeError(f"{where}: TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ProbeError(f"{where}: TLS handshake failed: {exc.strerror or exc}") from None
    if not der:
        raise ProbeError(f"{where}: no certificate served")
    return der, protocol


def inspect(
    host: str,
    port: int,
    mode: str,
    server_name: Optional[str],
    trust: ssl.SSLContext,
    timeout: float = 10.0,
    key_type: Optional[str] = None,
) -> Handshake:
    """Handshake with SNI ``server_name`` (None: none), verifying the chain with ``trust`` (which
    the caller limits to ``key_type`` with only_key_type; the unverified retry is limited here).

    If the chain does not verify, a second connection without verification fetches the leaf. Both
    share one budget of ``timeout`` seconds. Raises PortClosedError, PortError or ProbeError.
    """
    deadline = time.monotonic() + timeout
    try:
        der, protocol = _attempt(host, port, mode, server_name, trust, deadline)
        return Handshake(der, protocol, None)
    except ssl.SSLCertVerificationError as exc:
        reason = str(exc.verify_message or exc.reason or exc)
    der, protocol = _attempt(host, port, mode, server_name, _unverified_context(key_type), deadline)
    return Handshake(der, protocol, reason)
