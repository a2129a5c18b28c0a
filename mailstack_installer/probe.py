"""Verify step: ask a daemon which certificate it serves for a name, by a real TLS handshake.

Mail ports speak a plain-text protocol before TLS (SMTP/IMAP/POP3 STARTTLS) or TLS at once
(SMTPS 465, IMAPS 993, POP3S 995). The leaf certificate is returned unverified: callers compare it
with what they expect.
"""

from __future__ import annotations

import socket
import ssl
from typing import Dict, Optional

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


class ProbeError(Exception):
    """The port did not answer, refused TLS, or spoke something unexpected."""


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
    host: str, port: int, mode: str, server_name: Optional[str], timeout: float = 10.0
) -> bytes:
    """DER of the leaf certificate served on ``host:port``; SNI ``server_name`` (None: no SNI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            _starttls(raw, mode)
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"{host}:{port} ({mode}): {exc}") from None
    if not der:
        raise ProbeError(f"{host}:{port} ({mode}): no certificate served")
    return der
