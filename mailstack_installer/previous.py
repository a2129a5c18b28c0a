"""The last configuration the daemons were confirmed to serve, kept to go back to.

Saved before a change when nothing is pending (the live files are then known good), dropped once
the change is confirmed by handshakes. Restoring puts back the map source (recompiled), the
Dovecot drop-in, ``tls_server_sni_maps``, ``smtpd_tls_chain_files`` and the state as they were.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from . import fsutil
from .errors import MisconfiguredError
from .postfix import Postfix
from .postfix.mapfile import DEFAULT_CHAIN, same_chain
from .settings import Settings


def _map_labels(sources: Sequence[str]) -> List[Tuple[str, str]]:
    """(label in the snapshot, live path) of each map source: "map" for the first (the only one
    before the map could be split), "map.1" and on for the others."""
    return [("map" if index == 0 else f"map.{index}", source) for index, source in enumerate(sources)]


def _state_labels(files: Sequence[str]) -> List[Tuple[str, str]]:
    """(label, live path) of the state's snapshot ("state", as before it had a journal) and journal."""
    return [("state" if index == 0 else f"state.{index}", path) for index, path in enumerate(files)]


class Previous:
    def __init__(self, state_dir: str) -> None:
        self.directory = os.path.join(state_dir, "previous")
        self.meta = os.path.join(self.directory, "meta.json")

    def exists(self) -> bool:
        return os.path.exists(self.meta)

    def save(self, settings: Settings, state_files: Sequence[str], map_sources: Sequence[str]) -> None:
        """Copy what is live now: the map's sources (one per table), drop-in, state (snapshot and
        journal), and the tls_server_sni_maps and smtpd_tls_chain_files values."""
        self.drop()
        try:
            os.makedirs(self.directory, mode=0o700)
        except OSError as exc:
            raise MisconfiguredError(f"cannot create {self.directory}: {exc.strerror}") from None
        files: Dict[str, Optional[str]] = {}
        for label, path in (
            *_map_labels(map_sources),
            ("dropin", settings.dovecot_config),
            *_state_labels(state_files),
        ):
            kept = fsutil.snapshot(path, os.path.join(self.directory, label))
            files[label] = path if kept else None
        sni_param, default_chain = "", ""
        if settings.uses("postfix"):
            postfix = Postfix(settings)
            sni_param = postfix.sni_maps()
            default_chain = postfix.default_chain()
        meta = {
            "files": files,
            "map_sources": list(map_sources),
            "tls_server_sni_maps": sni_param,
            DEFAULT_CHAIN: default_chain,
        }
        fsutil.atomic_write(self.meta, json.dumps(meta).encode(), mode=0o600)

    def restore(self, settings: Settings, state_files: Sequence[str]) -> bool:
        """Put the map (recompiled), the drop-in, the state, tls_server_sni_maps and
        smtpd_tls_chain_files back; return whether there was a state (the caller loads it)."""
        try:
            with open(self.meta, encoding="utf-8") as handle:
                meta = json.load(handle)
            files = meta["files"]
            map_sources = [str(path) for path in meta.get("map_sources", [settings.postfix_map])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MisconfiguredError(
                f"cannot restore the previous configuration from {self.meta}: {exc}"
            ) from None
        targets = [(label, path, 0o600) for label, path in _map_labels(map_sources)]
        targets += [(label, path, 0o600) for label, path in _state_labels(state_files)]
        for label, target, mode in (*targets, ("dropin", settings.dovecot_config, 0o644)):
            saved = fsutil.read_or_none(os.path.join(self.directory, label))
            if files.get(label) is None or saved is None:
                fsutil.remove_quietly(target)
            else:
                fsutil.atomic_write(target, saved, mode=mode)
        if settings.uses("postfix"):
            postfix = Postfix(settings)
            value = meta.get("tls_server_sni_maps", "")
            postfix.set_sni_maps(value)
            if not value:
                for source in map_sources:
                    for suffix in (".db", ".lmdb", ".cdb"):
                        fsutil.remove_quietly(source + suffix)
            postfix.remove_tables_except(map_sources)  # a split made since
            chain = meta.get(DEFAULT_CHAIN)  # absent in a copy saved before the default was managed
            if chain is not None and not same_chain(str(chain), postfix.default_chain()):
                postfix.set_default_chain(str(chain))
        return files.get("state") is not None

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
