"""Postfix, the daemon: the one caller of ``postconf``, ``postmap`` and ``postfix``.

It compiles the ``tls_server_sni_maps`` source (postfix/mapfile.py) with ``postmap -F``.

``postmap -F`` embeds the key and chain *contents* in the compiled table, so it is rebuilt whenever a
certificate changes. It exits 0 while skipping missing or unreadable files, so every expected key is
looked up in the candidate table before it replaces the live one.
"""

from __future__ import annotations

import base64
import binascii
import glob
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .. import fsutil, runner
from ..certfiles import pair_digests, pem_digest
from ..constants import MAP_SUFFIXES
from ..daemon import Change, Daemon, Step
from ..errors import InputError, MisconfiguredError, NotInstalledError
from ..listeners import Listener, connect_host, first_address, port_number
from ..model import Lineage, Plan, Serving
from ..names import normalize_name
from ..settings import Settings
from ..transaction import Transaction
from .mapfile import (
    DEFAULT_CHAIN,
    EDIT_MAX,
    DefaultChain,
    Edits,
    Layout,
    decide_default,
    edit_source,
    map_key,
    map_line,
    render_tables,
    same_chain,
    table_edits,
    tables_for,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    """One compiled table waiting beside the live one: the temp source and table, and the live
    source and table they replace."""

    index: int
    source: str
    table: str
    live_source: str
    live_table: str


@dataclass(frozen=True)
class Candidate:
    """The tables of a deployment, compiled and checked, and the layout they belong to."""

    layout: Layout
    tables: Tuple[Table, ...]


@dataclass(frozen=True)
class PostfixRecord:
    """What the state keeps of the map and main.cf as this package last left them."""

    #: How many tables the map is split into (mapfile.Layout).
    tables: int = 1
    #: Identity of each table as last swapped in (fsutil.identity), by table: while it still
    #: matches, the table holds the plan and one lineage can be patched in, not rebuilt.
    stamps: Tuple[str, ...] = ()
    #: SHA-256 of each table's source as last written or checked, by table: while the live file
    #: still has it, the entries that change are edited into it instead of rendering them all.
    sources: Tuple[str, ...] = ()
    #: What ``smtpd_tls_chain_files`` was ("" = unset) before this package first made a lineage
    #: Postfix's default certificate; None while it has not. Put back when no lineage covers the
    #: default name any more.
    default_chain_before: Optional[str] = None


@dataclass(frozen=True)
class PostfixStep(Step[PostfixRecord]):
    """Postfix's part of a change: the candidate tables (None: the map stays) and the default."""

    candidate: Optional[Candidate] = None
    chain: Optional[DefaultChain] = None


class Postfix(Daemon[PostfixRecord]):
    """One Postfix instance, addressed by its configuration directory (``-c DIR``)."""

    service = "postfix"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.postfix_dir
        self.main_cf = os.path.join(self.dir, "main.cf")
        self._map_type: Optional[str] = None

    def check_installed(self) -> None:
        for tool in ("postconf", "postmap", "postfix"):
            if runner.which(tool) is None:
                raise NotInstalledError(f"Postfix tool {tool} not found: is Postfix installed?")
        if not os.path.isfile(self.main_cf):
            raise NotInstalledError(f"Postfix is not configured: {self.main_cf} does not exist")

    # -- a change ------------------------------------------------------------------------------

    def fresh_record(self) -> PostfixRecord:
        return PostfixRecord()

    def prepare(self, change: Change, record: PostfixRecord, undo: Transaction) -> PostfixStep:
        """The tables that change, compiled and checked beside the live ones, and the default
        certificate's value; the map is split into more tables as the plan grows."""
        before_layout = Layout(self.settings.postfix_map, record.tables)
        names = max(change.after.name_count(), change.goal.name_count() if change.goal else 0)
        count = tables_for(names, record.tables, self.settings.postfix_map_tables)
        layout = Layout(self.settings.postfix_map, count)
        paths = {*before_layout.sources(), *layout.sources()}
        fsutil.remove_stale_temps([*paths, *(self.table_of(source) for source in paths)])
        warnings = [f"private key material was exposed: {fixed}" for fixed in self.secure_live_files(layout)]
        texts, edits, sources = self.tables_to_build(
            change.after, change.before, change.changed, layout, before_layout, record.sources
        )
        current = self.default_chain()
        chain = decide_default(current, record.default_chain_before, change.default, change.before)
        before = record.default_chain_before
        if (
            chain.value is None
            and chain.before is None
            and before is not None
            and not same_chain(current, before)
        ):
            logger.info(
                "smtpd_tls_chain_files was changed in %s since certbot-mailstack set it: left as it is",
                self.main_cf,
            )
        candidate = None
        if texts or not self.check_parameter(layout):
            candidate = self.build_candidate(
                change.after, layout, texts, edits, record.stamps, change.changed
            )
            undo.on_failure(self.discard, candidate)
        if chain.value:
            overrides = self.default_overrides()
            if overrides:
                warnings.append(
                    f"master.cf gives {', '.join(overrides)} its own certificate (-o smtpd_tls_chain_files "
                    "or smtpd_tls_cert_file): clients without SNI there do not get the default "
                    f"certificate set in {self.main_cf}"
                )
        stamps = self._stamps(candidate, record.stamps, layout != before_layout)
        swaps = candidate is not None or chain.value is not None
        files = {*before_layout.sources(), *layout.sources(), self.main_cf} if swaps else set()
        return PostfixStep(
            PostfixRecord(layout.count, stamps, tuple(sources), chain.before),
            reload=swaps,
            files=frozenset(files),
            warnings=tuple(warnings),
            candidate=candidate,
            chain=chain,
        )

    def swap(self, step: Step[PostfixRecord], undo: Transaction) -> None:
        assert isinstance(step, PostfixStep)
        if step.candidate is not None:
            self.commit(step.candidate, undo)
        if step.chain is not None and step.chain.value is not None:
            self.set_default_chain(step.chain.value)
            undo.on_failure(self.set_default_chain, step.chain.current)

    def check_config(self) -> None:
        self.postconf("tls_server_sni_maps")

    def after_restore(self) -> None:
        self.rebuild_live()

    def keep(self, directory: str, record: PostfixRecord) -> None:
        """The map's sources (their tables are rebuilt from them), ``tls_server_sni_maps`` and
        ``smtpd_tls_chain_files``."""
        sources = []
        for index, source in enumerate(Layout(self.settings.postfix_map, record.tables).sources()):
            label = f"postfix-map.{index}"
            sources.append(
                [source, label if fsutil.snapshot(source, os.path.join(directory, label)) else None]
            )
        kept = {"sources": sources, "sni_maps": self.sni_maps(), "default_chain": self.default_chain()}
        fsutil.atomic_write(os.path.join(directory, "postfix.json"), json.dumps(kept).encode())

    def put_back(self, directory: str) -> None:
        where = os.path.join(directory, "postfix.json")
        try:
            kept = json.loads(fsutil.read_or_none(where) or b"")
            sources = [(str(source), label) for source, label in kept["sources"]]
            sni_maps, chain = str(kept["sni_maps"]), str(kept["default_chain"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MisconfiguredError(f"cannot restore the previous Postfix map from {where}: {exc}") from None
        for source, label in sources:
            saved = fsutil.read_or_none(os.path.join(directory, label)) if label else None
            if saved is None:
                fsutil.remove_quietly(source)
            else:
                fsutil.atomic_write(source, saved, mode=0o600)
        self.set_sni_maps(sni_maps)
        if not sni_maps:
            for source, _ in sources:
                for suffix in set(MAP_SUFFIXES.values()):
                    fsutil.remove_quietly(source + suffix)
        self.remove_tables_except([source for source, _ in sources])  # a split made since
        if not same_chain(chain, self.default_chain()):
            self.set_default_chain(chain)

    def own_name(self) -> str:
        """``myhostname``: the name whose lineage becomes the default certificate unless one is
        given ("" if it is no host name)."""
        raw = self.myhostname()
        try:
            return normalize_name(raw)
        except InputError:
            logger.info("Postfix's myhostname %r is no host name: no default certificate is set", raw)
            return ""

    def _stamps(self, candidate: Optional[Candidate], before: Sequence[str], relaid: bool) -> Tuple[str, ...]:
        """The identity of each table after the swap: the candidate's for those it built, the ones
        recorded before for the others (none of them when the layout changed)."""
        if candidate is None:
            return tuple(before)
        stamps = ["" for _ in range(candidate.layout.count)]
        if not relaid:
            stamps[: len(before)] = list(before)[: candidate.layout.count]
        for table in candidate.tables:
            stamps[table.index] = self.stamp(table.table)
        return tuple(stamps)

    def postconf(self, *parameters: str) -> List[str]:
        out = runner.run(["postconf", "-c", self.dir, "-h", *parameters]).stdout
        return out.splitlines()

    def map_type(self) -> str:
        """The table type: as given, else the one tls_server_sni_maps already uses, else the default.

        A type this Postfix cannot build is refused saying why, where an ``auto`` type came from and
        which type it can build instead: hash and btree need Berkeley DB, which RHEL 10 and Alpine
        build without, and lmdb and cdb are separate packages on Debian.
        """
        if self._map_type is None:
            chosen, in_use = self.settings.postfix_map_type, None
            if chosen == "auto":
                in_use = self._type_in_use()
                chosen = in_use or "".join(self.postconf("default_database_type")).strip()
            supported = runner.run(["postconf", "-c", self.dir, "-m"]).stdout.split()
            if chosen in MAP_SUFFIXES and chosen in supported:
                self._map_type = chosen
                return chosen
            origin = ""
            if self.settings.postfix_map_type == "auto":
                if in_use:
                    source = f"tls_server_sni_maps in {self.main_cf}"
                elif runner.run(["postconf", "-c", self.dir, "-n", "default_database_type"]).stdout.strip():
                    source = f"default_database_type in {self.main_cf}"
                else:
                    source = "Postfix's built-in default_database_type"
                origin = f" (--postfix-map-type auto took it from {source})"
            bdb = ("hash", "btree")
            if chosen not in MAP_SUFFIXES:
                problem = f"Postfix map type {chosen!r}{origin} cannot hold an SNI map"
            elif chosen in bdb and not any(t in supported for t in bdb):
                problem = (
                    f"this Postfix is built without Berkeley DB, so map type {chosen}{origin} is unavailable"
                )
            elif chosen in bdb:
                problem = f"this Postfix does not support map type {chosen}{origin}"
            else:
                problem = (
                    f"this Postfix does not support map type {chosen}{origin} "
                    f"(is its postfix-{chosen} package installed?)"
                )
            usable = [t for t in ("lmdb", "cdb", "hash", "btree") if t in supported and t != chosen]
            if usable:
                advice = f"use --postfix-map-type {usable[0]} (postconf -m lists: {', '.join(supported)})"
            else:
                advice = (
                    f"postconf -m lists none of {', '.join(MAP_SUFFIXES)}: install Postfix's lmdb or cdb "
                    "support (e.g. the postfix-lmdb package)"
                )
            raise MisconfiguredError(f"{problem}: {advice}")
        return self._map_type

    def _current_maps(self) -> List[str]:
        value = " ".join(self.postconf("tls_server_sni_maps"))
        return [part for part in re.split(r"[\s,]+", value) if part]

    def _type_in_use(self) -> Optional[str]:
        for ref in self._current_maps():
            kind, _, path = ref.partition(":")
            if self.is_ours(path):
                return kind
        return None

    def is_ours(self, path: str) -> bool:
        """Whether ``path`` is this package's map source: --postfix-map, or one of its split
        tables' (``<path>.NN``)."""
        path = os.path.normpath(path)
        base = self.settings.postfix_map
        return path == base or (path.startswith(base + ".") and path[len(base) + 1 :].isdigit())

    def map_refs(self, layout: Layout) -> List[str]:
        return [f"{self.map_type()}:{source}" for source in layout.sources()]

    def table_of(self, source: str) -> str:
        return source + MAP_SUFFIXES[self.map_type()]

    def check_parameter(self, layout: Layout) -> bool:
        """True if tls_server_sni_maps names the tables of ``layout``; False if it is unset or
        names another layout of this package's map (changed at commit); raise if it names
        another's map."""
        current = self._current_maps()
        if not current:
            return False
        refs = self.map_refs(layout)
        if current == refs:
            return True
        kind = self.map_type()
        if all(ref.partition(":")[0] == kind and self.is_ours(ref.partition(":")[2]) for ref in current):
            return False
        raise MisconfiguredError(
            f"tls_server_sni_maps in {self.main_cf} is already set to {', '.join(current)}, not "
            f"{', '.join(refs)}: remove it (postconf -X tls_server_sni_maps) or point "
            "--postfix-map/--postfix-map-type at that map"
        )

    @staticmethod
    def stamp(table: str) -> str:
        """Identity of a table file (fsutil.identity): recorded for each table swapped in, so one
        that anyone rebuilt or restored since is rebuilt, not patched."""
        return fsutil.identity(table)

    def tables_to_build(
        self,
        plan: Plan,
        before: Plan,
        changed: Sequence[str],
        layout: Layout,
        before_layout: Layout,
        recorded: Sequence[str],
    ) -> Tuple[Dict[int, str], Optional[Dict[int, Edits]], List[str]]:
        """What a deployment does to the map: (index -> new source of each table to build, the
        edits from ``before`` when the layout stays, the digest of each table's source after).

        A table whose live source has the digest ``recorded`` for it has the edits made to its
        text (a few searches, however large it is); one that does not (edited by hand, restored,
        or the layout changed) is rendered from the plan and built if it differs, so what is live
        always ends up as the plan says. A table whose file is missing is built from its source.
        A table without edits is not read: a hand edit of its source shows when it next has some.
        """
        edits = table_edits(before, plan, changed, layout) if layout == before_layout else None
        texts: Dict[int, str] = {}
        digests: List[str] = []
        lives: List[Optional[bytes]] = []
        rendered: List[int] = []
        for index, source in enumerate(layout.sources()):
            untouched = edits is not None and index not in edits and index < len(recorded)
            if untouched and recorded[index] and os.path.exists(self.table_of(source)):
                digests.append(recorded[index])
                lives.append(None)
                continue
            live = fsutil.read_or_none(source)
            lives.append(live)
            live_text = live.decode("utf-8", "replace") if live is not None else ""
            digests.append(fsutil.text_digest(live) if live is not None else "")
            written, removed = edits.get(index, ({}, [])) if edits is not None else ({}, [])
            trusted = edits is not None and index < len(recorded) and bool(digests[index])
            if not trusted or recorded[index] != digests[index] or len(written) + len(removed) > EDIT_MAX:
                rendered.append(index)
            elif written or removed:
                texts[index] = edit_source(live_text, written, removed)
            elif not os.path.exists(self.table_of(source)):
                texts[index] = live_text
        for index, text in render_tables(plan, layout, rendered).items() if rendered else ():
            in_table = edits.get(index) if edits is not None else None
            if (
                edits is None
                or in_table
                or text.encode() != lives[index]
                or not os.path.exists(self.table_of(layout.sources()[index]))
            ):
                texts[index] = text
        for index, text in texts.items():
            digests[index] = fsutil.text_digest(text.encode())
        return texts, edits, digests

    def build_candidate(
        self,
        plan: Plan,
        layout: Layout,
        texts: Dict[int, str],
        edits: Optional[Dict[int, Edits]] = None,
        stamps: Sequence[str] = (),
        changed: Sequence[str] = (),
    ) -> Candidate:
        """Write and compile the tables in ``texts`` (index -> new source) beside the live ones,
        and prove the entries made it in.

        With ``edits`` (mapfile.table_edits from the plan the live tables hold) and a table's
        stamp matching the live one, that table is copied and only the entries that differ are
        edited, so one lineage costs the same on a host of 10,000 names as on one of 10; otherwise
        the table is compiled from its source. Either way each written key is looked up, and for
        each lineage id in ``changed`` one entry is decoded and compared with the digest of the
        files that were checked (postmap stores whatever it finds): one lookup per table.
        """
        self.check_parameter(layout)
        sources = layout.sources()
        for source in sources:
            fsutil.check_owned(source, "--postfix-map")
        kind = self.map_type()
        content = _content_keys(plan, layout, changed)
        tables: List[Table] = []
        try:
            for index, text in sorted(texts.items()):
                live_source = sources[index]
                source = fsutil.write_temp(live_source, text.encode(), mode=0o600)
                table = Table(index, source, self.table_of(source), live_source, self.table_of(live_source))
                tables.append(table)
                stamp = stamps[index] if index < len(stamps) else ""
                if edits is not None and kind != "cdb" and stamp and stamp == self.stamp(table.live_table):
                    written, removed = edits.get(index, ({}, []))
                    fsutil.copy_private(table.live_table, table.table)
                    warnings = self._patch(table, written, removed)
                    self._check_absent(table, [key for key in removed if key not in written])
                    keys = list(written)
                else:
                    result = runner.run(["postmap", "-F", "-c", self.dir, f"{kind}:{source}"])
                    warnings = result.stderr
                    keys = [line.split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"]
                os.chmod(table.table, 0o600)  # postmap copies the source's mode; keys must stay private
                self._check_table(table, keys, warnings, plan, content.get(index, {}))
            candidate = Candidate(layout, tuple(tables))
        except BaseException:
            self.discard(Candidate(layout, tuple(tables)))
            raise
        return candidate

    def _patch(self, table: Table, written: Dict[str, Serving], removed: List[str]) -> str:
        """Edit the copied table in place: delete ``removed`` keys, insert or replace ``written``."""
        ref = f"{self.map_type()}:{table.source}"
        warnings = ""
        if removed:
            keys = "\n".join(removed) + "\n"
            warnings += runner.run(["postmap", "-c", self.dir, "-d", "-", ref], input_text=keys).stderr
        if written:
            lines = "".join(map_line(key, serving) for key, serving in written.items())
            cmd = ["postmap", "-F", "-i", "-r", "-c", self.dir, ref]
            warnings += runner.run(cmd, input_text=lines).stderr
        return warnings

    def _lookup(self, table: Table, keys: Sequence[str]) -> Dict[str, str]:
        """key -> value as stored (base64 of the files' joined contents, ``postmap -F``) for each
        of ``keys`` found in the candidate table: one postmap run."""
        if not keys:
            return {}
        out = runner.run(
            ["postmap", "-c", self.dir, "-q", "-", f"{self.map_type()}:{table.source}"],
            input_text="\n".join(keys) + "\n",
            check=False,
        ).stdout
        found = {}
        for line in out.splitlines():
            key, tab, value = line.partition("\t")
            if tab:
                found[key] = value
        return found

    def _check_table(
        self, table: Table, written: List[str], warnings: str, plan: Plan, content: Dict[str, List[Lineage]]
    ) -> None:
        """Every key ``written`` is in the table, and each entry in ``content`` holds the files of
        the lineages listed for it, as they were checked (see _check_entry)."""
        found = self._lookup(table, [*written, *(key for key in content if key not in written)])
        missing = [key for key in written if key not in found]
        if missing:
            detail = runner.last_line(warnings) or "no warning from postmap"
            raise MisconfiguredError(
                f"postmap left {len(missing)} name(s) out of the SNI map (first: {missing[0]}): {detail}"
            )
        for key, checked in content.items():
            try:
                data = base64.b64decode(found.get(key, ""), validate=True)
            except binascii.Error:
                data = b""
            self._check_entry(key, data, plan.lineages_of(checked[0].names[0]), checked)

    def _check_absent(self, table: Table, removed: List[str]) -> None:
        left = list(self._lookup(table, removed))
        if left:
            raise MisconfiguredError(f"postmap did not remove {left[0]} from the SNI map: try again")

    @staticmethod
    def _check_entry(key: str, data: bytes, lineages: Tuple[Lineage, ...], checked: List[Lineage]) -> None:
        found = pair_digests(data) if len(lineages) > 1 else [pem_digest(data)]
        for lineage in checked:
            index = lineages.index(lineage)
            if index >= len(found) or found[index] != lineage.digest:
                raise MisconfiguredError(
                    f"the SNI map entry for {key} does not hold the key and chain that were checked "
                    f"({lineage.files.key}, {lineage.files.fullchain} changed meanwhile?): try again"
                )
        if len(found) != len(lineages):
            raise MisconfiguredError(
                f"the SNI map entry for {key} holds {len(found)} key and chain pairs, not "
                f"{len(lineages)}: try again"
            )

    def commit(self, candidate: Candidate, undo: Transaction) -> None:
        """Swap the candidate tables in (each table first, then its source), then point Postfix at
        the layout's tables if it is new; the tables of the old layout go once the change is kept.
        Each live file replaced is set aside first, for ``undo`` to put back."""
        already_set = self.check_parameter(candidate.layout)
        for table in candidate.tables:
            for temp, live in ((table.table, table.live_table), (table.source, table.live_source)):
                aside = fsutil.set_aside(live)
                undo.on_failure(fsutil.put_back, aside, live)
                fsutil.replace(temp, live)
                if aside is not None:
                    undo.on_commit(fsutil.remove_quietly, aside)
            fsutil.remove_quietly(table.table + "-lock")  # lmdb's lock file
        if not already_set:
            before = self.sni_maps()
            refs = self.map_refs(candidate.layout)
            runner.run(["postconf", "-c", self.dir, "-e", f"tls_server_sni_maps = {', '.join(refs)}"])
            undo.on_failure(self.set_sni_maps, before)
            logger.info("set tls_server_sni_maps = %s in %s", ", ".join(refs), self.main_cf)
            undo.on_commit(self.remove_tables_except, candidate.layout.sources())

    def remove_tables_except(self, sources: Sequence[str]) -> None:
        """Remove this package's map sources and tables but those of ``sources`` (the tables of
        the layout before a split, or of a split that was rolled back)."""
        kept = set(sources)
        base = self.settings.postfix_map
        for path in [base, *glob.glob(glob.escape(base) + ".*")]:
            source = path[: -len("-lock")] if path.endswith("-lock") else path
            for suffix in set(MAP_SUFFIXES.values()):
                source = source[: -len(suffix)] if source.endswith(suffix) else source
            if self.is_ours(source) and source not in kept:
                fsutil.remove_quietly(path)

    # -- the default certificate --------------------------------------------------------------

    def myhostname(self) -> str:
        """Postfix's own name (``$`` references expanded): the default name unless one is given."""
        return runner.run(["postconf", "-c", self.dir, "-x", "-h", "myhostname"]).stdout.strip()

    def default_chain(self) -> str:
        """``smtpd_tls_chain_files`` as main.cf has it ("" when unset)."""
        return " ".join(self.postconf(DEFAULT_CHAIN)).strip()

    def set_default_chain(self, value: str) -> None:
        """Set ``smtpd_tls_chain_files`` in main.cf to ``value``; "" removes it (Postfix then
        falls back to smtpd_tls_cert_file/smtpd_tls_key_file, if set)."""
        if value:
            runner.run(["postconf", "-c", self.dir, "-e", f"{DEFAULT_CHAIN} = {value}"])
            logger.info("set %s = %s in %s", DEFAULT_CHAIN, value, self.main_cf)
            legacy = runner.run(
                ["postconf", "-c", self.dir, "-n", "smtpd_tls_cert_file", "smtpd_tls_key_file"]
            ).stdout.strip()
            if legacy:
                logger.info(
                    "smtpd_tls_cert_file/smtpd_tls_key_file stay in %s; Postfix ignores them while %s is set",
                    self.main_cf,
                    DEFAULT_CHAIN,
                )
        else:
            runner.run(["postconf", "-c", self.dir, "-X", DEFAULT_CHAIN])
            logger.info("removed %s from %s", DEFAULT_CHAIN, self.main_cf)

    def default_overrides(self) -> List[str]:
        """master.cf services that set their own certificate (``-o smtpd_tls_chain_files=`` or
        ``-o smtpd_tls_cert_file=``), which main.cf's default does not reach."""
        out = runner.run(["postconf", "-c", self.dir, "-P"], check=False).stdout
        services = []
        for line in out.splitlines():
            name = line.partition("=")[0].strip()
            service, _, parameter = name.rpartition("/")
            if parameter in (DEFAULT_CHAIN, "smtpd_tls_cert_file"):
                services.append(service.rpartition("/")[0] or service)
        return list(dict.fromkeys(services))

    def secure_live_files(self, layout: Layout) -> List[str]:
        """The map sources and tables embed or point at private keys: make them root:root 0600 if
        someone loosened them, and say so."""
        fixed = []
        for source in layout.sources():
            for path in (source, self.table_of(source)):
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                if info.st_mode & 0o077 or info.st_uid != 0 or info.st_gid != 0:
                    os.chown(path, 0, 0)
                    os.chmod(path, 0o600)
                    fixed.append(
                        f"{path} was mode {info.st_mode & 0o777:04o} uid {info.st_uid}; now root:root 0600"
                    )
        return fixed

    def discard(self, candidate: Candidate) -> None:
        for table in candidate.tables:
            for path in (table.source, table.table, table.table + "-lock"):
                fsutil.remove_quietly(path)

    def rebuild_live(self) -> None:
        """Recompile this package's tables that tls_server_sni_maps names from their sources
        (after certbot's reverter or a rollback restored the sources)."""
        for ref in self._current_maps():
            source = ref.partition(":")[2]
            if self.is_ours(source) and os.path.exists(source):
                os.chmod(source, 0o600)
                runner.run(["postmap", "-F", "-c", self.dir, ref])

    def is_running(self) -> bool:
        return runner.run(["postfix", "-c", self.dir, "status"], check=False).returncode == 0

    def listeners(self) -> List[Listener]:
        """smtpd services of type inet in master.cf; wrapper mode (SMTPS) from their ``-o`` overrides."""
        masters = runner.run(["postconf", "-c", self.dir, "-M"]).stdout
        overrides: Dict[str, str] = {}
        for line in runner.run(["postconf", "-c", self.dir, "-P"]).stdout.splitlines():
            key, _, value = line.partition(" = ")
            overrides[key.strip()] = value.strip()
        default_host = connect_host(first_address(" ".join(self.postconf("inet_interfaces"))))
        found = []
        for line in masters.splitlines():
            fields = line.split()
            if len(fields) < 8 or fields[1] != "inet" or fields[7] != "smtpd":
                continue
            name = fields[0]
            host, _, service = name.rpartition(":")
            port = port_number(service)
            if port is None:
                continue
            wrapper = overrides.get(f"{name}/inet/smtpd_tls_wrappermode", "no") == "yes"
            mode = "tls" if wrapper else "smtp"
            found.append(Listener("postfix", connect_host(host) if host else default_host, port, mode))
        return found

    def sni_maps(self) -> str:
        """``tls_server_sni_maps`` as main.cf has it ("" when unset)."""
        return " ".join(self.postconf("tls_server_sni_maps")).strip()

    def set_sni_maps(self, value: str) -> None:
        """Set ``tls_server_sni_maps`` to ``value`` and recompile this package's tables it names
        from their sources; "" removes it."""
        if value:
            runner.run(["postconf", "-c", self.dir, "-e", f"tls_server_sni_maps = {value}"])
            self.rebuild_live()
        else:
            runner.run(["postconf", "-c", self.dir, "-X", "tls_server_sni_maps"])

    def known_names(self) -> List[str]:
        """Names Postfix already knows (for certbot's domain menu): static domain lists and the keys
        of the SNI maps' source files. Lookup tables and ``$parameter`` references are skipped."""
        values = self.postconf("myhostname", "mydestination", "virtual_mailbox_domains", "relay_domains")
        words = re.split(r"[\s,]+", " ".join(values))
        names = [w for w in words if w and ":" not in w and "$" not in w and "/" not in w]
        for ref in self._current_maps():
            source = fsutil.read_or_none(ref.partition(":")[2])
            for line in (source or b"").decode("utf-8", "replace").splitlines():
                key = line.split(maxsplit=1)[0] if line.strip() else "#"
                if not key.startswith(("#", ".")):
                    names.append(key)
        return names


def _content_keys(plan: Plan, layout: Layout, changed: Sequence[str]) -> Dict[int, Dict[str, List[Lineage]]]:
    """The entries whose content is checked, by table index: one per lineage in ``changed`` (the
    key of its first name), with the lineages it must hold that were written now. A dual entry
    holds the ECDSA pair, then the RSA pair; it may be checked for both its lineages (the other's
    files were checked when that lineage was deployed, as for any entry not written now)."""
    keys: Dict[int, Dict[str, List[Lineage]]] = {}
    for lid in changed:
        lineage = plan.lineages.get(lid)
        if lineage is not None and lineage.names:
            index = layout.index_of(plan.files_of(lineage.names[0]))
            keys.setdefault(index, {}).setdefault(map_key(lineage.names[0]), []).append(lineage)
    return keys
