"""confirm.py: after a reload, a daemon must serve TLS where it did, and the sample as planned."""

from __future__ import annotations

from typing import List

import pytest

from mailstack_installer import confirm as confirm_module
from mailstack_installer.confirm import DarkError, confirm
from mailstack_installer.listeners import Listener


def test_a_daemon_that_resets_every_connection_is_dark_not_a_warning(reset_port: int) -> None:
    listeners: List[Listener] = [Listener("dovecot", "127.0.0.1", reset_port, "tls")]
    with pytest.raises(DarkError, match=r"dovecot serves no TLS after the reload: no handshake within 1 s"):
        confirm("dovecot", listeners, {}, timeout=1.0)


def test_a_listener_that_served_before_must_serve_again(reset_port: int) -> None:
    """Dovecot throttles a login service that failed: IMAP may stay dark while POP3 answers."""
    listeners: List[Listener] = [Listener("dovecot", "127.0.0.1", reset_port, "tls")]
    with pytest.raises(DarkError, match=r"serves no TLS on 127.0.0.1:\d+ \(tls\) 1 s after the reload"):
        confirm("dovecot", listeners, {}, timeout=1.0, before=listeners)


def test_a_configuration_without_tls_listeners_is_only_a_warning() -> None:
    assert "no TLS listener found" in (confirm("postfix", [], {}, timeout=0.1) or "")


def test_the_dark_check_retries_until_the_daemon_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot 2.4 serves no TLS for ~10 s after a reload at 10,000 names: not yet dark."""
    calls: List[int] = []

    def served(host: str, port: int, mode: str, name: object, timeout: float, *rest: object) -> bytes:
        calls.append(port)
        if len(calls) < 4:
            raise confirm_module.ProbeError("connection reset")
        return b"leaf"

    monkeypatch.setattr(confirm_module, "served_certificate", served)
    assert confirm("dovecot", [Listener("dovecot", "127.0.0.1", 993, "tls")], {}, timeout=5.0) is None
    assert len(calls) == 4
