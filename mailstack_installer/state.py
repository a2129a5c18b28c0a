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
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any, Dict, FrozenSet, Iterator, List, Mapping, Optional, Tuple

from . import fsutil
from .constants import STATE_DIRNAME
from .dovecot.daemon import DovecotRecord
from .errors import MisconfiguredError
from .model import CertFiles, Lineage, Lineages, Plan
from .postfix.daemon import PostfixRecord

#: 2: lineages as rows (see State.to_json); version 1 files are still read.
STATE_VERSION = 2


@dataclass(frozen=True)
class State:
    """One saved state; never changed (``dataclasses.replace`` makes the next one)."""

    options: Mapping[str, str] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    pending_reload: FrozenSet[str] = frozenset()
    #: Lineages changed since the daemons were last confirmed (by handshake) to serve them.
    unconfirmed: FrozenSet[str] = frozenset()
    #: What each daemon's last change left, as it needs to know for the next one.
    postfix: PostfixRecord = field(default_factory=PostfixRecord)
    dovecot: DovecotRecord = field(default_factory=DovecotRecord)

    def record(self, service: str) -> Any:
        """What the daemon ``service`` keeps in the state (its daemon module's record type)."""
        return {"postfix": self.postfix, "dovecot": self.dovecot}[service]

    def with_records(self, records: Mapping[str, Any]) -> State:
        """This state with the daemons' records in ``records`` (by service) replaced."""
        return replace(
            self, postfix=records.get("postfix", self.postfix), dovecot=records.get("dovecot", self.dovecot)
        )

    def to_json(self, generation: int = 0) -> str:
        """The whole state: a snapshot (see StateStore) of ``generation``."""
        doc = self._fields()
        doc["generation"] = generation
        doc["lineages"] = self.plan.lineages.rows()
        return _dumps(doc)

    def journal_json(self, generation: int, snapshot: Plan) -> Optional[str]:
        """This state as a journal over the snapshot of ``generation`` holding ``snapshot``: every
        field but the lineages, then the lineages that differ from the snapshot's and the ids of
        those it has no more; None when too many differ (write a snapshot instead)."""
        changed, dropped = self.plan.lineages.changes_from(snapshot.lineages)
        if len(changed) + len(dropped) > JOURNAL_MAX:
            return None
        doc = self._fields()
        rows = [self.plan.lineages[lid].row() for lid in changed]
        doc.update(journal_of=generation, lineages=rows, dropped=dropped)
        return _dumps(doc)

    def _fields(self) -> Dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "options": self.options,
            "pending_reload": sorted(self.pending_reload),
            "unconfirmed": sorted(self.unconfirmed),
            "postfix_tables": self.postfix.tables,
            "postfix_stamps": list(self.postfix.stamps),
            "default_chain_before": self.postfix.default_chain_before,
            "dovecot_dropin": self.dovecot.dropin,
            "postfix_sources": list(self.postfix.sources),
        }

    @classmethod
    def from_json(cls, text: str, where: str) -> State:
        return cls.from_doc(_loads(text, where), where)

    @classmethod
    def from_doc(cls, doc: Dict[str, Any], where: str, plan: Optional[Plan] = None) -> State:
        """The state a parsed snapshot holds; or, given the ``plan`` of a snapshot with a journal's
        lineages applied, the one a parsed journal holds."""
        plan = Plan(_lineages_of(doc, where)) if plan is None else plan
        try:
            return cls(
                options={str(k): str(v) for k, v in doc.get("options", {}).items()},
                plan=plan,
                pending_reload=frozenset(str(s) for s in doc.get("pending_reload", [])),
                unconfirmed=frozenset(str(s) for s in doc.get("unconfirmed", [])),
                postfix=PostfixRecord(
                    tables=_table_count(doc.get("postfix_tables", 1)),
                    # "postfix_table": the one table's stamp, written before the map could be split.
                    stamps=tuple(str(s) for s in doc.get("postfix_stamps", [doc.get("postfix_table", "")])),
                    sources=tuple(str(s) for s in doc.get("postfix_sources", [])),
                    default_chain_before=_optional_str(doc.get("default_chain_before")),
                ),
                dovecot=DovecotRecord(str(doc.get("dovecot_dropin", ""))),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _damaged(where, exc) from None


def _lineages_of(doc: Dict[str, Any], where: str) -> Lineages:
    """The lineages of a parsed snapshot."""
    try:
        version = doc.get("version")
        if version == STATE_VERSION:
            return _lineages_from_rows(doc["lineages"])
        if version == 1:  # written by 0.1: an object per lineage id
            return Lineages(_lineages_from_objects(doc["lineages"]))
        raise ValueError(f"unknown version {version!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(where, exc) from None


def _damaged(where: str, exc: Exception) -> MisconfiguredError:
    return MisconfiguredError(
        f"state file {where} is damaged ({exc}): restore it from backup or remove it "
        "and deploy the lineages again"
    )


def _loads(text: str, where: str) -> Dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _damaged(where, exc) from None
    if not isinstance(doc, dict):
        raise _damaged(where, ValueError("not a JSON object"))
    return doc


def _dumps(doc: Dict[str, Any]) -> str:
    # Compact: only the C encoder is fast enough for 10,000 lineages (indent= falls back to the
    # Python one); ``python3 -m json.tool`` shows it indented.
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


def _lineages_from_rows(rows: List[Any]) -> Lineages:
    """The lineages of checked rows (model.Row), built only when asked for: every row is checked
    here with a few passes in C, as building 10,000 lineages would cost a deployment a third of
    its time."""
    if not isinstance(rows, list):
        raise TypeError("lineages is not a list")
    if rows and (set(map(type, rows)) != {list} or min(map(len, rows)) < 5 or not _all_strings(rows)):
        bad = next(
            row
            for row in rows
            if type(row) is not list or len(row) < 5 or any(type(f) is not str for f in row)
        )
        raise ValueError(f"lineage entry {str(bad)[:80]} is not [key, fullchain, digest, key type, name...]")
    return Lineages.from_rows(rows)


def _all_strings(rows: List[List[Any]]) -> bool:
    try:
        "".join(chain.from_iterable(rows))  # a TypeError for anything but a string, checked in C
    except TypeError:
        return False
    return True


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


#: A journal holds at most this many lineages; a save that changes more writes a snapshot.
JOURNAL_MAX = 256


@dataclass(frozen=True)
class Staged:
    """A save written beside the live files, waiting for commit: (temp file, file it replaces)
    pairs in the order to rename them, and the snapshot it makes (None for a journal)."""

    renames: Tuple[Tuple[str, str], ...]
    snapshot: Optional[Tuple[int, Plan]] = None


class StateStore:
    """Loads, saves and locks the state of one certbot config dir.

    The state is a snapshot (``state.json``: every lineage) and a journal beside it
    (``state.journal``: the lineages changed since, and every other field). A save that changes
    a few lineages rewrites the small journal, not 10,000 lineages; one that changes many writes a
    new snapshot, and the journal of the old one is then ignored (it names the snapshot's
    generation) and removed. Both are replaced by rename, so a crash leaves one or the other.
    """

    def __init__(self, config_dir: str) -> None:
        self.directory = os.path.join(config_dir, STATE_DIRNAME)
        self.path = os.path.join(self.directory, "state.json")
        self.journal = os.path.join(self.directory, "state.journal")
        self.lock_path = os.path.join(self.directory, "lock")
        #: The snapshot on disk as last read or written: its identity (Postfix.stamp-like),
        #: generation and plan. A journal is written over it only while the file is still it.
        self._snapshot: Optional[Tuple[str, int, Plan]] = None

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def files(self) -> List[str]:
        return [self.path, self.journal]

    def load(self) -> State:
        try:
            data = fsutil.read_or_none(self.path)
            journal = fsutil.read_or_none(self.journal) if data is not None else None
        except OSError as exc:
            raise MisconfiguredError(f"cannot read state file {self.path}: {exc.strerror}") from None
        self._snapshot = None
        if data is None:
            return State()
        doc = _loads(data.decode("utf-8", "replace"), self.path)
        snapshot = Plan(_lineages_of(doc, self.path))
        generation = doc.get("generation", 0)
        self._snapshot = (fsutil.identity(self.path), generation, snapshot)
        entry = _loads(journal.decode("utf-8", "replace"), self.journal) if journal is not None else None
        if entry is None or entry.get("journal_of") != generation:
            # No journal, or that of an older snapshot (a crash before its removal).
            return State.from_doc(doc, self.path, snapshot)
        try:
            rows = _lineages_from_rows(entry["lineages"])
            plan = snapshot.with_changes({lid: rows[lid] for lid in rows}, map(str, entry["dropped"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise _damaged(self.journal, exc) from None
        return State.from_doc(entry, self.journal, plan)  # fields: the journal's

    def save(self, state: State) -> None:
        self.commit(self.stage(state))

    def stage(self, state: State) -> Staged:
        """Write ``state`` to temp files beside the live ones: proves the directory is writable
        (and the disk not full) before any daemon file is swapped."""
        self._ensure_dir()
        snapshot = self._snapshot
        if snapshot is not None and snapshot[0] == fsutil.identity(self.path):
            text = state.journal_json(snapshot[1], snapshot[2])
            if text is not None:
                return Staged(((fsutil.write_temp(self.journal, text.encode(), mode=0o600), self.journal),))
        generation = snapshot[1] + 1 if snapshot is not None else 1
        temp = fsutil.write_temp(self.path, state.to_json(generation).encode(), mode=0o600)
        return Staged(((temp, self.path),), (generation, state.plan))

    def commit(self, staged: Staged) -> None:
        for temp, path in staged.renames:
            fsutil.replace(temp, path)
        if staged.snapshot is not None:
            fsutil.remove_quietly(self.journal)  # of the old snapshot: ignored from now on
            self._snapshot = (fsutil.identity(self.path), *staged.snapshot)

    def discard(self, staged: Staged) -> None:
        for temp, _ in staged.renames:
            fsutil.remove_quietly(temp)

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
