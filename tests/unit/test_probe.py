"""probe.py: one TLS handshake, and nothing left behind when it fails."""

from __future__ import annotations

import gc
import warnings

import pytest

from mailstack_installer.probe import ProbeError, served_certificate


def test_a_reset_before_the_handshake_leaks_no_socket(reset_port: int) -> None:
    """Through ``wrap_socket`` about one probe in ten left a socket for the garbage collector
    when the reset came before the handshake (a ResourceWarning: the build's ``-W error`` failed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(300):
            with pytest.raises(ProbeError):
                served_certificate("127.0.0.1", reset_port, "tls", None, 1.0)
        gc.collect()
    assert [str(item.message) for item in caught if item.category is ResourceWarning] == []
