"""Verify step, part 2: after a reload, prove each daemon serves the new certificates.

``doveadm reload`` exits 0 when Dovecot refuses the new configuration and keeps the old one, and
Postfix picks up a table in new processes only; a TLS handshake with SNI is the one reliable judge.
"""

from __future__ import annotations

import hashlib
import time
from typing import Dict, List, Optional, Tuple

from .errors import MisconfiguredError
from .listeners import Listener
from .probe import ProbeError, served_certificate


def _working_listener(listeners: List[Listener], timeout: float) -> Optional[Listener]:
    """The first listener that completes a handshake within ``timeout`` seconds in all, trying
    each in turn until then: a daemon re-reading its configuration serves no TLS for a while
    (Dovecot 2.4 at 10,000 names: ~10 s), and one that refused it serves none at all."""
    deadline = time.monotonic() + timeout
    while True:
        for listener in listeners:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                served_certificate(listener.host, listener.port, listener.mode, None, min(left, 5.0))
                return listener
            except ProbeError:
                continue
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


#: What to expect from one handshake: (SNI name, the only key type the client accepts or None).
Expectation = Tuple[str, Optional[str]]


class DarkError(MisconfiguredError):
    """After a reload the daemon completes no TLS handshake on any of its listeners."""


def confirm(
    daemon: str, listeners: List[Listener], expected: Dict[Expectation, str], timeout: float = 10.0
) -> Optional[str]:
    """Wait until ``daemon`` serves TLS on one of its listeners, then until it serves ``expected``
    ((SNI name, client key type) -> leaf fingerprint) there. A name an ECDSA and an RSA lineage
    serve side by side is asked by an ECDSA-only and an RSA-only client, each expecting its leaf.

    Returns a warning when the configuration names no TLS listener (nothing to judge by). Raises
    DarkError when no listener completes a handshake within ``timeout`` seconds (the daemon
    refused the configuration or died: ``systemctl reload`` and ``doveadm reload`` exit 0 then),
    and MisconfiguredError when a name is still served another certificate after ``timeout``.
    """
    if not listeners:
        return f"could not confirm what {daemon} serves: no TLS listener found in its configuration"
    listener = _working_listener(listeners, timeout)
    if listener is None:
        where = ", ".join(str(item) for item in listeners)
        raise DarkError(
            f"{daemon} serves no TLS after the reload: no handshake within {timeout:.0f} s on {where}"
        )
    for (name, key_type), want in expected.items():
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = hashlib.sha256(
                    served_certificate(listener.host, listener.port, listener.mode, name, timeout, key_type)
                ).hexdigest()
            except ProbeError as exc:
                got = f"no certificate ({exc})"
            if got == want:
                break
            if time.monotonic() > deadline:
                client = f" to {key_type}-only clients" if key_type else ""
                raise MisconfiguredError(
                    f"{daemon} did not take the new configuration: {name} on {listener} is served"
                    f"{client} {got[:16]}, expected {want[:16]}"
                )
            time.sleep(0.2)
    return None
