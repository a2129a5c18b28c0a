"""Render and apply step for Postfix: the ``tls_server_sni_maps`` source, compiled with ``postmap -F``.

``postmap -F`` embeds the key and chain *contents* in the compiled table, so it is rebuilt whenever a
certificate changes. It exits 0 while skipping missing or unreadable files, so every expected key is
looked up in the candidate table before it replaces the live one.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from . import fsutil, runner
from .certfiles import pair_digests, pem_digest
from .constants import HEADER, MAP_SUFFIXES
from .errors import MisconfiguredError, NotInstalledError
from .model import CertFiles, Lineage, Plan, Serving, as_serving
from .names import is_wildcard
from .settings import Settings

logger = logging.getLogger(__name__)


def map_key(name: str) -> str:
    """Postfix matches a parent domain written with a leading dot: ``*.a.test`` -> ``.a.test``."""
    return name[1:] if is_wildcard(name) else name


def entry_value(serving: Serving, separator: str = " ") -> str:
    """The files one name serves, each key before its chain as Postfix requires: one pair, or an
    ECDSA and an RSA pair that smtpd loads together and picks from by the client's signature
    algorithms (as smtpd_tls_chain_files; FACTS §2)."""
    return separator.join(f"{files.key}{separator}{files.fullchain}" for files in serving)


def render_map(plan: Plan) -> str:
    """The map source: ``name key-file fullchain-file [key-file fullchain-file]`` per line."""
    lines = [f"# {HEADER}"]
    lines += [f"{map_key(name)} {entry_value(serving)}" for name, serving in plan.served()]
    return "\n".join(lines) + "\n"


#: More entries changing than this (a bulk import batch) renders the whole map source rather than
#: editing the live one entry by entry.
EDIT_MAX = 256


def edit_map(text: str, written: Dict[str, Serving], removed: Sequence[str]) -> str:
    """The map source ``text`` with the ``removed`` keys' lines cut, the ``written`` keys' lines
    replaced where they are, and new keys added at the end (postmap does not care about order):
    a few searches of the text instead of rendering 10,000 entries."""
    for key in removed:
        at = text.find(f"\n{key} ") + 1
        if at > 0:
            text = text[:at] + text[text.index("\n", at) + 1 :]
    added = []
    for key, serving in written.items():
        line = f"{key} {entry_value(serving)}\n"
        at = text.find(f"\n{key} ") + 1
        if at > 0:
            text = text[:at] + line + text[text.index("\n", at) + 1 :]
        else:
            added.append(line)
    return text + "".join(added)


def keys_of(plan: Plan) -> List[str]:
    return [map_key(name) for name in plan.names()]


#: Postfix's default certificate (3.4+): key and chain files, for clients that send no SNI or a
#: name the SNI map lacks. It replaces smtpd_tls_cert_file/smtpd_tls_key_file (FACTS §2.6).
DEFAULT_CHAIN = "smtpd_tls_chain_files"


def chain_value(files: Union[CertFiles, Serving]) -> str:
    """The ``smtpd_tls_chain_files`` value serving a lineage (or an ECDSA and an RSA one): key
    first, as in the SNI map."""
    return entry_value(as_serving(files), ", ")


def same_chain(first: str, second: str) -> bool:
    """Whether two ``smtpd_tls_chain_files`` values list the same files (commas and/or spaces)."""
    return re.split(r"[\s,]+", first.strip()) == re.split(r"[\s,]+", second.strip())


def entry_changes(before: Plan, after: Plan, changed: Sequence[str]) -> Tuple[Dict[str, Serving], List[str]]:
    """The map edits that turn ``before`` into ``after``: entries to write (new, re-pointed, or
    served by a lineage in ``changed``, whose files' content changed: either of a dual entry's)
    and keys to delete.

    Only the names of lineages that differ between the plans can have a different entry, so only
    those are looked at: one lineage on a host of 10,000 costs a pass over the lineage ids.
    """
    renewed = set(changed)
    touched: Set[str] = set()
    for lid, lineage in after.lineages.items():
        old = before.lineages.get(lid)
        if lid in renewed or (old is not lineage and old != lineage):
            touched.update(lineage.names)
            touched.update(old.names if old is not None else ())
    for lid, lineage in before.lineages.items():
        if lid not in after.lineages:
            touched.update(lineage.names)
    written: Dict[str, Serving] = {}
    removed: List[str] = []
    for name in sorted(touched, key=lambda n: (is_wildcard(n), n)):
        new, old_serving = after.served_of(name), before.served_of(name)
        if not new:
            removed.append(map_key(name))
        elif new != old_serving or any(files.lineage_id in renewed for files in new):
            written[map_key(name)] = new
    return written, removed


@dataclass(frozen=True)
class Candidate:
    """A compiled map waiting beside the live one: its source and its table file."""

    source: str
    table: str


class Postfix:
    """One Postfix instance, addressed by its configuration directory (``-c DIR``)."""

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
            if os.path.normpath(path) == self.settings.postfix_map:
                return kind
        return None

    @property
    def map_ref(self) -> str:
        return f"{self.map_type()}:{self.settings.postfix_map}"

    @property
    def table_path(self) -> str:
        return self.settings.postfix_map + MAP_SUFFIXES[self.map_type()]

    def check_parameter(self) -> bool:
        """True if tls_server_sni_maps already names our map; False if unset; raise if it is another's."""
        current = self._current_maps()
        if not current:
            return False
        if self.map_ref in current:
            return True
        raise MisconfiguredError(
            f"tls_server_sni_maps in {self.main_cf} is already set to {', '.join(current)}, not "
            f"{self.map_ref}: remove it (postconf -X tls_server_sni_maps) or point "
            "--postfix-map/--postfix-map-type at that map"
        )

    @staticmethod
    def stamp(table: str) -> str:
        """Identity of a table file (inode, size, mtime), which a rename keeps: recorded for each
        table swapped in, so one that anyone rebuilt or restored since is rebuilt, not patched."""
        try:
            info = os.stat(table)
        except FileNotFoundError:
            return ""
        return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"

    def live_stamp(self) -> str:
        return self.stamp(self.table_path)

    def can_patch(self, stamp: str) -> bool:
        """Whether the live table may be copied and edited (``postmap -i -r``/``-d``) rather than
        rebuilt: cdb cannot be edited, and the table must be the one this package last wrote."""
        return self.map_type() != "cdb" and bool(stamp) and stamp == self.live_stamp()

    def build_candidate(
        self,
        plan: Plan,
        changed: Sequence[str] = (),
        before: Optional[Plan] = None,
        stamp: str = "",
        text: Optional[str] = None,
        changes: Optional[Tuple[Dict[str, Serving], List[str]]] = None,
    ) -> Candidate:
        """Write and compile the new map beside the live one, and prove the entries made it in.

        With ``before`` (the plan the live table holds) and a matching ``stamp``, the live table is
        copied and only the entries that differ are edited, so one lineage costs the same on a host
        of 10,000 names as on one of 10; otherwise the whole table is compiled. Either way each
        written key is looked up, and for each lineage id in ``changed`` one entry is decoded and
        compared with the digest of the files that were checked (postmap stores whatever it finds).
        ``changes`` is entry_changes(before, plan, changed) if the caller has it.
        """
        self.check_parameter()
        fsutil.check_owned(self.settings.postfix_map, "--postfix-map")
        kind = self.map_type()
        patch = before is not None and self.can_patch(stamp)
        text = render_map(plan) if text is None else text  # the caller may have rendered it
        source = fsutil.write_temp(self.settings.postfix_map, text.encode(), mode=0o600)
        candidate = Candidate(source, source + MAP_SUFFIXES[kind])
        try:
            if before is not None and patch:
                written, removed = changes if changes is not None else entry_changes(before, plan, changed)
                fsutil.copy_private(self.table_path, candidate.table)
                warnings = self._patch(candidate, written, removed)
                self._check_absent(candidate, [key for key in removed if key not in written])
            else:
                written = {map_key(name): serving for name, serving in plan.served()}
                result = runner.run(["postmap", "-F", "-c", self.dir, f"{kind}:{source}"])
                warnings = result.stderr
            os.chmod(candidate.table, 0o600)  # postmap copies the source's mode; keys must stay private
            self._check_keys(candidate, list(written), warnings)
            self._check_content(candidate, plan, changed)
        except BaseException:
            self.discard(candidate)
            raise
        return candidate

    def _patch(self, candidate: Candidate, written: Dict[str, Serving], removed: List[str]) -> str:
        """Edit the copied table in place: delete ``removed`` keys, insert or replace ``written``."""
        ref = f"{self.map_type()}:{candidate.source}"
        warnings = ""
        if removed:
            keys = "\n".join(removed) + "\n"
            warnings += runner.run(["postmap", "-c", self.dir, "-d", "-", ref], input_text=keys).stderr
        if written:
            lines = "".join(f"{key} {entry_value(serving)}\n" for key, serving in written.items())
            cmd = ["postmap", "-F", "-i", "-r", "-c", self.dir, ref]
            warnings += runner.run(cmd, input_text=lines).stderr
        return warnings

    def _lookup(self, candidate: Candidate, keys: Sequence[str], decode: bool = False) -> Dict[str, str]:
        """key -> value for each of ``keys`` found in the candidate table (one postmap run)."""
        if not keys:
            return {}
        flags = ["-F"] if decode else []
        out = runner.run(
            ["postmap", "-c", self.dir, *flags, "-q", "-", f"{self.map_type()}:{candidate.source}"],
            input_text="\n".join(keys) + "\n",
            check=False,
        ).stdout
        wanted, found, current = set(keys), {}, None
        for line in out.splitlines(keepends=True):
            head, tab, rest = line.partition("\t")
            if tab and head in wanted:  # decoded PEM lines never hold a tab
                current = head
                found[current] = rest
            elif current is not None:
                found[current] += line
        return found

    def _check_keys(self, candidate: Candidate, expected: List[str], warnings: str) -> None:
        found = self._lookup(candidate, expected)
        missing = [key for key in expected if key not in found]
        if missing:
            detail = runner.last_line(warnings) or "no warning from postmap"
            raise MisconfiguredError(
                f"postmap left {len(missing)} name(s) out of the SNI map (first: {missing[0]}): {detail}"
            )

    def _check_absent(self, candidate: Candidate, removed: List[str]) -> None:
        left = list(self._lookup(candidate, removed))
        if left:
            raise MisconfiguredError(f"postmap did not remove {left[0]} from the SNI map: try again")

    def _check_content(self, candidate: Candidate, plan: Plan, changed: Sequence[str]) -> None:
        """Decode one entry per changed lineage and compare it with the digest of the files that
        were checked. A dual entry holds the ECDSA pair, then the RSA pair: it must hold that many
        pairs, and the changed lineage's pair at its place (the other's files were checked when
        that lineage was deployed, as for any entry not written now)."""
        keys: Dict[str, List[Lineage]] = {}  # an entry may be checked for both its lineages
        for lid in changed:
            lineage = plan.lineages.get(lid)
            if lineage is not None and lineage.names:
                keys.setdefault(map_key(lineage.names[0]), []).append(lineage)
        decoded = self._lookup(candidate, list(keys), decode=True)
        for key, checked in keys.items():
            data = decoded.get(key, "").encode()
            lineages = plan.serving_of(checked[0].names[0])
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

    def commit(self, candidate: Candidate) -> None:
        """Swap the candidate in (table first, then its source) and point Postfix at it if needed."""
        already_set = self.check_parameter()
        fsutil.replace(candidate.table, self.table_path)
        fsutil.replace(candidate.source, self.settings.postfix_map)
        fsutil.remove_quietly(candidate.table + "-lock")  # lmdb's lock file
        if not already_set:
            runner.run(["postconf", "-c", self.dir, "-e", f"tls_server_sni_maps = {self.map_ref}"])
            logger.info("set tls_server_sni_maps = %s in %s", self.map_ref, self.main_cf)

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

    def secure_live_files(self) -> List[str]:
        """The map source and table embed or point at private keys: make them root:root 0600 if
        someone loosened them, and say so."""
        fixed = []
        for path in (self.settings.postfix_map, self.table_path):
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
        for path in (candidate.source, candidate.table, candidate.table + "-lock"):
            fsutil.remove_quietly(path)

    def rebuild_live(self) -> None:
        """Recompile the live map from its source (after certbot's reverter restored the source)."""
        if os.path.exists(self.settings.postfix_map):
            os.chmod(self.settings.postfix_map, 0o600)
            runner.run(["postmap", "-F", "-c", self.dir, self.map_ref])

    def is_running(self) -> bool:
        return runner.run(["postfix", "-c", self.dir, "status"], check=False).returncode == 0

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
