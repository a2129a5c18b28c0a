"""The last configuration the daemons were confirmed to serve, kept to go back to.

Kept before a change when none is kept (the live files are then known good), dropped once the
change is confirmed by handshakes. Each daemon keeps and puts back its own files (Daemon.keep,
Daemon.put_back); the state's files are kept beside them.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Sequence, Tuple

from . import fsutil
from .daemon import Daemon
from .errors import MisconfiguredError


def _state_labels(files: Sequence[str]) -> Sequence[Tuple[str, str]]:
    """(label, live path) of each of the state's files."""
    return [(f"state.{index}", path) for index, path in enumerate(files)]


class Previous:
    def __init__(self, state_dir: str) -> None:
        self.directory = os.path.join(state_dir, "previous")
        #: Written last: a copy without it is incomplete (a run killed while keeping) and ignored.
        self.marker = os.path.join(self.directory, "kept.json")

    def exists(self) -> bool:
        return os.path.exists(self.marker)

    def save(self, daemons: Sequence[Tuple[Daemon[Any], Any]], state_files: Sequence[str]) -> None:
        """Keep what is live now: each daemon's files (with its record), and the state's."""
        self.drop()
        try:
            os.makedirs(self.directory, mode=0o700)
        except OSError as exc:
            raise MisconfiguredError(f"cannot create {self.directory}: {exc.strerror}") from None
        for daemon, record in daemons:
            daemon.keep(self.directory, record)
        state = [
            fsutil.snapshot(path, os.path.join(self.directory, label))
            for label, path in _state_labels(state_files)
        ]
        fsutil.atomic_write(self.marker, json.dumps({"state": state}).encode())

    def restore(self, daemons: Sequence[Daemon[Any]], state_files: Sequence[str]) -> bool:
        """Put each daemon's files and the state back; return whether there was a state (the caller
        loads it)."""
        try:
            state = [bool(kept) for kept in json.loads(fsutil.read_or_none(self.marker) or b"")["state"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise MisconfiguredError(
                f"cannot restore the previous configuration from {self.marker}: {exc}"
            ) from None
        for daemon in daemons:
            daemon.put_back(self.directory)
        for (label, path), kept in zip(_state_labels(state_files), state):
            saved = fsutil.read_or_none(os.path.join(self.directory, label)) if kept else None
            if saved is None:
                fsutil.remove_quietly(path)
            else:
                fsutil.atomic_write(path, saved, mode=0o600)
        return bool(state) and state[0]

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
