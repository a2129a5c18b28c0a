"""Fixtures the unit tests share."""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest


@pytest.fixture
def reset_port() -> Iterator[int]:
    """A port that accepts TCP connections and resets each at once, as Dovecot's login processes
    do when the config process died (seen on Debian 13)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()
