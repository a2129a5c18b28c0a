"""Plan step: decide whether a name or a path may be written into Postfix and Dovecot configuration.

Everything we write is built from these values, so checking them here is what keeps a hostile or
broken name (a space, a quote, a brace, ``#``, a newline) from injecting configuration.
"""

from __future__ import annotations

import re
from typing import Sequence, Tuple

from .errors import InputError

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Characters that mean something to postmap (whitespace, comma) or to Dovecot's parser.
_PATH_FORBIDDEN = re.compile(r"[\s,\"'{}#<>\\$;]|[\x00-\x1f\x7f]")


def normalize_name(raw: str) -> str:
    """Return ``raw`` as a lower-case A-label hostname, or raise InputError saying why not.

    A wildcard is allowed only as the whole left-most label (``*.example.com``), as in certificates.
    """
    shown = repr(raw)
    if not raw.isascii():
        raise InputError(
            f"name {shown} is not ASCII: give it in IDNA A-label form (xn--...), as certificates carry it"
        )
    name = raw.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise InputError(f"name {shown} is not a valid hostname (empty or longer than 253 characters)")
    labels = name.split(".")
    if labels[0] == "*":
        if len(labels) < 3:
            raise InputError(f"name {shown}: a wildcard needs at least two labels after '*.'")
        labels = labels[1:]
    for label in labels:
        if not _LABEL.match(label):
            raise InputError(
                f"name {shown} is not a valid hostname: label {label!r} may hold only a-z, 0-9 and "
                "inner hyphens ('*' only as the whole first label)"
            )
    return name


def is_wildcard(name: str) -> bool:
    """Whether a normalized name is a wildcard (``*.example.com``)."""
    return name.startswith("*.")


def exact_first(name: str) -> Tuple[bool, str]:
    """Sort key: exact names before wildcards, each group in name order (Dovecot 2.3 takes the
    first matching block)."""
    return (is_wildcard(name), name)


#: The label sent as SNI to check a wildcard name: clients never send ``*.example.com`` itself.
WILDCARD_PROBE_LABEL = "mailstack-verify"


def probe_name(name: str) -> str:
    """The SNI name a client would send for a mapped name (a wildcard stands for one label)."""
    return WILDCARD_PROBE_LABEL + name[1:] if is_wildcard(name) else name


def check_path(path: str) -> str:
    """Return ``path`` if it can be written into a Postfix map line and a Dovecot setting unquoted."""
    if not path.startswith("/"):
        raise InputError(f"path {path!r} is not absolute")
    bad = _PATH_FORBIDDEN.search(path)
    if bad:
        raise InputError(
            f"path {path!r} contains {bad.group()!r}, which Postfix maps or Dovecot configuration "
            "cannot hold: move the certificate files to a plain path"
        )
    return path


def covered_by(name: str, dns_names: Sequence[str]) -> bool:
    """Whether a certificate with DNS names ``dns_names`` is valid for ``name`` (RFC 6125, as mail
    clients check it): equal ignoring case, or ``*.rest`` standing for exactly one whole left-most
    label. No partial-label wildcards, no fallback to the subject CN. The one rule for which names
    a lineage may serve (pipeline) and whether a served certificate fits (verify)."""
    host = name.lower().rstrip(".")
    label, _, parent = host.partition(".")
    for raw in dns_names:
        pattern = raw.lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and label and label != "*" and parent and pattern[2:] == parent:
            return True
    return False
