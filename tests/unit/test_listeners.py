"""listeners.py: the address rules both daemons share."""

from __future__ import annotations

import pytest

from mailstack_installer.listeners import first_address


@pytest.mark.parametrize(
    "printed, first",
    [("* ::", "*"), ("*, ::", "*"), ("  127.0.0.1   ::1\n", "127.0.0.1"), ("[::1]", "[::1]"), ("", "")],
)
def test_first_listen_address_of_either_version(printed: str, first: str) -> None:
    assert first_address(printed) == first
