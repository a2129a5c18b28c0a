"""Where a daemon listens for TLS: the value each daemon's ``listeners()`` returns (read from its
own configuration), and the address rules both share.

Used to confirm after a reload that a daemon really serves the new certificates (``doveadm
reload`` exits 0 even when Dovecot keeps its old configuration), on whatever ports this host uses.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Optional

_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Listener:
    """One TLS-capable port: ``mode`` is how TLS starts (probe.py: smtp, imap, pop3, tls)."""

    daemon: str
    host: str
    port: int
    mode: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.mode})"


def connect_host(address: str) -> str:
    """The address to probe a listener bound to ``address`` on: loopback for a wildcard."""
    address = address.strip().strip("[]")
    if address in ("", "*", "0.0.0.0", "all", "loopback-only", "localhost", "::"):
        return _LOOPBACK
    return address


def port_number(value: str) -> Optional[int]:
    """A port given as a number or a service name (``submission``); None if unknown."""
    if value.isdigit():
        return int(value)
    try:
        return socket.getservbyname(value, "tcp")
    except OSError:
        return None


def first_address(listen: str) -> str:
    """The first address of an address list: Dovecot 2.3 prints ``listen`` as ``*, ::``, 2.4 as
    ``* ::``; Postfix's ``inet_interfaces`` takes either separator."""
    parts = [part for part in re.split(r"[\s,]+", listen.strip()) if part]
    return parts[0] if parts else ""
