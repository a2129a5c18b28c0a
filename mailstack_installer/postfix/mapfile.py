"""The Postfix SNI map's source format: render, parse and edit it (text in, text out), and how
it is split into tables on a large host; the ``smtpd_tls_chain_files`` value of the default.

``postmap -F`` embeds every key and chain in the table, about 4 KB per name: 40 MB at 10,000
names. A deployment copies the live table, edits the copy and swaps it in (the candidate), so
one table would make every deployment copy 40 MB. Past ``SPLIT_AT`` names the map is split into
a power of two of tables, each holding the entries of the lineages whose id hashes to it, and a
deployment copies and edits only the tables its entries are in.

``tls_server_sni_maps`` then lists every table. smtpd looks a name up in each table in turn
before it tries the parent domain (``tls_server.c``: ``maps_file_find`` over all maps, then the
next label), and a name is in one table only, so the split changes nothing a client gets.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from ..constants import HEADER
from ..model import CertFiles, Plan, Serving, as_serving
from ..names import exact_first, is_wildcard

#: Names per table the split aims at, and the size up to which the map stays one table.
NAMES_PER_TABLE = 512
SPLIT_AT = 2 * NAMES_PER_TABLE

#: The edits of one table: keys to write with what they serve, and keys to delete.
Edits = Tuple[Dict[str, Serving], List[str]]


def map_key(name: str) -> str:
    """Postfix matches a parent domain written with a leading dot: ``*.a.test`` -> ``.a.test``."""
    return name[1:] if is_wildcard(name) else name


def entry_value(serving: Serving, separator: str = " ") -> str:
    """The files one name serves, each key before its chain as Postfix requires: one pair, or an
    ECDSA and an RSA pair that smtpd loads together and picks from by the client's signature
    algorithms (as smtpd_tls_chain_files)."""
    return separator.join(f"{files.key}{separator}{files.fullchain}" for files in serving)


def map_line(key: str, serving: Serving) -> str:
    """One line of a table source: ``key key-file fullchain-file [key-file fullchain-file]``."""
    return f"{key} {entry_value(serving)}\n"


def parse_source(text: str) -> Dict[str, List[Tuple[str, str]]]:
    """The reverse of map_line: source lines ``key key-file chain-file [key-file chain-file]`` ->
    {key: [(key-file, chain-file), ...]} (two pairs where an ECDSA and an RSA lineage serve the
    name); first wins."""
    entries: Dict[str, List[Tuple[str, str]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#"):
            pairs = list(zip(fields[1::2], fields[2::2]))
            entries.setdefault(fields[0].lower(), pairs)
    return entries


def tables_for(names: int, current: int = 1, given: int = 0) -> int:
    """How many tables the map should have: ``given`` if set, else one up to SPLIT_AT names, else
    the power of two that puts about NAMES_PER_TABLE names in each; never fewer than ``current``
    (a split costs a full rebuild, so a shrinking host keeps its tables)."""
    if given:
        return given
    wanted = 1
    if names > SPLIT_AT:
        while wanted * NAMES_PER_TABLE < names:
            wanted *= 2
    return max(wanted, current)


@dataclass(frozen=True)
class Layout:
    """Where the map's tables are: the ``--postfix-map`` path itself for one table, else
    ``<path>.00``, ``<path>.01``, ... (the source of each; postmap puts its table beside it)."""

    base: str
    count: int = 1

    def sources(self) -> List[str]:
        if self.count == 1:
            return [self.base]
        width = len(str(self.count - 1))
        return [f"{self.base}.{index:0{width}d}" for index in range(self.count)]

    def index_of(self, serving: Serving) -> int:
        """The table an entry is in: that of its primary lineage (a lineage's entries stay
        together, so a renewal edits one table)."""
        if self.count == 1:
            return 0
        return zlib.crc32(serving[0].lineage_id.encode()) % self.count


def render_tables(plan: Plan, layout: Layout, only: Sequence[int] = ()) -> Dict[int, str]:
    """The source text of each table (of those in ``only``, if given): ``name key-file
    fullchain-file [key-file fullchain-file]`` per line, exact names first, each group sorted."""
    wanted = set(only) if only else set(range(layout.count))
    lines: Dict[int, List[str]] = {index: [f"# {HEADER}\n"] for index in wanted}
    for name, serving in plan.files_by_name():
        index = layout.index_of(serving)
        if index in wanted:
            lines[index].append(map_line(map_key(name), serving))
    return {index: "".join(text) for index, text in lines.items()}


def table_edits(before: Plan, after: Plan, changed: Sequence[str], layout: Layout) -> Dict[int, Edits]:
    """The edits that turn the tables of ``before`` into those of ``after`` (both in ``layout``),
    by table: entries to write (new, re-pointed, moved to another table, or served by a lineage
    in ``changed``: every lineage of ``after`` that differs from ``before``'s, whose files' content
    may have changed, either of a dual entry's) and keys to delete.

    Only the names of lineages that differ between the plans can have a different entry, so only
    those are looked at: one lineage on a host of 10,000 costs a few lookups.
    """
    renewed = set(changed)
    touched: Set[str] = set()
    for lid in renewed.union(after.lineages.changes_from(before.lineages)[1]):
        for plan in (before, after):
            lineage = plan.lineages.get(lid)
            touched.update(lineage.names if lineage is not None else ())
    edits: Dict[int, Edits] = {}
    for name in sorted(touched, key=exact_first):
        new, old_serving = after.files_of(name), before.files_of(name)
        key = map_key(name)
        into = layout.index_of(new) if new else None
        was = layout.index_of(old_serving) if old_serving else None
        if was is not None and was != into:
            edits.setdefault(was, ({}, []))[1].append(key)
        if into is not None and (
            new != old_serving or was != into or any(files.lineage_id in renewed for files in new)
        ):
            edits.setdefault(into, ({}, []))[0][key] = new
    return edits


#: More entries changing in one table than this (a bulk import batch) renders its whole source
#: rather than editing the live one entry by entry.
EDIT_MAX = 256


def edit_source(text: str, written: Dict[str, Serving], removed: Sequence[str]) -> str:
    """The table source ``text`` with the ``removed`` keys' lines cut, the ``written`` keys' lines
    replaced where they are, and new keys added at the end (postmap does not care about order):
    a few searches of the text instead of rendering every entry."""
    for key in removed:
        at = text.find(f"\n{key} ") + 1
        if at > 0:
            text = text[:at] + text[text.index("\n", at) + 1 :]
    added = []
    for key, serving in written.items():
        line = map_line(key, serving)
        at = text.find(f"\n{key} ") + 1
        if at > 0:
            text = text[:at] + line + text[text.index("\n", at) + 1 :]
        else:
            added.append(line)
    return text + "".join(added)


def render_map(plan: Plan) -> str:
    """The source of a one-table map: ``name key-file fullchain-file [key-file fullchain-file]``
    per line (render_tables for a split one)."""
    return render_tables(plan, Layout(""))[0]


def entry_changes(before: Plan, after: Plan, changed: Sequence[str]) -> Edits:
    """table_edits for a one-table map."""
    return table_edits(before, after, changed, Layout("")).get(0, ({}, []))


#: Postfix's default certificate (3.4+): key and chain files, for clients that send no SNI or a
#: name the SNI map lacks. It replaces smtpd_tls_cert_file/smtpd_tls_key_file (Postfix 3.4+).
DEFAULT_CHAIN = "smtpd_tls_chain_files"


def chain_value(files: Union[CertFiles, Serving]) -> str:
    """The ``smtpd_tls_chain_files`` value serving a lineage (or an ECDSA and an RSA one): key
    first, as in the SNI map."""
    return entry_value(as_serving(files), ", ")


def same_chain(first: str, second: str) -> bool:
    """Whether two ``smtpd_tls_chain_files`` values list the same files (commas and/or spaces)."""
    return re.split(r"[\s,]+", first.strip()) == re.split(r"[\s,]+", second.strip())


@dataclass(frozen=True)
class DefaultChain:
    """What to do with ``smtpd_tls_chain_files``: its value now, the value to set (None: leave
    it), and the value it had before this package first set it (None: not set by us)."""

    current: str
    value: Optional[str]
    before: Optional[str]


def decide_default(current: str, before: Optional[str], default: Serving, served: Plan) -> DefaultChain:
    """Point smtpd_tls_chain_files (now ``current``) at ``default``, the lineage(s) covering the
    default name; when none does any more, put back the value it had before this package set it
    (``before``; None: this package has not), unless it was changed by hand since: it is then
    none of the values ``served`` (the plan it was set for) could have given it."""
    if default:
        value = chain_value(default)
        if same_chain(current, value):
            return DefaultChain(current, None, before)
        return DefaultChain(current, value, current if before is None else before)
    if before is None:
        return DefaultChain(current, None, None)
    ours = [chain_value(lineage.files) for lineage in served.lineages.values()]
    ours += {chain_value(serving) for _, serving in served.files_by_name() if len(serving) > 1}
    if not any(same_chain(current, value) for value in ours):
        return DefaultChain(current, None, None)  # changed by hand: left as it is, and forgotten
    if same_chain(current, before):
        return DefaultChain(current, None, None)
    return DefaultChain(current, before, None)
