"""Small typed values that flow through the pipeline: lineages, SNI entries and the plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Sequence, Set, Tuple, Union

from .names import exact_first


class CertFiles(NamedTuple):
    """The two files an SNI entry points at: the private key and the full chain (leaf + issuers).

    A named tuple, as is Lineage: a run on a host of 10,000 lineages builds one of each per
    lineage from the state file, and a frozen dataclass costs four times as much to build.
    """

    key: str
    fullchain: str

    @property
    def lineage_id(self) -> str:
        """The directory of the full chain: certbot's ``live/<name>`` for a lineage (the paths are
        absolute and normalised, names.check_path)."""
        cut = self.fullchain.rfind("/")
        return self.fullchain[:cut] if cut > 0 else self.fullchain[: cut + 1]


#: The key types a name can be served with side by side: one RSA and one ECDSA lineage, and the TLS
#: library picks by the client's signature algorithms. Any other type (Ed25519, or "" = not known,
#: as in state files written before key types were kept) serves a name alone.
DUAL_TYPES = ("ec", "rsa")


def slots(key_type: str) -> FrozenSet[str]:
    """The places on a name a lineage of ``key_type`` occupies: its own type for RSA and ECDSA,
    both for any other, so that only an RSA + ECDSA pair ever shares a name."""
    return frozenset((key_type,)) if key_type in DUAL_TYPES else frozenset(DUAL_TYPES)


#: Which files serve one name: one pair, or an ECDSA and an RSA pair (primary first).
Serving = Tuple[CertFiles, ...]


def as_serving(files: Union[CertFiles, Sequence[CertFiles], None]) -> Serving:
    """One pair, several or none, as a Serving tuple (callers may pass a lone CertFiles)."""
    if files is None:
        return ()
    return (files,) if isinstance(files, CertFiles) else tuple(files)


class Lineage(NamedTuple):
    """One certificate lineage as deployed: its files, its names, a digest of their content, and
    its private key's type ("rsa", "ec", another, or "" when not known yet)."""

    files: CertFiles
    names: Tuple[str, ...]
    digest: str = ""
    key_type: str = ""

    @property
    def id(self) -> str:
        return self.files.lineage_id

    @property
    def rank(self) -> int:
        """Order among the lineages serving one name: ECDSA is primary (smaller and faster, what
        current clients prefer), RSA the alternative for clients that offer no ECDSA."""
        return DUAL_TYPES.index(self.key_type) if self.key_type in DUAL_TYPES else len(DUAL_TYPES)


@dataclass(frozen=True)
class Plan:
    """Every lineage to serve, keyed by lineage id. A name belongs to at most one lineage per key
    type: an RSA and an ECDSA lineage may both serve it (see ``slots``), any other pair may not."""

    lineages: Dict[str, Lineage] = field(default_factory=dict)

    def entries(self) -> List[Tuple[str, CertFiles]]:
        """(name, files) pairs: exact names first, then wildcards, each group sorted; a name two
        lineages serve comes twice, the primary first.

        Dovecot 2.3 uses the first matching ``local_name``, so exact names must come first.
        """
        return [(name, files) for name, serving in self.served() for files in serving]

    def serving(self) -> List[Tuple[str, Tuple[Lineage, ...]]]:
        """Each name with the lineages serving it, primary first: the one place that says what a
        name serves, for the Postfix map, the Dovecot blocks, the default certificate and verify.
        Exact names first, then wildcards, each group sorted (as ``entries``)."""
        return list(self._serving)

    def served(self) -> List[Tuple[str, Serving]]:
        """(name, files of each lineage serving it, primary first), in ``serving`` order."""
        return list(self._served)

    def serving_of(self, name: str) -> Tuple[Lineage, ...]:
        """The lineages serving ``name`` (primary first; empty if none), without ordering the
        whole plan: what one deployment asks about the few names it touches."""
        lineages = self._by_name.get(name, [])
        return tuple(sorted(lineages, key=_primary_first)) if len(lineages) > 1 else tuple(lineages)

    def served_of(self, name: str) -> Serving:
        """The files serving ``name``, primary first (as in ``served``)."""
        return tuple(lineage.files for lineage in self.serving_of(name))

    # The views below are built once per plan (it is frozen): a run asks for them several times,
    # and at 10,000 names each build is a pass over, or a sort of, every name.

    @cached_property
    def _by_name(self) -> Dict[str, List[Lineage]]:
        by_name: Dict[str, List[Lineage]] = {}
        for lineage in self.lineages.values():
            for name in lineage.names:
                by_name.setdefault(name, []).append(lineage)
        return by_name

    @cached_property
    def _serving(self) -> Tuple[Tuple[str, Tuple[Lineage, ...]], ...]:
        serving = []
        for name in sorted(self._by_name, key=exact_first):
            lineages = self._by_name[name]
            if len(lineages) > 1:
                lineages = sorted(lineages, key=_primary_first)
            serving.append((name, tuple(lineages)))
        return tuple(serving)

    @cached_property
    def _served(self) -> Tuple[Tuple[str, Serving], ...]:
        served: List[Tuple[str, Serving]] = []
        for name, lineages in self._serving:
            if len(lineages) == 1:
                served.append((name, (lineages[0].files,)))
            else:
                served.append((name, tuple([lin.files for lin in lineages])))
        return tuple(served)

    def name_count(self) -> int:
        return len(self._by_name)

    def names(self) -> List[str]:
        return [name for name, _ in self.serving()]

    def dual_names(self) -> Set[str]:
        """Names an ECDSA and an RSA lineage serve side by side: which leaf a client gets depends
        on the key types it accepts, so checks of them ask with a client of one type."""
        return {name for name, lineages in self.serving() if len(lineages) > 1}

    def with_lineage(self, lineage: Lineage) -> Plan:
        """A new plan where ``lineage`` is added or replaced and its names are taken from any other
        of the same key type (an RSA and an ECDSA lineage then serve them side by side)."""
        return self.with_lineages([lineage])

    def with_lineages(self, lineages: Iterable[Lineage]) -> Plan:
        """with_lineage for many at once (a bulk import of 10,000 lineages must not copy the plan
        per lineage); a name two of them claim for the same key type goes to the later."""
        incoming = {lineage.id: lineage for lineage in lineages}
        claim: Dict[Tuple[str, str], str] = {}
        for lid, lineage in incoming.items():
            for name in lineage.names:
                for slot in slots(lineage.key_type):
                    claim[(name, slot)] = lid
        taken: Set[Tuple[str, str]] = set()  # (name, slot) an incoming lineage keeps
        kept: Dict[str, Lineage] = {}
        for lid, lineage in incoming.items():
            mine = slots(lineage.key_type)
            names = [n for n in lineage.names if all(claim[(n, s)] == lid for s in mine)]
            taken.update((n, s) for n in names for s in mine)
            _keep(kept, lineage, names)
        claimed = {name for name, _ in taken}
        # Only a lineage serving a claimed name can lose one: found by name, not by looking at
        # every lineage (one deployment on a host of 10,000).
        losing = {lin.id for name in claimed for lin in self._by_name.get(name, ())} - incoming.keys()
        result = dict(self.lineages)
        for lid in incoming.keys() & result.keys():
            del result[lid]
        for lid in sorted(losing):
            lineage = result[lid]
            mine = slots(lineage.key_type)
            names = [n for n in lineage.names if not any((n, s) in taken for s in mine)]
            if not names:
                del result[lid]
            elif len(names) < len(lineage.names):
                result[lid] = lineage._replace(names=tuple(names))  # keeps its place in the plan
        result.update(kept)
        plan = Plan(result)
        changed = incoming.keys() | losing
        plan._index_from(
            self, changed, {n for lid in changed for p in (self, plan) for n in p._names_of(lid)}
        )
        return plan

    def _names_of(self, lineage_id: str) -> Tuple[str, ...]:
        lineage = self.lineages.get(lineage_id)
        return lineage.names if lineage is not None else ()

    def _index_from(self, before: Plan, changed: Set[str], names: Set[str]) -> None:
        """Give this plan the name index of ``before`` (if it has one built), where only the
        lineages ``changed`` differ and ``names`` are all their names, old and new: those names are
        looked up again among the lineages that served them and the changed ones, instead of
        indexing 10,000 lineages again."""
        if "_by_name" not in before.__dict__:
            return
        index = dict(before._by_name)  # the lists are shared: those that change are replaced
        candidates = changed.union(lin.id for name in names for lin in index.pop(name, ()))
        for lid in sorted(candidates):
            lineage = self.lineages.get(lid)
            if lineage is None:
                continue
            for name in lineage.names:
                if name in names:
                    index.setdefault(name, []).append(lineage)
        self.__dict__["_by_name"] = index

    def without(self, lineage_ids: Iterable[str]) -> Plan:
        drop = set(lineage_ids)
        return Plan({lid: lin for lid, lin in self.lineages.items() if lid not in drop})


def _primary_first(lineage: Lineage) -> Tuple[int, str]:
    return (lineage.rank, lineage.id)


def _keep(into: Dict[str, Lineage], lineage: Lineage, names: List[str]) -> None:
    """Put ``lineage`` into ``into`` with only ``names`` (not at all if none are left)."""
    if len(names) == len(lineage.names):
        into[lineage.id] = lineage
    elif names:
        into[lineage.id] = lineage._replace(names=tuple(names))
