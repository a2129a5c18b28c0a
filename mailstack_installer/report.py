"""The ``deploy`` command's report: per lineage what a deployment does (or would do, in a dry run),
per daemon whether it runs and reloads, and whether what the daemons serve changes.

Configuration management (the Ansible module in ansible/) reads its JSON document: ``changed`` is
its "changed", and a dry run is its check mode. Schema in docs/user-guide.md ("deploy --json").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .model import Lineage, Plan, lineage_id_of

SCHEMA_VERSION = 1

# What happens to a lineage: part of the JSON schema.
ADD, UPDATE, UNCHANGED, FAILED = "add", "update", "unchanged", "failed"


def action_of(before: Plan, lineage: Lineage) -> str:
    """Whether deploying ``lineage`` over ``before`` adds it, updates it (names, files or content)
    or leaves it as it is. A key type missing from an old state is not a change."""
    known = before.lineages.get(lineage.id)
    if known is None:
        return ADD
    if known.key_type == "" or lineage.key_type == "":
        known = known._replace(key_type=lineage.key_type)
    return UNCHANGED if known == lineage else UPDATE


@dataclass(frozen=True)
class LineageResult:
    path: str  # the lineage dir as given (live/<name>)
    action: str  # add, update, unchanged, failed
    names: Tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class DaemonResult:
    service: str
    running: bool
    reload: bool  # reloaded (would reload, in a dry run)


@dataclass
class Report:
    dry_run: bool
    lineages: List[LineageResult] = field(default_factory=list)
    unmapped: List[str] = field(default_factory=list)  # lineage dirs whose files are gone
    daemons: List[DaemonResult] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    #: Whether the daemons' configuration changes (a daemon reloads): Ansible's "changed".
    changed: bool = False

    @property
    def failed(self) -> List[LineageResult]:
        return [result for result in self.lineages if result.action == FAILED]

    def counts(self) -> Dict[str, int]:
        counts = {action: 0 for action in (ADD, UPDATE, UNCHANGED, FAILED)}
        for result in self.lineages:
            counts[result.action] += 1
        return counts

    def exit_code(self) -> int:
        return 1 if self.failed else 0


def lineage_results(
    dirs: List[str], actions: Dict[str, Lineage], before: Plan, failed: List[Tuple[str, str]]
) -> List[LineageResult]:
    """One result per lineage dir, in the order given: ``actions`` maps a lineage id to the lineage
    deployed from it, ``failed`` holds (lineage dir, error)."""
    errors = {_lineage_id(path): error for path, error in failed}
    results = []
    for path in dirs:
        error = errors.get(_lineage_id(path))
        lineage = actions.get(_lineage_id(path))
        if error is not None or lineage is None:
            results.append(LineageResult(path, FAILED, error=error or "not deployed"))
        else:
            results.append(LineageResult(path, action_of(before, lineage), lineage.names))
    return results


def _lineage_id(lineage_dir: str) -> str:
    """The id the pipeline gives the lineage in ``lineage_dir`` (a trailing slash aside)."""
    return lineage_id_of(os.path.join(lineage_dir, "fullchain.pem"))


def render_json(report: Report) -> str:
    doc = {
        "schema": "certbot-mailstack/deploy",
        "version": SCHEMA_VERSION,
        "dry_run": report.dry_run,
        "changed": report.changed,
        "exit_code": report.exit_code(),
        "summary": report.counts(),
        "lineages": [
            {
                "lineage": os.path.basename(os.path.normpath(r.path)),
                "path": r.path,
                "action": r.action,
                "names": list(r.names),
                **({"error": r.error} if r.error else {}),
            }
            for r in report.lineages
        ],
        "unmapped": report.unmapped,
        "daemons": [{"service": d.service, "running": d.running, "reload": d.reload} for d in report.daemons],
        "warnings": report.warnings,
    }
    return json.dumps(doc, indent=2) + "\n"


def render_text(report: Report) -> str:
    """The dry run's human summary: one line per lineage that would change, then the daemons."""
    lines = []
    for r in report.lineages:
        if r.action != UNCHANGED:
            what = r.error if r.action == FAILED else ", ".join(r.names)
            lines.append(f"{r.action:<9} {os.path.basename(os.path.normpath(r.path))}: {what}")
    lines += [f"unmap     {os.path.basename(path)}: its files are gone" for path in report.unmapped]
    for d in report.daemons:
        state = "running" if d.running else "NOT running"
        lines.append(f"{d.service}: {state}; {'would reload' if d.reload else 'no reload'}")
    counts = report.counts()
    lines.append(
        f"dry run: {counts[ADD]} to add, {counts[UPDATE]} to update, {counts[UNCHANGED]} unchanged, "
        f"{counts[FAILED]} failed, {len(report.unmapped)} to unmap; "
        + ("the served configuration would change" if report.changed else "nothing would change")
    )
    return "\n".join(lines) + "\n"
