"""Small typed values that flow through the pipeline: lineages, SNI entries and the plan."""

from __future__ import annotations

from functools import cached_property
from typing import (
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

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
        return lineage_id_of(self.fullchain)


def lineage_id_of(fullchain: str) -> str:
    """The lineage id of a full chain path: its directory (CertFiles.lineage_id)."""
    cut = fullchain.rfind("/")
    return fullchain[:cut] if cut > 0 else fullchain[: cut + 1]


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

    def row(self) -> Row:
        return (self.files.key, self.files.fullchain, self.digest, self.key_type, *self.names)

    @classmethod
    def from_row(cls, row: Row) -> Lineage:
        return cls(CertFiles(row[0], row[1]), tuple(row[4:]), row[2], row[3])


#: A lineage as the state file keeps it, (key, fullchain, digest, key type, name...): a list in
#: JSON encodes and decodes in a third of the time of a keyed object (state.py checks its fields).
Row = Tuple[str, ...]


class Lineages(Mapping[str, Lineage]):
    """The lineages of a plan by id, held as rows and each built into a Lineage when first asked
    for: a deployment on a host of 10,000 lineages asks about a few, and building all of them was
    a third of its time. Never changed once made (``replaced`` makes a new one): copying 10,000
    rows by reference takes well under a millisecond, so no overlay or shared state is needed.
    """

    __slots__ = ("_built", "_rows")

    def __init__(self, lineages: Optional[Mapping[str, Lineage]] = None) -> None:
        lineages = lineages or {}
        self._rows: Dict[str, Row] = {lid: lineage.row() for lid, lineage in lineages.items()}
        #: The lineages built so far (a memo: what they are built from never changes).
        self._built: Dict[str, Lineage] = dict(lineages)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[str]]) -> Lineages:
        """Lineages from checked rows (state.py), keyed by the directory of their full chain."""
        lineages = cls()
        lineages._rows = {lineage_id_of(row[1]): tuple(row) for row in rows}
        return lineages

    def __getitem__(self, lineage_id: str) -> Lineage:
        built = self._built.get(lineage_id)
        if built is None:
            built = self._built[lineage_id] = Lineage.from_row(self._rows[lineage_id])
        return built

    def __contains__(self, lineage_id: object) -> bool:
        return lineage_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lineages):
            return self._rows == other._rows
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Lineages({dict(self.items())!r})"

    def ids(self) -> Set[str]:
        """Every lineage id, as a set (without building a lineage)."""
        return set(self._rows)

    def replaced(self, lineages: Mapping[str, Lineage], dropped: Iterable[str] = ()) -> Lineages:
        """New lineages: these with ``lineages`` added or replaced and ``dropped`` taken out."""
        result = Lineages()
        result._rows = dict(self._rows)
        result._built = {lid: lin for lid, lin in self._built.items() if lid not in lineages}
        for lineage_id in dropped:
            result._rows.pop(lineage_id, None)
            result._built.pop(lineage_id, None)
        for lineage_id, lineage in lineages.items():
            result._rows[lineage_id] = lineage.row()
            result._built[lineage_id] = lineage
        return result

    def changes_from(self, before: Lineages) -> Tuple[List[str], List[str]]:
        """(ids of the lineages added or changed since ``before``, ids of those dropped), sorted."""
        mine, theirs = self._rows, before._rows
        # A row that is the very object of ``before`` is unchanged (replaced() copies them by
        # reference): tested first, that spares comparing 10,000 rows field by field.
        get = theirs.get
        differ = [lid for lid, row in mine.items() if get(lid) is not row]
        changed = [lid for lid in differ if get(lid) != mine[lid]]
        dropped = [lid for lid in theirs if lid not in self._rows]
        return sorted(changed), sorted(dropped)

    def rows(self) -> List[Row]:
        """Every lineage as a row, in order."""
        return list(self._rows.values())

    def ids_by_name(self) -> Dict[str, List[str]]:
        """The ids of the lineages serving each name, read from the rows (no lineage is built)."""
        index: Dict[str, List[str]] = {}
        for lineage_id, row in self._rows.items():
            for name in row[4:]:
                index.setdefault(name, []).append(lineage_id)
        return index

    def keys_apart(self) -> List[Tuple[str, str]]:
        """(id, key path) of the lineages whose key is not in their directory (not certbot's
        layout), read from the rows (no lineage is built)."""
        return [(lid, row[0]) for lid, row in self._rows.items() if row[0].rpartition("/")[0] != lid]


class Plan:
    """Every lineage to serve, keyed by lineage id. A name belongs to at most one lineage per key
    type: an RSA and an ECDSA lineage may both serve it (see ``slots``), any other pair may not.
    A plan is not changed once made: the with_ and without methods make new ones."""

    def __init__(self, lineages: Optional[Mapping[str, Lineage]] = None) -> None:
        self.lineages = lineages if isinstance(lineages, Lineages) else Lineages(lineages)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return self.lineages == other.lineages

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Plan({dict(self.lineages.items())!r})"

    def lineages_by_name(self) -> List[Tuple[str, Tuple[Lineage, ...]]]:
        """Each name with the lineages serving it, primary first: the one place that says what a
        name serves, for the Postfix map, the Dovecot blocks, the default certificate and verify.
        Exact names first, then wildcards, each group sorted (Dovecot 2.3 uses the first matching
        ``local_name``, so exact names must come first)."""
        return list(self._lineages_index)

    def files_by_name(self) -> List[Tuple[str, Serving]]:
        """(name, files of each lineage serving it, primary first), in ``lineages_by_name`` order."""
        return list(self._files_index)

    def lineages_of(self, name: str) -> Tuple[Lineage, ...]:
        """The lineages serving ``name`` (primary first; empty if none), without ordering the
        whole plan: what one deployment asks about the few names it touches."""
        ids = self._by_name.get(name, ())
        lineages = tuple(self.lineages[lid] for lid in ids)
        return tuple(sorted(lineages, key=_primary_first)) if len(lineages) > 1 else lineages

    def files_of(self, name: str) -> Serving:
        """The files serving ``name``, primary first (as in ``files_by_name``)."""
        return tuple(lineage.files for lineage in self.lineages_of(name))

    # The views below are built once per plan (it is frozen): a run asks for them several times,
    # and at 10,000 names each build is a pass over, or a sort of, every name.

    @cached_property
    def _by_name(self) -> Dict[str, List[str]]:
        """The ids of the lineages serving each name (read from the rows: no lineage is built)."""
        return self.lineages.ids_by_name()

    @cached_property
    def _lineages_index(self) -> Tuple[Tuple[str, Tuple[Lineage, ...]], ...]:
        return tuple((name, self.lineages_of(name)) for name in sorted(self._by_name, key=exact_first))

    @cached_property
    def _files_index(self) -> Tuple[Tuple[str, Serving], ...]:
        served: List[Tuple[str, Serving]] = []
        for name, lineages in self._lineages_index:
            if len(lineages) == 1:
                served.append((name, (lineages[0].files,)))
            else:
                served.append((name, tuple([lin.files for lin in lineages])))
        return tuple(served)

    def name_count(self) -> int:
        return len(self._by_name)

    def names(self) -> List[str]:
        return [name for name, _ in self.lineages_by_name()]

    def dual_names(self) -> Set[str]:
        """Names an ECDSA and an RSA lineage serve side by side: which leaf a client gets depends
        on the key types it accepts, so checks of them ask with a client of one type."""
        return {name for name, ids in self._by_name.items() if len(ids) > 1}

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
        losing = {lid for name in claimed for lid in self._by_name.get(name, ())} - incoming.keys()
        dropped = [lid for lid in incoming if lid not in kept]  # every name went to a later one
        for lid in sorted(losing):
            lineage = self.lineages[lid]
            mine = slots(lineage.key_type)
            names = [n for n in lineage.names if not any((n, s) in taken for s in mine)]
            if not names:
                dropped.append(lid)
            elif len(names) < len(lineage.names):
                kept[lid] = lineage._replace(names=tuple(names))
        return self._changed(kept, dropped)

    def without(self, lineage_ids: Iterable[str]) -> Plan:
        return self._changed({}, lineage_ids)

    def with_changes(self, lineages: Mapping[str, Lineage], dropped: Iterable[str] = ()) -> Plan:
        """A new plan where ``lineages`` replace or add those of their ids as they are (no name
        moves) and the ``dropped`` ids are taken out: e.g. a state's journal applied to its
        snapshot's plan."""
        return self._changed(dict(lineages), dropped)

    def _changed(self, lineages: Dict[str, Lineage], dropped: Iterable[str]) -> Plan:
        """A new plan with ``lineages`` added or replaced and ``dropped`` taken out, that derives
        its name index from this one's."""
        drop = [lid for lid in dropped if lid in self.lineages]
        plan = Plan(self.lineages.replaced(lineages, drop))
        changed = set(lineages) | set(drop)
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
        candidates = changed.union(lid for name in names for lid in index.pop(name, ()))
        for lid in sorted(candidates):
            lineage = self.lineages.get(lid)
            if lineage is None:
                continue
            for name in lineage.names:
                if name in names:
                    index.setdefault(name, []).append(lid)
        self.__dict__["_by_name"] = index


def _primary_first(lineage: Lineage) -> Tuple[int, str]:
    return (lineage.rank, lineage.id)


def _keep(into: Dict[str, Lineage], lineage: Lineage, names: List[str]) -> None:
    """Put ``lineage`` into ``into`` with only ``names`` (not at all if none are left)."""
    if len(names) == len(lineage.names):
        into[lineage.id] = lineage
    elif names:
        into[lineage.id] = lineage._replace(names=tuple(names))
