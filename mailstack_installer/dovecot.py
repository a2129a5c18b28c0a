"""Render and apply step for Dovecot: one drop-in file of ``local_name`` blocks that this package owns.

Dovecot reads ``<file`` contents at parse time and ``doveadm reload`` exits 0 even when the new
configuration is refused, so the drop-in is validated with ``doveconf -n -x`` (which does read the
files) before any reload, and restored at once if validation fails.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import shutil
import tempfile
from typing import Iterator, List, Optional, Tuple

from . import fsutil, runner
from .constants import HEADER
from .errors import CommandError, MisconfiguredError, NotInstalledError
from .model import CertFiles, Plan
from .names import is_wildcard
from .settings import Settings

logger = logging.getLogger(__name__)

_INCLUDE = re.compile(r"^\s*!include(?:_try)?\s+(\S+)")


def _blocks(plan: Plan) -> List[Tuple[Tuple[str, ...], CertFiles]]:
    """One block per lineage for its exact names, then one per lineage for its wildcards.

    Dovecot 2.3 takes the first matching block, so every exact name precedes every wildcard.
    A block per lineage (not per name) keeps the config process small on hosts with many names.
    """
    exact, wild = [], []
    for lineage in sorted(plan.lineages.values(), key=lambda lin: lin.id):
        names = sorted(lineage.names)
        plain = tuple(n for n in names if not is_wildcard(n))
        stars = tuple(n for n in names if is_wildcard(n))
        if plain:
            exact.append((plain, lineage.files))
        if stars:
            wild.append((stars, lineage.files))
    return exact + wild


def render_dropin(plan: Plan) -> str:
    """Dovecot 2.3 syntax: ``local_name "a b" { ssl_cert = <fullchain  ssl_key = <key }``."""
    out = [f"# {HEADER}\n"]
    for names, files in _blocks(plan):
        out.append(
            f'local_name "{" ".join(names)}" {{\n'
            f"  ssl_cert = <{files.fullchain}\n"
            f"  ssl_key = <{files.key}\n"
            "}\n"
        )
    return "".join(out)


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


class Dovecot:
    """One Dovecot instance, addressed by its ``dovecot.conf`` (``-c FILE``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conf = settings.dovecot_conf
        self.dropin = settings.dovecot_config

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

    def install(self, text: str) -> None:
        """Validate the new drop-in as a candidate, then swap it in atomically.

        Where the candidate cannot be validated on its own (see validate_candidate), it is swapped
        in, the live configuration validated, and the old drop-in put back if Dovecot refuses it;
        the daemon reads its configuration only on reload, so it never sees a refused drop-in.
        """
        self.check_included()
        if self.validate_candidate(text):
            fsutil.atomic_write(self.dropin, text.encode(), mode=0o644)
            return
        previous = self.current()
        fsutil.atomic_write(self.dropin, text.encode(), mode=0o644)
        try:
            self.validate()
        except BaseException:
            self.restore(previous)
            raise

    def validate_candidate(self, text: str) -> bool:
        """``doveconf -n -x`` on a private copy of the config tree holding the candidate drop-in.

        Returns False (not validated) when the copy would not read the candidate: a drop-in outside
        the config dir, or an include by absolute path that still points at the live files.
        """
        config_dir = os.path.dirname(self.conf)
        rel = os.path.relpath(self.dropin, config_dir)
        if rel.startswith(os.pardir + os.sep):
            return False
        with tempfile.TemporaryDirectory(prefix="mailstack-dovecot-check-") as tmp:
            copy = os.path.join(tmp, "conf")
            shutil.copytree(config_dir, copy, symlinks=True)
            copy_dropin = os.path.join(copy, rel)
            if not any(
                glob_matches(p, copy_dropin)
                for _, p in _included_files(os.path.join(copy, os.path.basename(self.conf)))
            ):
                return False
            with open(copy_dropin, "w", encoding="utf-8") as handle:
                handle.write(text)
            try:
                self._doveconf_check(os.path.join(copy, os.path.basename(self.conf)))
            except MisconfiguredError as exc:  # name the live files, not the private copy
                raise MisconfiguredError(str(exc).replace(copy, config_dir)) from None
        return True

    def restore(self, previous: Optional[bytes]) -> None:
        """Put back the drop-in as it was (``None``: there was none)."""
        if previous is None:
            fsutil.remove_quietly(self.dropin)
        else:
            fsutil.atomic_write(self.dropin, previous, mode=0o644)

    def validate(self) -> None:
        self._doveconf_check(self.conf)

    @staticmethod
    def _doveconf_check(conf: str) -> None:
        # -x reads every <file, so a missing or unreadable certificate shows here; its output
        # holds private keys and is thrown away.
        try:
            runner.run(["doveconf", "-n", "-x", "-c", conf], discard_stdout=True)
        except CommandError as exc:
            raise MisconfiguredError(
                f"Dovecot refused the new configuration: {runner.last_line(str(exc))}"
            ) from None

    def base_dir(self) -> str:
        return runner.run(["doveconf", "-c", self.conf, "-h", "base_dir"]).stdout.strip()

    def is_running(self) -> bool:
        data = fsutil.read_or_none(os.path.join(self.base_dir(), "master.pid"))
        if not data or not data.strip().isdigit():
            return False
        try:
            os.kill(int(data.strip()), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def known_names(self) -> List[str]:
        """Every ``local_name`` in Dovecot's configuration (``doveconf -n`` prints them unquoted)."""
        out = runner.run(["doveconf", "-n", "-c", self.conf], check=False).stdout
        names: List[str] = []
        for line in out.splitlines():
            match = re.match(r'^\s*local_name\s+"?([^"{]*)"?\s*\{', line)
            if match:
                names.extend(match.group(1).split())
        return names
