"""What has been deployed, kept under certbot's config dir: ``<config_dir>/mailstack/state.json``.

It records the options in force, every lineage with its names and the digest of the files built
into the Postfix map, and which daemons still need a reload. Comparing digests (content, not
timestamps) is what makes a second deployment of an unchanged lineage a cheap no-op.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Set

from . import fsutil
from .constants import STATE_DIRNAME
from .errors import MisconfiguredError
from .model import CertFiles, Lineage, Plan

#: 2: lineages as rows (see State.to_json); version 1 files are still read.
STATE_VERSION = 2


@dataclass
class State:
    options: Dict[str, str] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    pending_reload: Set[str] = field(default_factory=set)
    #: Lineages changed since the daemons were last confirmed (by handshake) to serve them.
    unconfirmed: Set[str] = field(default_factory=set)
    #: How many tables the Postfix map is split into (maptables.Layout).
    postfix_tables: int = 1
    #: Identity of each Postfix table as last swapped in (postfix.Postfix.stamp), by table: while it
    #: still matches, the table holds ``plan`` and one lineage can be patched in, not rebuilt.
    postfix_stamps: List[str] = field(default_factory=list)
    #: What ``smtpd_tls_chain_files`` was ("" = unset) before this package first made a lineage
    #: Postfix's default certificate; None while it has not. Put back when no lineage covers the
    #: default name any more.
    default_chain_before: Optional[str] = None
    #: SHA-256 of the Dovecot drop-in as last written (dovecot.text_digest): while the live file
    #: still has it, only the blocks that change need validating (none of the others was edited).
    dovecot_dropin: str = ""
    #: SHA-256 of each Postfix table's source as last written or checked, by table: while the live
    #: file still has it, the entries that change are edited into it instead of rendering them all.
    postfix_sources: List[str] = field(default_factory=list)

    def to_json(self) -> str:
        # Each lineage is one row, [key, fullchain, digest, key_type, name...], in plan order:
        # a list encodes and decodes in a third of the time of a keyed object, which at 10,000
        # lineages is tens of milliseconds on every run. The lineage id is the fullchain's directory.
        lineages = [
            [lin.files.key, lin.files.fullchain, lin.digest, lin.key_type, *lin.names]
            for lin in self.plan.lineages.values()
        ]
        doc = {
            "version": STATE_VERSION,
            "options": self.options,
            "pending_reload": sorted(self.pending_reload),
            "unconfirmed": sorted(self.unconfirmed),
            "postfix_tables": self.postfix_tables,
            "postfix_stamps": self.postfix_stamps,
            "default_chain_before": self.default_chain_before,
            "dovecot_dropin": self.dovecot_dropin,
            "postfix_sources": self.postfix_sources,
            "lineages": lineages,
        }
        # Compact: only the C encoder is fast enough for 10,000 lineages (indent= falls back to the
        # Python one); ``python3 -m json.tool`` shows it indented.
        return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> State:
        try:
            doc: Dict[str, Any] = json.loads(text)
            version = doc.get("version")
            if version == STATE_VERSION:
                lineages = _lineages_from_rows(doc["lineages"])
            elif version == 1:  # written by 0.1 before rows: an object per lineage id
                lineages = _lineages_from_objects(doc["lineages"])
            else:
                raise ValueError(f"unknown version {version!r}")
            return cls(
                options={str(k): str(v) for k, v in doc.get("options", {}).items()},
                plan=Plan(lineages),
                pending_reload={str(s) for s in doc.get("pending_reload", [])},
                unconfirmed={str(s) for s in doc.get("unconfirmed", [])},
                postfix_tables=_table_count(doc.get("postfix_tables", 1)),
                # "postfix_table": the one table's stamp, written before the map could be split.
                postfix_stamps=[str(s) for s in doc.get("postfix_stamps", [doc.get("postfix_table", "")])],
                default_chain_before=_optional_str(doc.get("default_chain_before")),
                dovecot_dropin=str(doc.get("dovecot_dropin", "")),
                postfix_sources=[str(s) for s in doc.get("postfix_sources", [])],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MisconfiguredError(
                f"state file {where} is damaged ({exc}): restore it from backup or remove it "
                "and deploy the lineages again"
            ) from None


def _lineages_from_rows(rows: List[Any]) -> Dict[str, Lineage]:
    lineages = {}
    for row in rows:
        try:
            if type(row) is not list or len(row) < 5:
                raise TypeError
            "".join(row)  # every field a string: a TypeError otherwise (checked in C, 10,000 rows)
        except TypeError:
            raise ValueError(
                f"lineage entry {str(row)[:80]} is not [key, fullchain, digest, key type, name...]"
            ) from None
        lineage = Lineage(CertFiles(row[0], row[1]), tuple(row[4:]), row[2], row[3])
        lineages[lineage.id] = lineage
    return lineages


def _lineages_from_objects(objects: Dict[str, Any]) -> Dict[str, Lineage]:
    lineages = {}
    for lid, raw in objects.items():
        files = CertFiles(key=str(raw["key"]), fullchain=str(raw["fullchain"]))
        names = tuple(str(n) for n in raw["names"])
        # "key_type" came with dual keys; older files lack it: "" until a conflict asks.
        lineages[lid] = Lineage(files, names, str(raw["digest"]), str(raw.get("key_type", "")))
    return lineages


def _table_count(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"postfix_tables {value!r} is not a positive number")
    return value


def _optional_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


class StateStore:
    """Loads, saves and locks the state of one certbot config dir."""

    def __init__(self, config_dir: str) -> None:
        self.directory = os.path.join(config_dir, STATE_DIRNAME)
        self.path = os.path.join(self.directory, "state.json")
        self.lock_path = os.path.join(self.directory, "lock")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> State:
        try:
            data = fsutil.read_or_none(self.path)
        except OSError as exc:
            raise MisconfiguredError(f"cannot read state file {self.path}: {exc.strerror}") from None
        if data is None:
            return State()
        return State.from_json(data.decode("utf-8", "replace"), self.path)

    def save(self, state: State) -> None:
        self.commit(self.stage(state))

    def stage(self, state: State) -> str:
        """Write ``state`` to a temp file beside the live one: proves the directory is writable
        (and the disk not full) before any daemon file is swapped. Returns the temp path."""
        self._ensure_dir()
        return fsutil.write_temp(self.path, state.to_json().encode(), mode=0o600)

    def commit(self, staged: str) -> None:
        fsutil.replace(staged, self.path)

    def discard(self, staged: str) -> None:
        fsutil.remove_quietly(staged)

    def _ensure_dir(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise MisconfiguredError(f"cannot create {self.directory}: {exc.strerror}") from None

    @contextlib.contextmanager
    def locked(self, timeout: float = 300.0) -> Iterator[None]:
        """Serialise runs (a renewal and a manual run); wait up to ``timeout`` seconds, then fail."""
        self._ensure_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise MisconfiguredError(f"cannot open lock file {self.lock_path}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise MisconfiguredError(
                            f"another certbot-mailstack run holds {self.lock_path} for over "
                            f"{timeout:.0f} s; try again when it has finished"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)
