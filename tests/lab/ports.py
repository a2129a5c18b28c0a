"""Free TCP ports on 127.0.0.1 and waiting for listeners."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable

LOCALHOST = "127.0.0.1"

# Ports handed out by bind(0) come from the kernel's ephemeral range, where any outgoing connection
# (even our own readiness probes) may take one before the daemon binds it. Pick below that range.
_LOW, _HIGH = 20000, 32000

# Ports handed out in this process, never handed out again: the lab picks a daemon's ports when it
# is built and the daemon binds them later, so two instances built one after the other (Postfix,
# then Dovecot) could otherwise both get a port that was free between the two picks. A test run
# uses a few hundred of the 12,000.
_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (all sockets stay bound until every port is known)."""
    sockets: list[socket.socket] = []
    try:
        candidates = random.sample(range(_LOW, _HIGH), min(_HIGH - _LOW, count * 50))
        for port in candidates:
            if len(sockets) == count:
                break
            if port in _handed_out:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        if len(sockets) < count:
            raise RuntimeError(f"no {count} free ports between {_LOW} and {_HIGH}")
        ports = [int(sock.getsockname()[1]) for sock in sockets]
        _handed_out.update(ports)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int, host: str = LOCALHOST) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_ports(ports: Iterable[int], *, timeout: float, host: str = LOCALHOST) -> bool:
    """Wait until every port accepts connections; return False if ``timeout`` seconds pass first."""
    pending = set(ports)
    deadline = time.monotonic() + timeout
    while True:
        pending = {port for port in pending if not port_open(port, host)}
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def wait_for_ports_closed(ports: Iterable[int], *, timeout: float, host: str = LOCALHOST) -> bool:
    """Wait until no port accepts connections; return False if ``timeout`` seconds pass first."""
    pending = set(ports)
    deadline = time.monotonic() + timeout
    while True:
        pending = {port for port in pending if port_open(port, host)}
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
