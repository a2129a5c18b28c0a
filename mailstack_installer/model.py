"""Small typed values that flow through the pipeline: lineages, SNI entries and the plan."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, Iterable, List, Tuple

from .names import is_wildcard


@dataclass(frozen=True)
class CertFiles:
    """The two files an SNI entry points at: the private key and the full chain (leaf + issuers)."""

    key: str
    fullchain: str

    @cached_property
    def lineage_id(self) -> str:
        """The directory of the full chain: certbot's ``live/<name>`` for a lineage (asked for
        several times per lineage and run, so kept: 10,000 lineages make it add up)."""
        return os.path.dirname(self.fullchain)


@dataclass(frozen=True)
class Lineage:
    """One certificate lineage as deployed: its files, its names, and a digest of their content."""

    files: CertFiles
    names: Tuple[str, ...]
    digest: str = ""

    @property
    def id(self) -> str:
        return self.files.lineage_id


@dataclass(frozen=True)
class Plan:
    """Every lineage to serve, keyed by lineage id; each name belongs to exactly one lineage."""

    lineages: Dict[str, Lineage] = field(default_factory=dict)

    def entries(self) -> List[Tuple[str, CertFiles]]:
        """(name, files) pairs: exact names first, then wildcards, each group sorted.

        Dovecot 2.3 uses the first matching ``local_name``, so exact names must come first.
        """
        return list(self._entries)

    @cached_property
    def _entries(self) -> Tuple[Tuple[str, CertFiles], ...]:
        """entries(), sorted once per plan: a run asks for them several times (the plan is frozen)."""
        pairs = [(name, lin.files) for lin in self.lineages.values() for name in lin.names]
        return tuple(sorted(pairs, key=lambda pair: (is_wildcard(pair[0]), pair[0])))

    def names(self) -> List[str]:
        return [name for name, _ in self.entries()]

    def with_lineage(self, lineage: Lineage) -> Plan:
        """A new plan where ``lineage`` is added or replaced and its names are taken from any other."""
        return self.with_lineages([lineage])

    def with_lineages(self, lineages: Iterable[Lineage]) -> Plan:
        """with_lineage for many at once, in one pass over the plan (a bulk import of 10,000
        lineages must not copy the plan per lineage); a name two of them claim goes to the later."""
        incoming = {lineage.id: lineage for lineage in lineages}
        owner = {name: lid for lid, lineage in incoming.items() for name in lineage.names}
        result: Dict[str, Lineage] = {}
        for lid, lineage in self.lineages.items():
            if lid not in incoming:
                _keep(result, lineage, [n for n in lineage.names if n not in owner])
        for lid, lineage in incoming.items():
            _keep(result, lineage, [n for n in lineage.names if owner[n] == lid])
        return Plan(result)

    def without(self, lineage_ids: Iterable[str]) -> Plan:
        drop = set(lineage_ids)
        return Plan({lid: lin for lid, lin in self.lineages.items() if lid not in drop})


def _keep(into: Dict[str, Lineage], lineage: Lineage, names: List[str]) -> None:
    """Put ``lineage`` into ``into`` with only ``names`` (not at all if none are left)."""
    if len(names) == len(lineage.names):
        into[lineage.id] = lineage
    elif names:
        into[lineage.id] = Lineage(lineage.files, tuple(names), lineage.digest)
