"""Verify step, part 2: after a reload, prove each daemon serves the new certificates.

``doveadm reload`` exits 0 when Dovecot refuses the new configuration and keeps the old one, and
Postfix picks up a table in new processes only; a TLS handshake with SNI is the one reliable judge.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

from .certfiles import fingerprint
from .errors import ServiceError
from .listeners import Listener
from .probe import ProbeError, served_certificate


def _answers(listener: Listener, timeout: float) -> bool:
    try:
        served_certificate(listener.host, listener.port, listener.mode, None, timeout)
        return True
    except ProbeError:
        return False


def answering(listeners: List[Listener], timeout: float = 3.0) -> List[Listener]:
    """The listeners that complete a TLS handshake now: taken before a reload, they are what the
    daemon must serve again after it (a listener without TLS, such as a content filter's
    re-injection port, is not held against it)."""
    return [listener for listener in listeners if _answers(listener, timeout)]


def _silent(listeners: List[Listener], timeout: float, every: bool) -> List[Listener]:
    """Those of ``listeners`` that have not completed a handshake within ``timeout`` seconds in
    all, each tried in turn until then (until one has, unless ``every``): a daemon re-reading its
    configuration serves no TLS for a while (Dovecot 2.4 at 20,000 names: ~5 s), a throttled
    login service for longer."""
    deadline = time.monotonic() + timeout
    waiting = list(listeners)
    while True:
        waiting = [
            item for item in waiting if not _answers(item, max(0.1, min(deadline - time.monotonic(), 5.0)))
        ]
        answered = len(waiting) < len(listeners)
        if not waiting or (answered and not every) or time.monotonic() >= deadline:
            return waiting
        time.sleep(0.25)


#: What to expect from one handshake: (SNI name, the only key type the client accepts or None).
Expectation = Tuple[str, Optional[str]]


class DarkError(ServiceError):
    """After a reload the daemon serves no TLS on a listener that served before it (or, where none
    was known to, on any of its listeners)."""


def confirm(
    daemon: str,
    listeners: List[Listener],
    expected: Dict[Expectation, str],
    timeout: float = 10.0,
    before: Optional[List[Listener]] = None,
) -> Optional[str]:
    """Wait until ``daemon`` serves TLS on every listener of ``before`` (those that served before
    the reload; None or empty: on at least one of ``listeners``), then until it serves
    ``expected`` ((SNI name, client key type) -> leaf fingerprint) there. A name an ECDSA and an RSA
    lineage serve side by side is asked by an ECDSA-only and an RSA-only client, each expecting
    its lineage's leaf.

    Returns a warning when the configuration names no TLS listener (nothing to judge by). Raises
    DarkError when a listener stays silent for ``timeout`` seconds (the daemon refused the
    configuration or died, or a login service is throttled: ``systemctl reload`` and ``doveadm
    reload`` exit 0 then), and ServiceError when a name is still served another certificate.
    """
    if not listeners:
        return f"could not confirm what {daemon} serves: no TLS listener found in its configuration"
    required = before or listeners
    silent = _silent(required, timeout, every=bool(before))
    if before and silent:
        where = ", ".join(str(item) for item in silent)
        raise DarkError(f"{daemon} serves no TLS on {where} {timeout:.0f} s after the reload (it did before)")
    if len(silent) == len(required):
        where = ", ".join(str(item) for item in listeners)
        raise DarkError(
            f"{daemon} serves no TLS after the reload: no handshake within {timeout:.0f} s on {where}"
        )
    listener = next(item for item in required if item not in silent)
    for (name, key_type), want in expected.items():
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = fingerprint(
                    served_certificate(listener.host, listener.port, listener.mode, name, timeout, key_type)
                )
            except ProbeError as exc:
                got = f"no certificate ({exc})"
            if got == want:
                break
            if time.monotonic() > deadline:
                client = f" to {key_type}-only clients" if key_type else ""
                raise ServiceError(
                    f"{daemon} did not take the new configuration: {name} on {listener} is served"
                    f"{client} {got[:16]}, expected {want[:16]}"
                )
            time.sleep(0.2)
    return None
