"""Status: what the state says is deployed, checked against the files on disk and the two files this
package writes into the daemons' configuration. No handshakes and no daemon tools: it answers "would a
redeploy change anything" in milliseconds; ``verify`` answers "what do clients get".
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import fsutil
from .certfiles import check_files
from .dovecot.dropin import parse_dropin
from .errors import InputError, MisconfiguredError
from .model import Lineage
from .postfix.mapfile import Layout, map_key, parse_source
from .settings import Settings
from .state import State
from .verify import DEFAULT_EXPIRY_DAYS, OK, PROBLEM, CertInfo, expiry_note, lineage_leaf, table

SCHEMA_VERSION = 1

# Where a name stands in one daemon's configuration file.
IN_PLACE, STALE, MISSING, OTHER, UNKNOWN, UNUSED = "ok", "stale", "missing", "other", "unknown", "unused"

# Problem codes, part of the JSON schema.
KEY_MISSING = "key_missing"
CHAIN_MISSING = "chain_missing"
FILES_INVALID = "files_invalid"
EXPIRING = "expiring"
POSTFIX_STALE = "postfix_stale"
POSTFIX_MISSING = "postfix_missing"
POSTFIX_OTHER = "postfix_other"
DOVECOT_MISSING = "dovecot_missing"
DOVECOT_OTHER = "dovecot_other"


@dataclass(frozen=True)
class NameStatus:
    name: str
    lineage: str
    key: str
    fullchain: str
    key_present: bool
    chain_present: bool
    leaf: Optional[CertInfo]  # None: the chain could not be read
    postfix: str  # ok, stale, missing, other, unknown, unused
    dovecot: str  # ok, missing, other, unused
    problems: Tuple[str, ...]
    detail: str

    @property
    def status(self) -> str:
        return PROBLEM if self.problems else OK


@dataclass(frozen=True)
class StatusReport:
    state_path: str
    postfix_map: Optional[str]  # None: Postfix is not managed
    dovecot_config: Optional[str]  # None: Dovecot is not managed
    pending_reload: Tuple[str, ...]
    expiry_days: int
    now: datetime.datetime
    names: Tuple[NameStatus, ...]

    def exit_code(self) -> int:
        return 1 if self.pending_reload or any(n.problems for n in self.names) else 0


def _read(path: str) -> Optional[str]:
    try:
        data = fsutil.read_or_none(path)
    except OSError as exc:
        raise MisconfiguredError(f"cannot read {path}: {exc.strerror or exc}") from None
    return None if data is None else data.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Files:
    """Facts about one lineage's files, shared by all its names."""

    key_present: bool
    chain_present: bool
    leaf: Optional[CertInfo]
    digest_matches: Optional[bool]  # None: not known (files missing or refused)
    problems: Tuple[str, ...]
    notes: Tuple[str, ...]


def _lineage_files(lineage: Lineage, expiry_days: int, now: datetime.datetime) -> _Files:
    files = lineage.files
    key_present, chain_present = os.path.isfile(files.key), os.path.isfile(files.fullchain)
    problems: List[str] = []
    notes: List[str] = []
    if not key_present:
        problems.append(KEY_MISSING)
        notes.append(f"{files.key} is missing")
    leaf: Optional[CertInfo] = None
    if not chain_present:
        problems.append(CHAIN_MISSING)
        notes.append(f"{files.fullchain} is missing")
    else:
        try:
            leaf = lineage_leaf(files)
        except (InputError, ValueError) as exc:
            problems.append(FILES_INVALID)
            notes.append(str(exc))
    if leaf is not None and leaf.not_after - now < datetime.timedelta(days=expiry_days):
        problems.append(EXPIRING)
        notes.append(expiry_note(leaf, now))
    digest_matches: Optional[bool] = None
    if key_present and chain_present and FILES_INVALID not in problems:
        try:
            digest_matches = check_files(files).digest == lineage.digest
        except InputError as exc:
            problems.append(FILES_INVALID)
            notes.append(str(exc))
    return _Files(key_present, chain_present, leaf, digest_matches, tuple(problems), tuple(notes))


def collect(
    state: State,
    state_path: str,
    settings: Settings,
    expiry_days: int = DEFAULT_EXPIRY_DAYS,
    now: Optional[datetime.datetime] = None,
) -> StatusReport:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    postfix: Optional[Dict[str, List[Tuple[str, str]]]] = None
    dovecot: Optional[Dict[str, List[str]]] = None
    if settings.uses("postfix"):
        sources = Layout(settings.postfix_map, state.postfix.tables).sources()
        postfix = parse_source("".join(_read(source) or "" for source in sources))
    if settings.uses("dovecot"):
        dovecot = parse_dropin(_read(settings.dovecot_config) or "")
    facts = {lid: _lineage_files(lin, expiry_days, now) for lid, lin in state.plan.lineages.items()}
    names = []
    entries = [(name, files) for name, serving in state.plan.files_by_name() for files in serving]
    for name, files in entries:
        lineage = state.plan.lineages[files.lineage_id]
        fact = facts[files.lineage_id]
        problems, notes = list(fact.problems), list(fact.notes)
        pf = UNUSED
        if postfix is not None:
            entry = postfix.get(map_key(name))
            if entry is None:
                pf = MISSING
                problems.append(POSTFIX_MISSING)
                notes.append(f"not in {settings.postfix_map}")
            elif (files.key, files.fullchain) not in entry:
                pf = OTHER
                problems.append(POSTFIX_OTHER)
                notes.append(f"{settings.postfix_map} points it at {', '.join(c for _, c in entry)}")
            elif fact.digest_matches is False:
                pf = STALE
                problems.append(POSTFIX_STALE)
                notes.append(f"key or chain changed since the map was built (digest {lineage.digest[:12]})")
            else:
                pf = IN_PLACE if fact.digest_matches else UNKNOWN
        dc = UNUSED
        if dovecot is not None:
            chains = dovecot.get(name)
            if chains is None:
                dc = MISSING
                problems.append(DOVECOT_MISSING)
                notes.append(f"not in {settings.dovecot_config}")
            elif files.fullchain not in chains:
                dc = OTHER
                problems.append(DOVECOT_OTHER)
                notes.append(f"{settings.dovecot_config} points it at {', '.join(chains) or 'no ssl_cert'}")
            else:
                dc = IN_PLACE
        names.append(
            NameStatus(
                name,
                files.lineage_id,
                files.key,
                files.fullchain,
                fact.key_present,
                fact.chain_present,
                fact.leaf,
                pf,
                dc,
                tuple(problems),
                "; ".join(notes),
            )
        )
    return StatusReport(
        state_path,
        settings.postfix_map if postfix is not None else None,
        settings.dovecot_config if dovecot is not None else None,
        tuple(sorted(state.pending_reload)),
        expiry_days,
        now,
        tuple(names),
    )


def _shown(value: str) -> str:
    return value if value in (IN_PLACE, UNUSED) else value.upper()


def render_table(report: StatusReport) -> str:
    lines = [
        f"state: {report.state_path}",
        f"postfix map: {report.postfix_map or 'not managed'}",
        f"dovecot drop-in: {report.dovecot_config or 'not managed'}",
        "pending reload: "
        + (
            ", ".join(report.pending_reload) + " (the next deployment or deploy hook reloads)"
            if report.pending_reload
            else "none"
        ),
        "",
    ]
    rows = [
        [
            n.name,
            n.lineage,
            "ok" if n.key_present else "MISSING",
            "ok" if n.chain_present else "MISSING",
            "-" if n.leaf is None else str(n.leaf.days_left(report.now)),
            _shown(n.postfix),
            _shown(n.dovecot),
            "ok" if not n.problems else "PROBLEM",
            n.detail,
        ]
        for n in report.names
    ]
    headers = ["NAME", "LINEAGE", "KEY", "CHAIN", "DAYS", "POSTFIX", "DOVECOT", "RESULT", "DETAIL"]
    lines += table(headers, rows) if rows else ["no names are mapped"]
    bad = sum(1 for n in report.names if n.problems)
    lines += ["", f"{len(report.names)} names: {len(report.names) - bad} ok, {bad} with problems"]
    return "\n".join(lines) + "\n"


def _time(when: Optional[datetime.datetime]) -> Optional[str]:
    return None if when is None else when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_json(report: StatusReport) -> str:
    """The ``--json`` document (schema in docs/verify.md)."""
    names: List[Dict[str, Any]] = [
        {
            "name": n.name,
            "lineage": n.lineage,
            "key": n.key,
            "key_present": n.key_present,
            "fullchain": n.fullchain,
            "fullchain_present": n.chain_present,
            "fingerprint": None if n.leaf is None else n.leaf.fingerprint,
            "not_after": _time(None if n.leaf is None else n.leaf.not_after),
            "days_left": None if n.leaf is None else n.leaf.days_left(report.now),
            "postfix": n.postfix,
            "dovecot": n.dovecot,
            "status": n.status,
            "problems": list(n.problems),
            "detail": n.detail,
        }
        for n in report.names
    ]
    bad = sum(1 for n in report.names if n.problems)
    doc = {
        "schema": "certbot-mailstack/status",
        "version": SCHEMA_VERSION,
        "checked_at": _time(report.now),
        "state": report.state_path,
        "postfix_map": report.postfix_map,
        "dovecot_config": report.dovecot_config,
        "pending_reload": list(report.pending_reload),
        "expiry_days": report.expiry_days,
        "exit_code": report.exit_code(),
        "summary": {OK: len(report.names) - bad, PROBLEM: bad},
        "names": names,
    }
    return json.dumps(doc, indent=1) + "\n"
