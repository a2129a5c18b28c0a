"""Dovecot's configuration text: the drop-in of ``local_name`` blocks this package owns (render,
parse and splice it: text in, text out) and the ``!include`` lines through which dovecot.conf
reaches it.

Dovecot 2.3 takes the first block that matches a name and reads ``<file`` contents; 2.4 takes the
last and names plain paths with renamed settings: both are written here and nowhere else.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from ..constants import HEADER
from ..model import CertFiles, Plan, Serving, as_serving
from ..names import exact_first, is_wildcard

#: An ``!include`` or ``!include_try`` line and the pattern it names.
INCLUDE = re.compile(r"^\s*!include(?:_try)?\s+(\S+)")


#: The config process holds every ``local_name`` block; ``service config { vsz_limit }`` defaults
#: to 256 MB. Its address space grows in doubling pools, so the estimate per block is about twice
#: the resident size. 2.3 keeps each block's files' contents: about 130 KB resident each (Debian
#: 12, Dovecot 2.3.19); 10,000 blocks of certbot-sized files ran out of memory under 2 GB
#: (scripts/benchmark.py).
#: 2.4 keeps one binary config: on Debian 13 (Dovecot 2.4.1) 10,002 one-name blocks took its peak
#: address space from 61 to 215 MB (about 10 KB resident and 15.4 KB of address space per block),
#: and 20,006 blocks failed under 256 MB (block_alloc(134217728)) and served under 2 GB.
BLOCK_KB = {"2.3": 320, "2.4": 24}
BASE_MB = 64
DEFAULT_LIMIT_MB = 256


#: One ``local_name`` block: its names and the files it serves.
Block = Tuple[Tuple[str, ...], Serving]


def sections(plan: Plan, syntax: str) -> Tuple[List[Block], List[Block]]:
    """The ``local_name`` blocks of ``plan``: (exact names' blocks, wildcards' blocks).

    2.3 takes the first matching block, so every exact name precedes every wildcard (_render puts
    the sections in order), and one block per distinct set of files (a lineage, or an ECDSA + RSA
    pair of lineages) lists all its names, keeping the config process small on hosts with many
    names. 2.4 takes one name per block and the last match, so wildcards come first. Within a
    section the order does not matter (a name is in one block), and blocks are in lineage order.
    """
    groups: Dict[Tuple[str, ...], Tuple[Serving, List[str]]] = {}
    for name, serving in plan.files_by_name():  # exact names sorted, then wildcards sorted
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
    """The blocks (as in sections) that hold the names of the lineages ``lineage_ids``, whole:
    every lineage of a block serves all its names, so one member's names find all of them."""
    groups: Dict[Tuple[str, ...], Tuple[Serving, List[str]]] = {}
    seen: Set[str] = set()
    for lid in sorted(lineage_ids):
        lineage = plan.lineages.get(lid)
        for name in lineage.names if lineage is not None else ():
            if name in seen:
                continue
            seen.add(name)
            serving = plan.files_of(name)
            groups.setdefault(tuple(f.lineage_id for f in serving), (serving, []))[1].append(name)
    ordered = [(serving, sorted(names, key=exact_first)) for serving, names in groups.values()]
    return _group_blocks(ordered, syntax)


def _partners(plan: Plan, lineage_ids: Set[str]) -> Set[str]:
    """``lineage_ids`` and the lineages serving a name beside one of them in ``plan``."""
    found = set(lineage_ids)
    for lid in lineage_ids:
        lineage = plan.lineages.get(lid)
        for name in lineage.names if lineage is not None else ():
            found.update(files.lineage_id for files in plan.files_of(name))
    return found


#: Setting names per syntax: (certificate, key, alternative certificate, alternative key). 2.3
#: reads ``<file`` contents; 2.4 takes plain paths.
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
    exact, wild = sections(plan, syntax)
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
    exact, wild = sections(plan, syntax)
    return render_blocks(exact, wild, syntax, config_limit_mb, default)


def _divider(syntax: str) -> str:
    """The comment line between the two sections of blocks: a deployment that changes a few
    lineages puts their new blocks before it or at the end (see splice)."""
    if syntax == "2.4":
        return "# Exact names: after the wildcards (Dovecot 2.4 uses the last block that matches).\n"
    return "# Wildcards: after the exact names (Dovecot 2.3 uses the first block that matches).\n"


def render_head(syntax: str, config_limit_mb: Optional[int], default: Union[CertFiles, Serving, None]) -> str:
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


def render_blocks(
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
    out = [render_head(syntax, config_limit_mb, default)]
    out += [_block_text(block, syntax, clear_alt) for block in first]
    out.append(_divider(syntax))
    out += [_block_text(block, syntax, clear_alt) for block in second]
    return "".join(out)


#: A deployment changing more lineages than this (a bulk import batch) renders the whole drop-in
#: rather than editing the live one block by block.
SPLICE_MAX = 64


def splice(
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
