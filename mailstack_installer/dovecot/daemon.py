"""Dovecot, the daemon: the one caller of ``doveconf`` and ``dovecot`` (``doveadm reload`` is the
native service-manager backend's). It validates and swaps in the drop-in (dovecot/dropin.py).

Dovecot reads ``<file`` contents at parse time and ``doveadm reload`` exits 0 even when the new
configuration is refused, so the drop-in is validated with ``doveconf -n -x`` (which does read the
files) before any reload, and restored at once if validation fails.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .. import fsutil, runner, service_managers
from ..constants import HEADER
from ..daemon import Change, Daemon, Step
from ..errors import CommandError, MisconfiguredError, NotInstalledError, ServiceError
from ..fsutil import text_digest
from ..listeners import Listener, connect_host, first_address
from ..model import CertFiles, Plan, Serving, as_serving
from ..settings import Settings
from ..transaction import Transaction
from .dropin import (
    DEFAULT_LIMIT_MB,
    INCLUDE,
    block_count,
    glob_matches,
    own_limit_mb,
    parse_size_mb,
    render_blocks,
    render_dropin,
    render_head,
    required_limit_mb,
    sections,
    splice,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    """A drop-in ready to install: its text, the part to validate, its memory limit and size, and
    the limit the live drop-in sets."""

    text: str
    check_text: str
    limit_mb: Optional[int]
    blocks: int
    live_limit_mb: Optional[int] = None


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
        match = INCLUDE.match(line)
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
        match = INCLUDE.match(line)
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


@dataclass(frozen=True)
class DovecotRecord:
    """What the state keeps of the drop-in as this package last wrote it."""

    #: SHA-256 of the drop-in (fsutil.text_digest): while the live file still has it, only the
    #: blocks that change need validating (none of the others was edited).
    dropin: str = ""


@dataclass(frozen=True)
class DovecotStep(Step[DovecotRecord]):
    """Dovecot's part of a change: the drop-in to write (None: it stays), whether it was validated
    in a private copy of the config tree (else: in the live tree, once swapped in), and the drop-in
    that first gives the running Dovecot a larger config process limit (None: not needed)."""

    text: Optional[str] = None
    validated: bool = False
    limit: Optional[Tuple[str, int, str]] = None  # (text, limit MB, "reload" or "restart")


class Dovecot(Daemon[DovecotRecord]):
    """One Dovecot instance, addressed by its ``dovecot.conf`` (``-c FILE``)."""

    service = "dovecot"

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

    # -- a change ------------------------------------------------------------------------------

    def fresh_record(self) -> DovecotRecord:
        return DovecotRecord()

    def prepare(self, change: Change, record: DovecotRecord, undo: Transaction) -> DovecotStep:
        """The new drop-in, validated in a private copy of the config tree where one can be made;
        Dovecot reloads for renewed files even when the drop-in stays the same (it reads them on
        reload)."""
        fsutil.remove_stale_temps([self.dropin])
        goal_blocks = block_count(change.goal, self.syntax()) if change.goal is not None else 0
        rendered = self.render(
            change.after,
            change.before,
            change.changed,
            change.default,
            change.before_default,
            record.dropin,
            goal_blocks,
        )
        new = DovecotRecord(text_digest(rendered.text.encode()))
        if self.current() == rendered.text.encode():
            return DovecotStep(new, reload=change.content_changed, files=frozenset())
        self.check_included()
        validated = self._validate_in_copy(rendered.check_text)
        limit, warnings = None, []
        # Not when the live drop-in sets this limit and Dovecot was reloaded since it was written:
        # the running config process has it (asking costs a connection and /proc reads).
        if rendered.limit_mb != rendered.live_limit_mb or self.service in change.pending_reload:
            how = self.limit_step(rendered.limit_mb, rendered.blocks)
            if how is not None and rendered.limit_mb is not None:
                text = render_dropin(
                    change.before, self.syntax(), rendered.limit_mb, default=change.before_default
                )
                limit = (text, rendered.limit_mb, how)
            if how == "restart":
                warnings.append(
                    f"restarting dovecot for its config process limit ({rendered.limit_mb} MB): a reload "
                    "would run out of memory holding the live blocks twice (IMAP/POP3 sessions reconnect)"
                )
        return DovecotStep(
            new,
            reload=True,
            files=frozenset({self.dropin}),
            warnings=tuple(warnings),
            text=rendered.text,
            validated=validated,
            limit=limit,
        )

    def swap(self, step: Step[DovecotRecord], undo: Transaction) -> None:
        """The drop-in goes live, after the running Dovecot has got the larger config process limit
        it needs if it does (with the blocks it serves now: its own write, reload and wait)."""
        assert isinstance(step, DovecotStep) and step.text is not None
        if step.limit is not None:
            self._raise_limit_first(*step.limit)
        previous = self.current()
        fsutil.atomic_write(self.dropin, step.text.encode(), mode=0o644)
        undo.on_failure(self.restore, previous)
        if not step.validated:  # no private copy could read it: the live tree, before any reload
            self.validate()

    def _raise_limit_first(self, text: str, limit_mb: int, how: str) -> None:
        """Give the running Dovecot its larger config process limit, with the blocks it serves now
        (``text``), before the blocks grow past the old limit: reload (or restart when a reload
        could not hold the live blocks twice), then wait until the config process has it.
        On failure the drop-in it served is put back and reloaded."""
        manager = service_managers.for_settings(self.settings)
        previous = self.current()
        self.install(text, render_dropin(Plan(), self.syntax(), limit_mb))
        try:
            if how == "restart":
                logger.info("restarting dovecot for its new config process limit before adding blocks")
                service_managers.restart(manager, "dovecot")
            else:
                logger.info("reloading dovecot for its new config process limit before adding blocks")
                service_managers.reload(manager, "dovecot")
            self.wait_for_limit(limit_mb)
        except MisconfiguredError as exc:  # back to the drop-in it served, and make it serve again
            self.restore(previous)
            try:
                service_managers.reload(manager, "dovecot")
            except MisconfiguredError as again:
                raise ServiceError(f"{exc}; putting the previous drop-in back: {again}") from None
            raise ServiceError(f"{exc}; the previous drop-in was put back and reloaded") from None

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
        goal_blocks: int = 0,
    ) -> Rendered:
        """The new drop-in, and the part of it to validate: when the live drop-in is what this
        package wrote for ``before`` (and ``before_default``), only the default certificate, the
        memory limit and the blocks of the ``changed`` lineages (the others were validated when
        written), so one lineage costs the same at any size; otherwise all of it.

        ``written`` is the digest (text_digest) of the drop-in this package last wrote: equal to the
        live file's, it proves the file unchanged without rendering ``before`` again. The memory
        limit is sized for ``goal_blocks`` blocks when a bulk import is heading there (Change.goal).
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
        spliced = splice(text, before, plan, lineage_ids, syntax, clear_alt) if text and ours else None
        if spliced is None:
            exact, wild = sections(plan, syntax)
            blocks = len(exact) + len(wild)
            limit = self._limit_for(syntax, max(blocks, goal_blocks), live_limit)
            new_text = render_blocks(exact, wild, syntax, limit, default)
        else:
            body, blocks = spliced
            limit = self._limit_for(syntax, max(blocks, goal_blocks), live_limit)
            new_text = render_head(syntax, limit, default) + body
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
        blocks: None (it has it, or does not need it yet), "reload" (the running process parses the
        live blocks again under its own limit and passes the new one on: done as soon as the limit
        is raised, while the live blocks are few and a reload is cheap and fits), or "restart" (a
        reload of the live blocks would not fit under the running limit: only a new master starts
        the config process with the new one). The running limit is read from the process; the
        files may hold a larger one not yet reloaded."""
        if new_limit is None or not self.is_running():
            return None
        running = self.running_limit_mb(wait=3.0)
        if running is None:  # cannot look: assume the files are in force
            running = own_limit_mb(self.current()) or self.base_limit_mb() or 0
            if running == 0:
                return None
        if running >= new_limit:
            return None
        syntax = self.syntax()
        live = (self.current() or b"").count(b'\nlocal_name "')
        if required_limit_mb(2 * live, syntax) <= running:
            return "reload"
        return None if required_limit_mb(live + blocks, syntax) <= running else "restart"

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
        if self._validate_in_copy(check_text if check_text is not None else text):
            fsutil.atomic_write(self.dropin, text.encode(), mode=0o644)
            return
        previous = self.current()
        fsutil.atomic_write(self.dropin, text.encode(), mode=0o644)
        try:
            self.validate()
        except BaseException:
            self.restore(previous)
            raise

    def _validate_in_copy(self, dropin_text: str) -> bool:
        """Validate ``dropin_text`` as the drop-in in a private copy of the config tree (raise
        MisconfiguredError if Dovecot refuses it); False where no copy can read it."""
        with self._private_tree(dropin_text) as copy:
            if copy is None:
                return False
            self._doveconf_check(copy, named_as=os.path.dirname(self.conf))
            return True

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

    def keep(self, directory: str, record: DovecotRecord) -> None:
        kept = fsutil.snapshot(self.dropin, os.path.join(directory, "dovecot-dropin"))
        fsutil.atomic_write(os.path.join(directory, "dovecot.json"), json.dumps({"dropin": kept}).encode())

    def put_back(self, directory: str) -> None:
        where = os.path.join(directory, "dovecot.json")
        try:
            kept = bool(json.loads(fsutil.read_or_none(where) or b"")["dropin"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MisconfiguredError(
                f"cannot restore the previous Dovecot drop-in from {where}: {exc}"
            ) from None
        self.restore(fsutil.read_or_none(os.path.join(directory, "dovecot-dropin")) if kept else None)

    def check_config(self) -> None:
        self.validate()

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

    def listeners(self) -> List[Listener]:
        """inet_listeners of the imap-login and pop3-login services (``doveconf service`` shows
        defaults), read without this package's blocks: fast at any size."""
        with self.settings_conf() as conf:
            out = runner.run(["doveconf", "-c", conf, "service"]).stdout
            listen = first_address(doveconf_values(conf, ["listen"])["listen"])
        found = []
        stack: List[str] = []  # open sections, e.g. ["service imap-login", "inet_listener imaps"]
        settings: Dict[str, str] = {}
        for raw in out.splitlines():
            line = raw.strip()
            if line.endswith("{"):
                stack.append(line[:-1].strip())
                settings = {}
            elif line == "}":
                section = stack.pop() if stack else ""
                outer = stack[-1] if stack else ""
                protocol = {"service imap-login": "imap", "service pop3-login": "pop3"}.get(outer)
                port = int(settings.get("port", "0") or 0)
                if section.startswith("inet_listener ") and protocol and port:
                    mode = "tls" if settings.get("ssl") == "yes" else protocol
                    found.append(
                        Listener(
                            "dovecot",
                            connect_host(first_address(settings.get("address", "")) or listen),
                            port,
                            mode,
                        )
                    )
            elif " = " in line:
                key, _, value = line.partition(" = ")
                settings[key] = value
        return found

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
