"""Render and apply step for Dovecot: one drop-in file of ``local_name`` blocks that this package owns.

Dovecot reads ``<file`` contents at parse time and ``doveadm reload`` exits 0 even when the new
configuration is refused, so the drop-in is validated with ``doveconf -n -x`` (which does read the
files) before any reload, and restored at once if validation fails.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from . import fsutil, runner
from .constants import HEADER
from .errors import CommandError, MisconfiguredError, NotInstalledError, ServiceError
from .fsutil import text_digest
from .model import CertFiles, Plan, Serving, as_serving
from .names import exact_first, is_wildcard
from .settings import Settings

logger = logging.getLogger(__name__)

_INCLUDE = re.compile(r"^\s*!include(?:_try)?\s+(\S+)")


@dataclass(frozen=True)
class Rendered:
    """A drop-in ready to install: its text, the part to validate, its memory limit and size, and
    the limit the live drop-in sets."""

    text: str
    check_text: str
    limit_mb: Optional[int]
    blocks: int
    live_limit_mb: Optional[int] = None


#: The config process holds every ``local_name`` block; ``service config { vsz_limit }`` defaults
#: to 256 MB. Its address space grows in doubling pools, so the estimate per block is about twice
#: the resident size. 2.3 keeps each block's files' contents: about 130 KB resident each (FACTS
#: §3.3); 10,000 blocks of certbot-sized files ran out of memory under 2 GB (scripts/benchmark.py).
#: 2.4 keeps one binary config: on Debian 13 (Dovecot 2.4.1) 10,002 one-name blocks took its peak
#: address space from 61 to 215 MB (about 10 KB resident and 15.4 KB of address space per block),
#: and 20,006 blocks failed under 256 MB (block_alloc(134217728)) and served under 2 GB.
BLOCK_KB = {"2.3": 320, "2.4": 24}
BASE_MB = 64
DEFAULT_LIMIT_MB = 256


#: One ``local_name`` block: its names and the files it serves.
Block = Tuple[Tuple[str, ...], Serving]


def _sections(plan: Plan, syntax: str) -> Tuple[List[Block], List[Block]]:
    """The ``local_name`` blocks of ``plan``: (exact names' blocks, wildcards' blocks).

    2.3 takes the first matching block, so every exact name precedes every wildcard (_render puts
    the sections in order), and one block per distinct set of files (a lineage, or an ECDSA + RSA
    pair of lineages) lists all its names, keeping the config process small on hosts with many
    names. 2.4 takes one name per block and the last match, so wildcards come first. Within a
    section the order does not matter (a name is in one block), and blocks are in lineage order.
    """
    groups: Dict[Tuple[str, ...], Tuple[Serving, List[str]]] = {}
    for name, serving in plan.served():  # exact names sorted, then wildcards sorted
        # Keyed by lineage ids (strings hash once and for all; CertFiles hash on every lookup).
        ids = (serving[0].lineage_id,) if len(serving) == 1 else tuple(f.lineage_id for f in serving)
        group = groups.get(ids)
        if group is None:
            groups[ids] = (serving, [name])
        else:
            group[1].append(name)
    return _group_blocks([groups[ids] for ids in sorted(groups)], syntax)


def _group_blocks(
    groups: Sequence[Tuple[Serving, List[str]]], syntax: str
) -> Tuple[List[Block], List[Block]]:
    """(exact, wildcard) blocks of groups of names served by the same files (names in order)."""
    exact: List[Block] = []
    wild: List[Block] = []
    for serving, names in groups:
        plain = tuple(n for n in names if not is_wildcard(n))
        stars = tuple(n for n in names if is_wildcard(n))
        if syntax == "2.4":
            exact += [((n,), serving) for n in plain]
            wild += [((n,), serving) for n in stars]
            continue
        if plain:
            exact.append((plain, serving))
        if stars:
            wild.append((stars, serving))
    return exact, wild


def _blocks_of(plan: Plan, lineage_ids: Set[str], syntax: str) -> Tuple[List[Block], List[Block]]:
    """The blocks (as in _sections) that hold the names of the lineages ``lineage_ids``, whole:
    every lineage of a block serves all its names, so one member's names find all of them."""
    groups: Dict[Tuple[str, ...], Tuple[Serving, List[str]]] = {}
    seen: Set[str] = set()
    for lid in sorted(lineage_ids):
        lineage = plan.lineages.get(lid)
        for name in lineage.names if lineage is not None else ():
            if name in seen:
                continue
            seen.add(name)
            serving = plan.served_of(name)
            groups.setdefault(tuple(f.lineage_id for f in serving), (serving, []))[1].append(name)
    ordered = [(serving, sorted(names, key=exact_first)) for serving, names in groups.values()]
    return _group_blocks(ordered, syntax)


def _partners(plan: Plan, lineage_ids: Set[str]) -> Set[str]:
    """``lineage_ids`` and the lineages serving a name beside one of them in ``plan``."""
    found = set(lineage_ids)
    for lid in lineage_ids:
        lineage = plan.lineages.get(lid)
        for name in lineage.names if lineage is not None else ():
            found.update(files.lineage_id for files in plan.served_of(name))
    return found


#: Setting names per syntax: (certificate, key, alternative certificate, alternative key). 2.3
#: reads ``<file`` contents; 2.4 takes plain paths (FACTS §3.4).
_SETTINGS = {
    "2.3": ("ssl_cert = <", "ssl_key = <", "ssl_alt_cert = <", "ssl_alt_key = <"),
    "2.4": (
        "ssl_server_cert_file = ",
        "ssl_server_key_file = ",
        "ssl_server_alt_cert_file = ",
        "ssl_server_alt_key_file = ",
    ),
}


def _cert_settings(serving: Serving, syntax: str, indent: str, clear_alt: bool = False) -> str:
    """The primary (ECDSA) pair as ssl_cert/ssl_key, an RSA partner as ssl_alt_cert/ssl_alt_key:
    OpenSSL then serves whichever the client's signature algorithms accept.

    ``clear_alt``: a block inherits top-level settings it does not set, so under a dual default
    a one-lineage block would also load the default's alternative pair, which replaces its own
    pair of the same key type; the block then sets the alternative to nothing.
    """
    cert, key, alt_cert, alt_key = _SETTINGS[syntax]
    out = f"{indent}{cert}{serving[0].fullchain}\n{indent}{key}{serving[0].key}\n"
    for files in serving[1:]:
        out += f"{indent}{alt_cert}{files.fullchain}\n{indent}{alt_key}{files.key}\n"
    if clear_alt and len(serving) == 1:
        out += f"{indent}{alt_cert.rstrip(' <')}\n{indent}{alt_key.rstrip(' <')}\n"
    return out


_LOCAL_NAME = re.compile(r'^\s*local_name\s+"?([^"{]*?)"?\s*\{(.*?)^\s*\}', re.M | re.S)
#: A certificate setting of either syntax, primary or alternative, and the path it names.
_CERT_SETTING = re.compile(
    r"^[ \t]*(ssl_(?:alt_)?cert[ \t]*=[ \t]*<|ssl_server_(?:alt_)?cert_file[ \t]*=)[ \t]*(\S+)", re.M
)


def parse_dropin(text: str) -> Dict[str, List[str]]:
    """The drop-in's ``local_name`` blocks as {name: [fullchain, alternative fullchain]}, for
    either syntax (the reverse of _block_text): 2.3 serves a name from the first block that
    matches it, 2.4 from the last, and the blocks' own settings tell which one wrote them."""
    entries: Dict[str, List[str]] = {}
    for match in _LOCAL_NAME.finditer(text):
        found = _CERT_SETTING.findall(match.group(2))
        chains = [path for _, path in found]
        last_wins = any(setting.startswith("ssl_server_") for setting, _ in found)
        for name in match.group(1).split():
            if last_wins or name.lower() not in entries:
                entries[name.lower()] = chains
    return entries


def block_count(plan: Plan, syntax: str = "2.3") -> int:
    exact, wild = _sections(plan, syntax)
    return len(exact) + len(wild)


def required_limit_mb(blocks: int, syntax: str = "2.3") -> int:
    """Address space the config process needs for ``blocks`` blocks, with some margin."""
    return BASE_MB + (blocks * BLOCK_KB[syntax] + 1023) // 1024


def render_dropin(
    plan: Plan,
    syntax: str = "2.3",
    config_limit_mb: Optional[int] = None,
    *,
    default: Union[CertFiles, Serving, None] = None,
) -> str:
    """The drop-in: the optional default certificate, an optional ``service config`` memory limit,
    then the ``local_name`` blocks (see _render)."""
    exact, wild = _sections(plan, syntax)
    return _render(exact, wild, syntax, config_limit_mb, default)


def _divider(syntax: str) -> str:
    """The comment line between the two sections of blocks: a deployment that changes a few
    lineages puts their new blocks before it or at the end (see _splice)."""
    if syntax == "2.4":
        return "# Exact names: after the wildcards (Dovecot 2.4 uses the last block that matches).\n"
    return "# Wildcards: after the exact names (Dovecot 2.3 uses the first block that matches).\n"


def _head(syntax: str, config_limit_mb: Optional[int], default: Union[CertFiles, Serving, None]) -> str:
    """What precedes the blocks: the header, the default certificate and the memory limit.

    The default certificate is the same settings as a block's, at top level: the drop-in is read
    after conf.d/10-ssl.conf, so they replace the certificate served without SNI or to unknown names.
    """
    out = [f"# {HEADER}\n"]
    defaults = as_serving(default)
    if defaults:
        out.append("# The default certificate: for clients that send no SNI or a name not below.\n")
        out.append(_cert_settings(defaults, syntax, ""))
    if config_limit_mb is not None:
        out.append(
            "# Raised by certbot-mailstack: the config process holds every local_name block.\n"
            f"service config {{\n  vsz_limit = {config_limit_mb}M\n}}\n"
        )
    return "".join(out)


def _block_text(block: Block, syntax: str, clear_alt: bool) -> str:
    """2.3: ``local_name "a b" { ssl_cert = <fullchain  ssl_key = <key }`` (``<`` reads the file);
    2.4: ``local_name a { ssl_server_cert_file = fullchain  ssl_server_key_file = key }`` (paths).
    A name served by an ECDSA and an RSA lineage adds ``ssl_alt_cert``/``ssl_alt_key`` (2.4:
    ``ssl_server_alt_cert_file``/``ssl_server_alt_key_file``) for the RSA one."""
    names, serving = block
    shown = names[0] if syntax == "2.4" else " ".join(names)
    return f'local_name "{shown}" {{\n{_cert_settings(serving, syntax, "  ", clear_alt)}}}\n'


def _render(
    exact: List[Block],
    wild: List[Block],
    syntax: str,
    config_limit_mb: Optional[int],
    default: Union[CertFiles, Serving, None],
) -> str:
    """render_dropin from blocks already made (a run renders one plan once): the head, then the
    section Dovecot must see first (2.3: exact names; 2.4: wildcards), the divider, the other."""
    clear_alt = len(as_serving(default)) > 1
    first, second = (wild, exact) if syntax == "2.4" else (exact, wild)
    out = [_head(syntax, config_limit_mb, default)]
    out += [_block_text(block, syntax, clear_alt) for block in first]
    out.append(_divider(syntax))
    out += [_block_text(block, syntax, clear_alt) for block in second]
    return "".join(out)


#: A deployment changing more lineages than this (a bulk import batch) renders the whole drop-in
#: rather than editing the live one block by block.
SPLICE_MAX = 64


def _splice(
    text: str,
    before: Plan,
    plan: Plan,
    lineage_ids: Set[str],
    syntax: str,
    clear_alt: Tuple[bool, bool],
) -> Optional[Tuple[str, int]]:
    """The blocks of ``text`` (the drop-in as rendered for ``before``) edited into those of
    ``plan``, where only the lineages ``lineage_ids`` differ: (blocks without the head, how many).

    The blocks holding their names (and their partners' in dual blocks) are cut out and the new
    ones added at the end of their section, so one lineage costs a few searches of the text, not
    a rendering of every block. None when the text is not laid out as expected (written by an
    older version), too many lineages changed, or the default's pair count changed (every block
    then changes; see _cert_settings): render it all.
    """
    if len(lineage_ids) > SPLICE_MAX or clear_alt[0] != clear_alt[1]:
        return None
    divider = _divider(syntax)
    at = text.find("\n" + divider) + 1
    if at <= 0:
        return None
    first_block = text.find('\nlocal_name "') + 1
    start = first_block if 0 < first_block < at else at
    sections = [text[start:at], text[at + len(divider) :]]
    count = text.count('\nlocal_name "')
    affected = _partners(before, lineage_ids) | _partners(plan, lineage_ids)
    wild_first = 0 if syntax == "2.4" else 1  # the section of wildcard blocks
    old_exact, old_wild = _blocks_of(before, affected, syntax)
    for section, blocks in ((1 - wild_first, old_exact), (wild_first, old_wild)):
        for block in blocks:
            cut = _block_text(block, syntax, clear_alt[0])
            where = sections[section].find(cut)
            if where < 0 or (where > 0 and sections[section][where - 1] != "\n"):
                return None
            sections[section] = sections[section][:where] + sections[section][where + len(cut) :]
            count -= 1
    new_exact, new_wild = _blocks_of(plan, affected, syntax)
    for section, blocks in ((1 - wild_first, new_exact), (wild_first, new_wild)):
        sections[section] += "".join(_block_text(block, syntax, clear_alt[1]) for block in blocks)
        count += len(blocks)
    return sections[0] + divider + sections[1], count


def parse_size_mb(text: str) -> Optional[int]:
    """A doveconf size (``256 M``, ``1 G``, ``0``) in MB; None for unlimited or unset."""
    match = re.fullmatch(r"\s*(\d+)\s*([BkKMGT]?)\s*", text)
    if not match:
        return None
    number = int(match.group(1))
    factor = {"": 1, "B": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    size = number * factor[match.group(2)]
    if size == 0 or size >= (1 << 63):
        return None
    return max(1, size >> 20)


def own_limit_mb(text: Optional[bytes]) -> Optional[int]:
    """The ``vsz_limit`` a drop-in written by this package sets, if any (in its head, before the
    blocks: only that part is searched, not 10,000 blocks)."""
    head = text or b""
    blocks = head.find(b'\nlocal_name "')
    match = re.search(rb"^\s*vsz_limit = (\d+)M$", head[:blocks] if blocks >= 0 else head, re.MULTILINE)
    return int(match.group(1)) if match else None


def glob_matches(pattern: str, path: str) -> bool:
    """Whether glob(3), as Dovecot's ``!include`` uses it, would expand ``pattern`` to ``path``.

    Unlike fnmatch, ``*`` never crosses a ``/`` and never matches a leading dot.
    """
    pattern_parts, path_parts = pattern.split(os.sep), path.split(os.sep)
    if len(pattern_parts) != len(path_parts):
        return False
    for pat, part in zip(pattern_parts, path_parts):
        if part.startswith(".") and not pat.startswith("."):
            return False
        if not fnmatch.fnmatchcase(part, pat):
            return False
    return True


def doveconf_values(conf: str, names: Sequence[str]) -> Dict[str, str]:
    """Settings of the configuration ``conf`` as {name: value} ("" where Dovecot prints none).

    ``doveconf NAME`` prints ``NAME = value`` on 2.3 and 2.4; ``doveconf -h`` is not used because
    Dovecot 2.4.1 sometimes refuses it with "Multiple settings matched with -h parameter" (seen on
    Debian 13 for ``base_dir``, ``listen`` and ``default_vsz_limit``).
    """
    out = runner.run(["doveconf", "-c", conf, *names]).stdout
    found = dict.fromkeys(names, "")
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key in found:
            found[key] = value.strip()
    return found


def _included_files(conf: str, depth: int = 0) -> Iterator[Tuple[str, str]]:
    """(including file, absolute include pattern) for every ``!include`` reachable from ``conf``."""
    if depth > 8:
        return
    data = fsutil.read_or_none(conf)
    if data is None:
        return
    base = os.path.dirname(conf)
    for line in data.decode("utf-8", "replace").splitlines():
        match = _INCLUDE.match(line)
        if not match:
            continue
        pattern = os.path.normpath(os.path.join(base, match.group(1).strip('"')))
        yield conf, pattern
        for path in sorted(glob.glob(pattern)):
            yield from _included_files(path, depth + 1)


def _localize_includes(conf: str, live_dir: str, copy_dir: str, depth: int = 0) -> None:
    """Point the ``!include`` lines of ``conf`` (in a private copy of ``live_dir`` at ``copy_dir``)
    and of every file they include that name ``live_dir`` by absolute path at the copy instead.

    Otherwise a copy of a tree that includes its drop-in as ``/etc/dovecot/conf.d/*.conf`` would
    read the live drop-in (10,000 blocks: ~10 s per doveconf run) and not the candidate. A file
    copied as a symlink is replaced by a rewritten file, never written through.
    """
    if depth > 8:
        return
    data = fsutil.read_or_none(conf)
    if data is None:
        return
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    patterns: List[str] = []
    changed = False
    for number, line in enumerate(lines):
        match = _INCLUDE.match(line)
        if not match:
            continue
        pattern = match.group(1).strip('"')
        if pattern == live_dir or pattern.startswith(live_dir + os.sep):
            pattern = copy_dir + pattern[len(live_dir) :]
            quote = '"' if match.group(1).startswith('"') else ""
            lines[number] = line[: match.start(1)] + f"{quote}{pattern}{quote}" + line[match.end(1) :]
            changed = True
        patterns.append(os.path.normpath(os.path.join(os.path.dirname(conf), pattern)))
    if changed:
        if os.path.islink(conf):
            os.unlink(conf)
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write("".join(lines))
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if path == copy_dir or path.startswith(copy_dir + os.sep):
                _localize_includes(path, live_dir, copy_dir, depth + 1)


class Dovecot:
    """One Dovecot instance, addressed by its ``dovecot.conf`` (``-c FILE``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conf = settings.dovecot_conf
        self.dropin = settings.dovecot_config
        self._version: Optional[str] = None
        self._base_dir: Optional[str] = None

    def check_installed(self) -> None:
        for tool in ("doveconf", "doveadm"):
            if runner.which(tool) is None:
                raise NotInstalledError(f"Dovecot tool {tool} not found: is Dovecot installed?")
        if not os.path.isfile(self.conf):
            raise NotInstalledError(f"Dovecot is not configured: {self.conf} does not exist")

    def check_included(self) -> None:
        """Refuse to write a drop-in that Dovecot would never read, or one we did not write."""
        fsutil.check_owned(self.dropin, "--dovecot-config")
        for _, pattern in _included_files(self.conf):
            if glob_matches(pattern, self.dropin):
                return
        rel = os.path.relpath(self.dropin, os.path.dirname(self.conf))
        suggestion = os.path.join(os.path.dirname(rel), "*.conf") if os.sep in rel else rel
        raise MisconfiguredError(
            f'Dovecot does not include {self.dropin}: add "!include {suggestion}" to {self.conf}'
        )

    def current(self) -> Optional[bytes]:
        return fsutil.read_or_none(self.dropin)

    # -- which Dovecot ----------------------------------------------------------------------------

    def syntax(self) -> str:
        """ "2.3" or "2.4": as given, else from ``dovecot --version`` (2.4 renamed the SSL settings)."""
        chosen = self.settings.dovecot_syntax
        if chosen != "auto":
            return chosen
        if self._version is None:
            result = runner.run(["dovecot", "--version"], check=False)
            self._version = result.stdout.strip() if result.returncode == 0 else ""
        match = re.match(r"(\d+)\.(\d+)", self._version)
        if not match:
            raise MisconfiguredError(
                f"cannot tell the Dovecot version (dovecot --version printed {self._version!r}): "
                "give --dovecot-syntax 2.3 or 2.4"
            )
        return "2.4" if (int(match.group(1)), int(match.group(2))) >= (2, 4) else "2.3"

    def render(
        self,
        plan: Plan,
        before: Plan,
        changed: Sequence[str],
        default: Union[CertFiles, Serving, None] = None,
        before_default: Union[CertFiles, Serving, None] = None,
        written: str = "",
    ) -> Rendered:
        """The new drop-in, and the part of it to validate: when the live drop-in is what this
        package wrote for ``before`` (and ``before_default``), only the default certificate, the
        memory limit and the blocks of the ``changed`` lineages (the others were validated when
        written), so one lineage costs the same at any size; otherwise all of it.

        ``written`` is the digest (text_digest) of the drop-in this package last wrote: equal to the
        live file's, it proves the file unchanged without rendering ``before`` again.
        """
        syntax = self.syntax()
        current = self.current()
        text = current.decode("utf-8", "replace") if current is not None else None
        ours = text is not None and (
            (bool(written) and text_digest(current or b"") == written)
            or text == render_dropin(before, syntax, own_limit_mb(current), default=before_default)
        )
        live_limit = own_limit_mb(current)
        clear_alt = (len(as_serving(before_default)) > 1, len(as_serving(default)) > 1)
        lineage_ids = set(changed) | set(plan.lineages.changes_from(before.lineages)[1])
        spliced = _splice(text, before, plan, lineage_ids, syntax, clear_alt) if text and ours else None
        if spliced is None:
            exact, wild = _sections(plan, syntax)
            blocks = len(exact) + len(wild)
            limit = self._limit_for(syntax, blocks, live_limit)
            new_text = _render(exact, wild, syntax, limit, default)
        else:
            body, blocks = spliced
            limit = self._limit_for(syntax, blocks, live_limit)
            new_text = _head(syntax, limit, default) + body
        if not ours:
            return Rendered(new_text, new_text, limit, blocks, live_limit)
        subset = Plan({lid: plan.lineages[lid] for lid in changed if lid in plan.lineages})
        check = render_dropin(subset, syntax, limit, default=default)
        return Rendered(new_text, check, limit, blocks, live_limit)

    # -- the config process's memory ---------------------------------------------------------------

    def config_limit(self, plan: Plan, syntax: str, blocks: Optional[int] = None) -> Optional[int]:
        """The ``service config { vsz_limit }`` (MB) the drop-in should set, or None for none.

        A reload needs room for two configurations at once: the running config process parses the
        new one while it holds the old (on Debian 13 every reload of 10,002 blocks ran out of
        memory under 256 MB, where a start took 215 MB). The limit is raised before it is needed
        (when a reload after the blocks grew by half would not fit) to twice what the blocks need,
        rounded up to a power of two: it changes rarely, and the reload that must bring it before
        the blocks it serves (see limit_step) then still fits under the old limit.
        """
        blocks = block_count(plan, syntax) if blocks is None else blocks
        return self._limit_for(syntax, blocks, own_limit_mb(self.current()))

    def _limit_for(self, syntax: str, blocks: int, own: Optional[int]) -> Optional[int]:
        """config_limit for ``blocks`` blocks, where the live drop-in sets ``own``."""
        with_headroom = required_limit_mb(blocks * 3, syntax)  # a reload: 1.5 times, twice over
        if with_headroom <= (own or DEFAULT_LIMIT_MB):
            return own
        base = self.base_limit_mb()
        if base is None or with_headroom <= base:
            return None  # the administrator's own limit (or none at all) is enough
        limit = 1024
        while limit < 2 * required_limit_mb(blocks, syntax):
            limit *= 2
        logger.info(
            "raising Dovecot's config process memory limit to %d MB in %s for %d local_name blocks",
            limit,
            self.dropin,
            blocks,
        )
        return limit

    def base_limit_mb(self) -> Optional[int]:
        """The config service's limit without this package's drop-in (None: unlimited)."""
        with self.settings_conf() as conf:
            values = doveconf_values(conf, ["service/config/vsz_limit", "default_vsz_limit"])
        own = values["service/config/vsz_limit"]
        if own in ("", "18446744073709551615 B"):  # not set for the service (2.4: not printed)
            own = values["default_vsz_limit"]
        return parse_size_mb(own) if own.strip() != "0" else None

    def limit_step(self, new_limit: Optional[int], blocks: int) -> Optional[str]:
        """How the running config process gets ``new_limit`` before the drop-in grows to ``blocks``
        blocks: None (not needed), "reload" (the running process parses the live blocks again under
        its own limit and passes the new one on), or "restart" (a reload of the live blocks would
        not fit under the running limit: only a new master starts the config process with the
        new one). The running limit is read from the process; the files may hold a larger one
        not yet reloaded."""
        if new_limit is None or not self.is_running():
            return None
        running = self.running_limit_mb(wait=3.0)
        if running is None:  # cannot look: assume the files are in force
            running = own_limit_mb(self.current()) or self.base_limit_mb() or 0
            if running == 0:
                return None
        syntax = self.syntax()
        live = (self.current() or b"").count(b'\nlocal_name "')
        if required_limit_mb(live + blocks, syntax) <= running:
            return None
        return "reload" if required_limit_mb(2 * live, syntax) <= running else "restart"

    def running_limit_mb(self, wait: float) -> Optional[int]:
        """The address-space limit (MB) of the running config process, or None if unknown.

        Dovecot starts its config process on demand: a connection to its socket starts one, and
        ``/proc/PID/limits`` shows the limit the master gave it from the settings it runs with.
        """
        children = self._children_file()
        if children is None:
            return None
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(os.path.join(self.base_dir(), "config"))
            limits = [
                _config_process_limit(pid.decode()) for pid in (fsutil.read_or_none(children) or b"").split()
            ]
            found = [limit for limit in limits if limit]
            if found:
                return max(found) >> 20
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def _children_file(self) -> Optional[str]:
        """``/proc`` file listing the master's children, or None where there is none to read."""
        master = self._master_pid()
        children = f"/proc/{master}/task/{master}/children"
        return children if master is not None and os.path.exists(children) else None

    def wait_for_limit(self, limit_mb: int, timeout: float = 60.0) -> None:
        """After a reload: wait until the running config process has the new limit."""
        deadline = time.monotonic() + timeout
        running: Optional[int] = None
        while time.monotonic() < deadline:
            if self._children_file() is None:
                time.sleep(5.0)  # no way to look: give the master time to re-read its configuration
                return
            running = self.running_limit_mb(wait=1.0)
            if running is not None and running >= limit_mb:
                return
            time.sleep(0.2)
        now = f"it runs with {running} MB" if running is not None else "it did not start"
        raise ServiceError(
            f"Dovecot's config process did not take the limit {self.dropin} sets ({limit_mb} MB) within "
            f"{timeout:.0f} s ({now}): a vsz_limit read after the drop-in (local.conf?) overrides it"
        )

    # -- writing ----------------------------------------------------------------------------------

    def install(self, text: str, check_text: Optional[str] = None) -> None:
        """Validate the new drop-in as a candidate, then swap it in atomically.

        ``check_text`` (default: ``text``) is what is validated in a private copy of the config
        tree: the blocks that changed, since the others were validated when they were written.
        Where no private copy can be made (see _private_tree), the drop-in is swapped in, the whole
        live configuration validated, and the old drop-in put back if Dovecot refuses it; the
        daemon reads its configuration only on reload, so it never sees a refused drop-in.
        """
        self.check_included()
        with self._private_tree(check_text if check_text is not None else text) as copy:
            if copy is not None:
                self._doveconf_check(copy, named_as=os.path.dirname(self.conf))
                fsutil.atomic_write(self.dropin, text.encode(), mode=0o644)
                return
        previous = self.current()
        fsutil.atomic_write(self.dropin, text.encode(), mode=0o644)
        try:
            self.validate()
        except BaseException:
            self.restore(previous)
            raise

    @contextlib.contextmanager
    def _private_tree(self, dropin_text: str) -> Iterator[Optional[str]]:
        """A private copy of the config tree with ``dropin_text`` as the drop-in; yields its
        dovecot.conf, or None when the copy would not read it (a drop-in outside the config dir,
        or included only through a path outside it). Includes that name the config dir by
        absolute path are pointed at the copy (_localize_includes)."""
        config_dir = os.path.dirname(self.conf)
        rel = os.path.relpath(self.dropin, config_dir)
        if rel.startswith(os.pardir + os.sep):
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="mailstack-dovecot-check-") as tmp:
            copy = os.path.join(tmp, "conf")
            live_dropin = os.path.normpath(self.dropin)
            shutil.copytree(
                config_dir,
                copy,
                symlinks=True,
                ignore=lambda d, names: [n for n in names if os.path.join(d, n) == live_dropin],
            )
            copy_conf = os.path.join(copy, os.path.basename(self.conf))
            copy_dropin = os.path.join(copy, rel)
            _localize_includes(copy_conf, os.path.normpath(config_dir), copy)
            if not any(glob_matches(p, copy_dropin) for _, p in _included_files(copy_conf)):
                yield None
                return
            os.makedirs(os.path.dirname(copy_dropin), exist_ok=True)
            with open(copy_dropin, "w", encoding="utf-8") as handle:
                handle.write(dropin_text)
            yield copy_conf

    @contextlib.contextmanager
    def settings_conf(self) -> Iterator[str]:
        """A dovecot.conf to ask Dovecot's own settings (base_dir, listeners, limits) from: the
        configuration without this package's blocks. At 10,000 blocks any doveconf run on the
        live files takes ~10 s and over 1 GB; without them it takes milliseconds."""
        with self._private_tree(f"# {HEADER}\n") as copy:
            yield copy if copy is not None else self.conf

    def restore(self, previous: Optional[bytes]) -> None:
        """Put back the drop-in as it was (``None``: there was none)."""
        if previous is None:
            fsutil.remove_quietly(self.dropin)
        else:
            fsutil.atomic_write(self.dropin, previous, mode=0o644)

    def validate(self) -> None:
        self._doveconf_check(self.conf)

    @staticmethod
    def _doveconf_check(conf: str, named_as: Optional[str] = None) -> None:
        # -x reads every <file, so a missing or unreadable certificate shows here; its output
        # holds private keys and is thrown away.
        try:
            runner.run(["doveconf", "-n", "-x", "-c", conf], discard_stdout=True)
        except CommandError as exc:
            message = runner.last_line(str(exc))
            if named_as is not None:  # name the live files, not the private copy
                message = message.replace(os.path.dirname(conf), named_as)
            raise MisconfiguredError(f"Dovecot refused the new configuration: {message}") from None

    # -- the running daemon -----------------------------------------------------------------------

    def base_dir(self) -> str:
        if self._base_dir is None:
            with self.settings_conf() as conf:
                self._base_dir = doveconf_values(conf, ["base_dir"])["base_dir"]
        return self._base_dir

    def _master_pid(self) -> Optional[int]:
        data = fsutil.read_or_none(os.path.join(self.base_dir(), "master.pid"))
        if not data or not data.strip().isdigit():
            return None
        return int(data.strip())

    def is_running(self) -> bool:
        pid = self._master_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def known_names(self) -> List[str]:
        """Every ``local_name`` in Dovecot's own configuration (this package's names are in its
        state); ``doveconf -n`` prints them unquoted."""
        with self.settings_conf() as conf:
            out = runner.run(["doveconf", "-n", "-c", conf], check=False).stdout
        names: List[str] = []
        for line in out.splitlines():
            match = re.match(r'^\s*local_name\s+"?([^"{]*)"?\s*\{', line)
            if match:
                names.extend(match.group(1).split())
        return names


def _config_process_limit(pid: str) -> int:
    """The address-space limit (bytes) of process ``pid`` if it is Dovecot's config process, else 0."""
    comm = (fsutil.read_or_none(f"/proc/{pid}/comm") or b"").strip()
    if comm != b"config":
        return 0
    for line in (fsutil.read_or_none(f"/proc/{pid}/limits") or b"").decode().splitlines():
        if line.startswith("Max address space"):
            value = line.split()[3]
            return 1 << 62 if value == "unlimited" else int(value)
    return 0
