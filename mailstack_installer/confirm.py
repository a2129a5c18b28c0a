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
    """The first listener that completes a handshake within ``timeout`` seconds in all: a closed
    port fails at once, a daemon still reading its configuration may take most of it."""
    deadline = time.monotonic() + timeout
    for listener in listeners:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            served_certificate(listener.host, listener.port, listener.mode, None, left)
            return listener
        except ProbeError:
            continue
    return None


#: What to expect from one handshake: (SNI name, the only key type the client accepts or None).
Expectation = Tuple[str, Optional[str]]


def confirm(
    daemon: str, listeners: List[Listener], expected: Dict[Expectation, str], timeout: float = 10.0
) -> Optional[str]:
    """Wait until ``daemon`` serves ``expected`` ((SNI name, client key type) -> leaf fingerprint)
    on one of its listeners. A name an ECDSA and an RSA lineage serve side by side is asked by an
    ECDSA-only and an RSA-only client, each expecting its lineage's leaf.

    Returns a warning when no listener answers (nothing to judge by); raises MisconfiguredError
    when a name is still served another certificate after ``timeout`` seconds.
    """
    listener = _working_listener(listeners, timeout)
    if listener is None:
        where = ", ".join(str(item) for item in listeners) or "no TLS listener found in its configuration"
        return f"could not confirm what {daemon} serves: no listener answered ({where})"
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
