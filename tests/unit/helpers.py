"""Real key/certificate files for unit tests (made with cryptography, no network, no daemons)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

from tests.lab.certs import make_self_signed


def make_lineage(live: Path, names: Sequence[str]) -> Tuple[Path, Path]:
    """Write ``live/privkey.pem`` and ``live/fullchain.pem`` (self-signed EC leaf) for ``names``."""
    live.mkdir(parents=True, exist_ok=True)
    key, cert = make_self_signed(live, names[0], ec=True, extra_names=names[1:], days=90)
    key_path, chain_path = live / "privkey.pem", live / "fullchain.pem"
    key.replace(key_path)
    cert.replace(chain_path)
    return key_path, chain_path
