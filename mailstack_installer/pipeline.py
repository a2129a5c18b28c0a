"""The pipeline both front doors drive: plan -> render -> apply (candidate, validate, swap) -> reload.

Every run holds the state lock, so a renewal and a manual run never interleave. A change is applied
only if content differs (names, paths or certificate digests), which makes the second of two
deployments of one renewal (deploy hook, then certbot's renew_deploy) a cheap no-op.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

from . import fsutil, listeners, service_managers
from .certfiles import CheckedFiles, check_files, key_type_of_file
from .confirm import confirm, serving
from .dovecot import Dovecot, Rendered, render_dropin
from .errors import (
    CommandError,
    InputError,
    MailstackError,
    MisconfiguredError,
    NotInstalledError,
    ServiceError,
)
from .fsutil import text_digest
from .listeners import Listener
from .maptables import Layout, tables_for
from .model import CertFiles, Lineage, Plan, Serving, as_serving, in_directory
from .names import normalize_name, probe_name
from .postfix import Candidate, Postfix, chain_value, same_chain
from .previous import Previous
from .settings import Settings, merge_options, resolve
from .state import Staged, State, StateStore
from .verify import lineage_leaf

logger = logging.getLogger(__name__)

#: Per daemon reloaded: its TLS listeners, and those that served just before the reload.
Held = Dict[str, Tuple[List[Listener], List[Listener]]]

#: Called before the first live file changes with (files that exist, files about to be created).
Checkpoint = Callable[[Set[str], Set[str]], None]


@dataclass(frozen=True)
class Request:
    """Map ``names`` to the key and full chain in ``files``."""

    files: CertFiles
    names: Tuple[str, ...]


@dataclass
class Outcome:
    changed: List[str] = field(default_factory=list)  # "postfix", "dovecot"
    warnings: List[str] = field(default_factory=list)
    reloaded: List[str] = field(default_factory=list)


@dataclass
class Imported:
    """What a bulk import did: lineage ids deployed, their names, and (lineage dir, error) failures."""

    deployed: List[str] = field(default_factory=list)
    names: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)


#: Called as a bulk import goes: (phase, done, total).
Progress = Callable[[str, int, int], None]


def covers(sans: Sequence[str], name: str) -> bool:
    """Whether a certificate with DNS names ``sans`` is valid for ``name``."""
    lowered = [s.lower() for s in sans]
    if name in lowered:
        return True
    _head, _, parent = name.partition(".")
    return not name.startswith("*.") and bool(parent) and f"*.{parent}" in lowered


def default_serving(plan: Plan, name: str) -> Serving:
    """The files of the lineages a client asking for ``name`` would get, to serve as the default
    certificate: those serving ``name`` itself, else those serving the wildcard that covers it
    (one label, as a certificate does); empty if none do, or for no name. Two when an ECDSA and
    an RSA lineage serve it (primary first)."""
    if not name:
        return ()
    return plan.served_of(name) or plan.served_of(f"*.{name.partition('.')[2]}")


def default_files(plan: Plan, name: str) -> Optional[CertFiles]:
    """The primary of default_serving (None if none)."""
    serving = default_serving(plan, name)
    return serving[0] if serving else None


@dataclass(frozen=True)
class DefaultChain:
    """What to do with Postfix's ``smtpd_tls_chain_files``: its value now, the value to set
    (None: leave it), and the value it had before this package first set it (None: not set by us)."""

    current: str
    value: Optional[str]
    before: Optional[str]


class Pipeline:
    """Deploys lineages for one certbot config dir with the options in force."""

    #: How long a run waits for another one to finish (a renewal and a manual run) before failing.
    lock_timeout = 300.0

    def __init__(self, config_dir: str, given: Optional[Mapping[str, Optional[str]]] = None) -> None:
        self.config_dir = config_dir
        self.store = StateStore(config_dir)
        self.previous = Previous(self.store.directory)
        self.given: Mapping[str, Optional[str]] = given or {}

    @contextlib.contextmanager
    def _run(self) -> Iterator[None]:
        """One run: holds the state lock, with Python's cyclic garbage collector paused.

        A run on a host of 10,000 lineages makes tens of thousands of small objects (the plan, the
        state, the renderings), and each allocation burst set off collections that walk all of
        them: a third of the time of one deployment. None of them form cycles; reference
        counting frees them, and the collector runs again (if it was on) when the run ends.
        """
        with self.store.locked(self.lock_timeout):
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                yield
            finally:
                if was_enabled:
                    gc.enable()

    # -- reading ------------------------------------------------------------------------------

    def settings(self, state: Optional[State] = None) -> Settings:
        state = self.store.load() if state is None else state
        return self._resolved(state)[1]

    def _resolved(self, state: State) -> Tuple[Dict[str, str], Settings]:
        """The options in force (persisted, overridden by those given now) and their settings."""
        options = merge_options(state.options, self.given)
        return options, resolve(options)

    def daemons(self, settings: Settings) -> Tuple[Optional[Postfix], Optional[Dovecot]]:
        postfix = Postfix(settings) if settings.uses("postfix") else None
        dovecot = Dovecot(settings) if settings.uses("dovecot") else None
        return postfix, dovecot

    def check_installed(self, settings: Settings) -> None:
        for daemon in self.daemons(settings):
            if daemon is not None:
                daemon.check_installed()

    # -- deploying ----------------------------------------------------------------------------

    def deploy(self, requests: Sequence[Request], checkpoint: Optional[Checkpoint] = None) -> Outcome:
        """Map the requested names (re-pointing names other lineages had) and apply the result."""
        outcome = Outcome()
        with self._run():
            state = self.store.load()
            options, settings = self._resolved(state)
            pairs = [(request, check_files(request.files)) for request in requests]
            self._deploy_checked(state, settings, options, pairs, checkpoint, outcome)
        return outcome

    #: Lineages applied at once by a bulk import: each batch is one candidate, validation and swap.
    IMPORT_BATCH = 500

    def import_lineages(self, lineage_dirs: Sequence[str], progress: Optional[Progress] = None) -> Imported:
        """Map every DNS name of each lineage (certbot's ``live/<name>``): the bulk import.

        A lineage whose files fail the checks, or that a batch cannot take, is reported and
        skipped; the others go on. Nothing is reloaded: call reload_pending() once at the end. A
        daemon that fails (ServiceError) stops the import and puts back the configuration it began
        with.
        """
        result = Imported()
        report = progress or (lambda phase, done, total: None)
        with self._run():
            state = self.store.load()
            options, settings = self._resolved(state)
            pairs: List[Tuple[Request, CheckedFiles]] = []
            for done, lineage_dir in enumerate(lineage_dirs, 1):
                files = CertFiles(
                    os.path.join(lineage_dir, "privkey.pem"), os.path.join(lineage_dir, "fullchain.pem")
                )
                try:
                    checked = check_files(files)
                    if not checked.dns_names:
                        raise InputError(f"{files.fullchain} names no DNS name to map")
                    request = Request(checked.files, checked.dns_names)
                    self._lineage(request, checked, None)  # refuses names that cannot be mapped
                    pairs.append((request, checked))
                except MailstackError as exc:
                    result.failed.append((lineage_dir, str(exc)))
                report("checking", done, len(lineage_dirs))
            # The map's tables for the size the import ends at, from the first batch on: else the
            # map is split again (a full rebuild) each time it doubles on the way.
            expected = state.plan.name_count() + sum(len(request.names) for request, _ in pairs)
            for start in range(0, len(pairs), self.IMPORT_BATCH):
                batch = pairs[start : start + self.IMPORT_BATCH]
                try:
                    self._deploy_checked(state, settings, options, batch, None, result.outcome, expected)
                except ServiceError as exc:  # the daemon's fault, not a lineage's: trying each cannot
                    # help; the batches before are on disk, not served: back to what is served
                    back = (
                        self._roll_back(settings, state, result.outcome, {}) if self.previous.exists() else ""
                    )
                    raise ServiceError(f"{exc}; {back}" if back else str(exc)) from None
                except MailstackError:  # find the lineage at fault: apply the batch one by one
                    for pair in batch:
                        try:
                            self._deploy_checked(
                                state, settings, options, [pair], None, result.outcome, expected
                            )
                        except MailstackError as exc:
                            result.failed.append((os.path.dirname(pair[0].files.fullchain), str(exc)))
                report("deploying", min(start + len(batch), len(pairs)), len(pairs))
            failed = {os.path.normpath(d) for d, _ in result.failed}
            result.deployed = [r.files.lineage_id for r, _ in pairs if r.files.lineage_id not in failed]
            mapped = [state.plan.lineages[lid] for lid in result.deployed if lid in state.plan.lineages]
            result.names = len({name for lineage in mapped for name in lineage.names})  # dual: once
        return result

    def refresh(self, lineage_dir: str) -> Optional[Outcome]:
        """Redeploy one lineage after renewal; None if this package does not manage it."""
        lineage_id = os.path.normpath(os.path.abspath(lineage_dir))
        with self._run():
            state = self.store.load()
            known = state.plan.lineages.get(lineage_id)
            if known is None:
                return None
            outcome = Outcome()
            options, settings = self._resolved(state)
            checked = check_files(known.files)
            names = tuple(n for n in known.names if covers(checked.dns_names, n))
            dropped = [n for n in known.names if n not in names]
            if dropped:
                self._warn(outcome, f"{', '.join(dropped)} no longer in {known.files.fullchain}: unmapped")
            lineage = Lineage(known.files, names, checked.digest, checked.key_type)
            if names:
                plan = _typed(state.plan, [lineage]).with_lineage(lineage)
            else:
                plan = state.plan.without([lineage_id])
            plan = self._prune(plan, {lineage_id}, outcome, state)
            changed = checked.digest != known.digest
            self._apply(state, settings, options, plan, changed, None, outcome)
        return outcome

    def remove(self, names: Sequence[str] = (), lineage_names: Sequence[str] = ()) -> Outcome:
        """Unmap ``names`` and every name of the lineages ``lineage_names`` (``live/<name>`` or a
        lineage dir), through the same candidate/validate/swap path; reload with reload_pending()."""
        outcome = Outcome()
        with self._run():
            state = self.store.load()
            options, settings = self._resolved(state)
            plan = state.plan
            for lineage_name in lineage_names:
                matches = [lid for lid in plan.lineages if lineage_name in (lid, os.path.basename(lid))]
                if not matches:
                    raise InputError(
                        f"no deployed lineage is called {lineage_name} (see certbot-mailstack status)"
                    )
                plan = plan.without(matches)
            for raw in names:
                name = normalize_name(raw)
                owners = state.plan.serving_of(name)  # an ECDSA and an RSA lineage may serve it
                if not owners:
                    raise InputError(f"{name} is not mapped (see certbot-mailstack status)")
                for owner in owners:
                    lineage = plan.lineages.get(owner.id)
                    if lineage is not None:
                        kept = tuple(n for n in lineage.names if n != name)
                        plan = plan.without([owner.id])
                        if kept:
                            plan = plan.with_lineage(lineage._replace(names=kept))
            self._apply(state, settings, options, plan, False, None, outcome)
        return outcome

    def reload_pending(self, outcome: Optional[Outcome] = None) -> Outcome:
        """Reload each daemon whose configuration changed, once, then confirm by handshakes that
        it serves the changed lineages; if not, go back to the previous configuration."""
        outcome = outcome or Outcome()
        with self._run():
            state = self.store.load()
            if not state.pending_reload:
                return outcome
            settings = self.settings(state)
            held: Held = {}
            try:
                self._reload(settings, state, outcome, held)
                self._confirm(settings, state, held, outcome)
            except MisconfiguredError as exc:
                raise ServiceError(f"{exc}; {self._roll_back(settings, state, outcome, held)}") from None
            state.unconfirmed.clear()
            self.store.save(state)
            self.previous.drop()
        return outcome

    #: How many changed lineages are checked by handshake after a reload (each costs one handshake
    #: per daemon; the full check of every name and port is ``certbot-mailstack verify``).
    CONFIRM_SAMPLE = 3

    #: How long a reloaded daemon may take to serve TLS and the new certificates before it counts as
    #: dark or refusing: Dovecot parses its whole configuration again and serves no TLS meanwhile,
    #: ~10 s at 10,000 names on 2.3 and ~5 s at 20,000 on 2.4 (FACTS §3.3, docs/design.md); a daemon
    #: that refused the configuration is judged only when this runs out (70 s at 20,000 names).
    CONFIRM_TIMEOUT = 10.0
    CONFIRM_TIMEOUT_PER_NAME = 0.003
    #: After a rollback, Dovecot may still throttle a login service that failed to start (for up to
    #: a minute): wait that long before saying the old configuration is not served either.
    ROLLBACK_CONFIRM_TIMEOUT = 70.0

    def _reload(self, settings: Settings, state: State, outcome: Outcome, held: Held) -> None:
        """Reload each daemon with a pending change; ``held`` gets, per daemon reloaded, its TLS
        listeners and those that served just before the reload (what it must serve again)."""
        manager = service_managers.for_settings(settings)
        postfix, dovecot = self.daemons(settings)
        for service, daemon in (("postfix", postfix), ("dovecot", dovecot)):
            if service not in state.pending_reload:
                continue
            if daemon is not None and not daemon.is_running():
                self._warn(
                    outcome, f"{service} is not running; it will serve the new certificates when it starts"
                )
            elif daemon is not None:
                if service not in held:  # a rollback keeps what served before the change
                    found = listeners.for_daemon(settings, service)
                    held[service] = (found, serving(found))
                _reload_one(manager, service)
                outcome.reloaded.append(service)
            state.pending_reload.discard(service)
            self.store.save(state)

    def _confirm(
        self, settings: Settings, state: State, held: Held, outcome: Outcome, timeout: float = 0.0
    ) -> None:
        """Every reloaded daemon serves TLS where it did before, and a sample of the changed
        lineages as planned."""
        sample = [state.plan.lineages[lid] for lid in sorted(state.unconfirmed) if lid in state.plan.lineages]
        dual = state.plan.dual_names()
        expected = {
            (probe_name(lin.names[0]), lin.key_type if lin.names[0] in dual else None): lineage_leaf(
                lin.files
            ).fingerprint
            for lin in sample[: self.CONFIRM_SAMPLE]
        }
        timeout = max(timeout, self.CONFIRM_TIMEOUT + self.CONFIRM_TIMEOUT_PER_NAME * len(state.plan.names()))
        for service, (found, before) in held.items():
            warning = confirm(service, found, expected, timeout, before)
            if warning:
                self._warn(outcome, warning)

    def _roll_back(self, settings: Settings, state: State, outcome: Outcome, held: Held) -> str:
        """Back to the configuration last confirmed; reload both daemons with it and check that
        they serve TLS where they did before the change (``held``). Returns what happened, to end
        the error line with."""
        if not self.previous.exists():
            return "no previous configuration was kept to go back to"
        kept_state = self.previous.restore(settings, self.store.files())
        restored = self.store.load() if kept_state else State(options=state.options)
        restored.pending_reload, restored.unconfirmed = set(settings.services), set()
        self.store.save(restored)
        self.previous.drop()
        again = dict(held)  # judged by what served before the change, not by what serves now
        try:
            self._reload(settings, restored, outcome, again)
            self._confirm(settings, restored, again, outcome, self.ROLLBACK_CONFIRM_TIMEOUT)
        except MisconfiguredError as exc:
            return f"the previous configuration was restored, but {exc}"
        return "the previous configuration was restored, reloaded and serves TLS"

    def mark_for_reload(self) -> None:
        """After certbot restored files from a checkpoint: recompile the map, reload both daemons."""
        with self._run():
            state = self.store.load()
            settings = self.settings(state)
            postfix, _ = self.daemons(settings)
            if postfix is not None:
                postfix.rebuild_live()
            state.pending_reload |= set(settings.services)
            self.store.save(state)

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _warn(outcome: Outcome, message: str) -> None:
        logger.warning(message)
        outcome.warnings.append(message)

    def _deploy_checked(
        self,
        state: State,
        settings: Settings,
        options: Dict[str, str],
        pairs: Sequence[Tuple[Request, CheckedFiles]],
        checkpoint: Optional[Checkpoint],
        outcome: Outcome,
        expected_names: int = 0,
    ) -> None:
        lineages = [
            self._lineage(request, checked, state.plan.lineages.get(checked.files.lineage_id))
            for request, checked in pairs
        ]
        content_changed = any(
            state.plan.lineages.get(lin.id) is None or state.plan.lineages[lin.id].digest != lin.digest
            for lin in lineages
        )
        plan = _typed(state.plan, lineages).with_lineages(lineages)
        plan = self._prune(plan, {lin.id for lin in lineages}, outcome, state)
        self._apply(state, settings, options, plan, content_changed, checkpoint, outcome, expected_names)

    @staticmethod
    def _lineage(request: Request, checked: CheckedFiles, known: Optional[Lineage]) -> Lineage:
        names: Dict[str, None] = {}
        for raw in request.names:
            name = normalize_name(raw)
            if checked.dns_names and not covers(checked.dns_names, name):
                raise InputError(
                    f"name {name} is not covered by {request.files.fullchain} "
                    f"(it covers {', '.join(checked.dns_names)})"
                )
            names[name] = None
        if known is not None:  # keep names mapped before that the certificate still covers
            for name in known.names:
                if covers(checked.dns_names, name):
                    names.setdefault(name, None)
        return Lineage(checked.files, tuple(names), checked.digest, checked.key_type)

    def _prune(self, plan: Plan, keep: Set[str], outcome: Outcome, state: Optional[State] = None) -> Plan:
        """Drop lineages whose files are gone (``certbot delete``) instead of breaking the daemons;
        record in ``state`` what _missing says the directory of the lineages was like."""
        missing, seen = _missing(plan, keep, state.lineage_dir if state is not None else "")
        if state is not None:
            state.lineage_dir = seen
        gone = [plan.lineages[lid] for lid in sorted(missing)]
        for lin in gone:
            self._warn(outcome, f"unmapped {', '.join(lin.names)}: {lin.files.fullchain} no longer exists")
        return plan.without(lin.id for lin in gone) if gone else plan

    def _touched_files(self, settings: Settings, layouts: Sequence[Layout]) -> Set[str]:
        postfix, dovecot = self.daemons(settings)
        files = set(self.store.files())
        if postfix is not None:
            files |= {source for layout in layouts for source in layout.sources()} | {postfix.main_cf}
        if dovecot is not None:
            files.add(settings.dovecot_config)
        return files

    def _apply(
        self,
        state: State,
        settings: Settings,
        options: Dict[str, str],
        plan: Plan,
        content_changed: bool,
        checkpoint: Optional[Checkpoint],
        outcome: Outcome,
        expected_names: int = 0,
    ) -> None:
        """Render, validate and swap in ``plan`` (see the module docstring); ``expected_names``:
        how many names the plan is about to grow to (a bulk import), for the map's layout."""
        postfix, dovecot = self.daemons(settings)
        before_layout = Layout(settings.postfix_map, state.postfix_tables)
        layout = Layout(
            settings.postfix_map,
            tables_for(
                max(plan.name_count(), expected_names), state.postfix_tables, settings.postfix_map_tables
            ),
        )
        fsutil.remove_stale_temps([*layout.sources(), settings.dovecot_config, *self.store.files()])
        for fixed in postfix.secure_live_files(layout) if postfix is not None else []:
            self._warn(outcome, f"private key material was exposed: {fixed}")
        changed, _dropped = plan.lineages.changes_from(state.plan.lineages)
        tables: Dict[int, str] = {}
        edits = None
        sources = state.postfix_sources
        if postfix is not None:
            tables, edits, sources = postfix.tables_to_build(
                plan, state.plan, changed, layout, before_layout, state.postfix_sources
            )
        default_name = self._default_name(settings, postfix)
        default = default_serving(plan, default_name)
        before_default = default_serving(state.plan, default_name)
        dropin = None
        if dovecot is not None:
            dropin = dovecot.render(plan, state.plan, changed, default, before_default, state.dovecot_dropin)
        chain = self._default_chain(state, postfix, default)
        rebuild_map = postfix is not None and (bool(tables) or not postfix.check_parameter(layout))
        write_dropin = dropin is not None and _read_text(settings.dovecot_config) != dropin.text
        set_chain = chain is not None and chain.value is not None
        if not (rebuild_map or write_dropin or content_changed or set_chain):
            before = chain.before if chain is not None else state.default_chain_before
            if (plan, options, before, sources) != (
                state.plan,
                state.options,
                state.default_chain_before,
                state.postfix_sources,
            ):
                state.plan, state.options, state.default_chain_before = plan, options, before
                state.postfix_sources = sources
                self.store.save(state)
            return
        if dovecot is not None and dropin is not None and write_dropin:
            self._raise_limit_first(settings, state, dovecot, dropin, before_default, outcome)
        # Everything that can be checked is checked before the first live file changes:
        # the candidate map is built and verified beside the live one, the include is confirmed.
        candidate = (
            postfix.build_candidate(plan, layout, tables, edits, state.postfix_stamps, changed)
            if postfix is not None and rebuild_map
            else None
        )
        previous_dropin = dovecot.current() if dovecot is not None else None
        swapped_dropin = swapped_chain = False
        staged_state: Optional[Staged] = None
        saved_previous = False
        try:
            if dovecot is not None and write_dropin:
                dovecot.check_included()
            if checkpoint is not None:
                touched = self._touched_files(settings, [before_layout, layout])
                existing = {f for f in touched if os.path.exists(f)}
                checkpoint(existing, touched - existing)
            if not self.previous.exists():  # else it holds the last configuration confirmed served
                self.previous.save(settings, self.store.files(), before_layout.sources())
                saved_previous = True
            new_state = State(
                options,
                plan,
                set(state.pending_reload),
                set(state.unconfirmed) | set(changed),
                default_chain_before=chain.before if chain is not None else state.default_chain_before,
                dovecot_dropin=text_digest(dropin.text.encode())
                if dropin is not None
                else state.dovecot_dropin,
                postfix_tables=layout.count,
                postfix_stamps=_stamps(postfix, candidate, state.postfix_stamps, layout != before_layout),
                postfix_sources=sources,
                lineage_dir=state.lineage_dir,
            )
            if rebuild_map or set_chain:
                new_state.pending_reload.add("postfix")
            if dovecot is not None and (write_dropin or content_changed):
                new_state.pending_reload.add("dovecot")
            staged_state = self.store.stage(new_state)  # fails here, not after the swap
            if dovecot is not None and dropin is not None and write_dropin:
                dovecot.install(dropin.text, dropin.check_text)  # puts the old drop-in back if refused
                swapped_dropin = True
            if postfix is not None and candidate is not None:
                postfix.commit(candidate)
            if postfix is not None and chain is not None and chain.value is not None:
                swapped_chain = True
                postfix.set_default_chain(chain.value)
            self.store.commit(staged_state)
        except BaseException:
            if staged_state is not None:
                self.store.discard(staged_state)
            if saved_previous:
                self.previous.drop()
            if postfix is not None and candidate is not None:
                postfix.discard(candidate)
            if dovecot is not None and swapped_dropin:
                dovecot.restore(previous_dropin)
            if postfix is not None and chain is not None and swapped_chain:
                postfix.set_default_chain(chain.current)
            raise
        if postfix is not None and chain is not None and chain.value:
            overrides = postfix.default_overrides()
            if overrides:
                self._warn(
                    outcome,
                    f"master.cf gives {', '.join(overrides)} its own certificate (-o "
                    "smtpd_tls_chain_files or smtpd_tls_cert_file): clients without SNI there do not "
                    f"get the default certificate set in {postfix.main_cf}",
                )
        outcome.changed += ["postfix"] if rebuild_map or set_chain else []
        outcome.changed += ["dovecot"] if dovecot is not None and (write_dropin or content_changed) else []
        state.plan, state.options = plan, options
        state.pending_reload, state.unconfirmed = new_state.pending_reload, new_state.unconfirmed
        state.default_chain_before = new_state.default_chain_before
        state.dovecot_dropin = new_state.dovecot_dropin
        state.postfix_tables = new_state.postfix_tables
        state.postfix_stamps, state.postfix_sources = new_state.postfix_stamps, new_state.postfix_sources

    @staticmethod
    def _default_name(settings: Settings, postfix: Optional[Postfix]) -> str:
        """The name whose lineage becomes the default certificate ("" for none): as given, else
        Postfix's myhostname."""
        if settings.default_name == "none":
            return ""
        if settings.default_name or postfix is None:
            return settings.default_name
        raw = postfix.myhostname()
        try:
            return normalize_name(raw)
        except InputError:
            logger.info("Postfix's myhostname %r is no host name: no default certificate is set", raw)
            return ""

    @staticmethod
    def _default_chain(
        state: State, postfix: Optional[Postfix], default: Union[CertFiles, Serving, None]
    ) -> Optional[DefaultChain]:
        """Point smtpd_tls_chain_files at the lineage(s) covering the default name; when none does
        any more, put back the value it had before this package set it, unless it was changed by
        hand."""
        if postfix is None:
            return None
        current, before = postfix.default_chain(), state.default_chain_before
        serving = as_serving(default)
        if serving:
            value = chain_value(serving)
            if same_chain(current, value):
                return DefaultChain(current, None, before)
            return DefaultChain(current, value, current if before is None else before)
        if before is None:
            return DefaultChain(current, None, None)
        ours = [chain_value(lin.files) for lin in state.plan.lineages.values()]
        ours += {chain_value(serving) for _, serving in state.plan.served() if len(serving) > 1}
        if not any(same_chain(current, value) for value in ours):
            logger.info(
                "smtpd_tls_chain_files was changed in %s since certbot-mailstack set it: left as it is",
                postfix.main_cf,
            )
            return DefaultChain(current, None, None)
        if same_chain(current, before):
            return DefaultChain(current, None, None)
        return DefaultChain(current, before, None)

    def _raise_limit_first(
        self,
        settings: Settings,
        state: State,
        dovecot: Dovecot,
        dropin: Rendered,
        default: Serving,
        outcome: Outcome,
    ) -> None:
        """Give the running Dovecot its larger config process limit, with the blocks it has now,
        before the blocks grow past the old limit: its own write, reload and wait (FACTS §3.3).

        Not when the live drop-in already sets this limit and Dovecot has been reloaded since it
        was written: the running config process has it (asking it costs a connection and /proc
        reads on every deployment of a large host)."""
        if dropin.limit_mb == dropin.live_limit_mb and "dovecot" not in state.pending_reload:
            return
        step = dovecot.limit_step(dropin.limit_mb, dropin.blocks)
        if step is None:
            return
        assert dropin.limit_mb is not None
        manager = service_managers.for_settings(settings)
        previous = dovecot.current()
        text = render_dropin(state.plan, dovecot.syntax(), dropin.limit_mb, default=default)
        dovecot.install(text, render_dropin(Plan(), dovecot.syntax(), dropin.limit_mb))
        try:
            if step == "restart":
                self._warn(
                    outcome,
                    f"restarting dovecot for its config process limit ({dropin.limit_mb} MB): a reload "
                    "would run out of memory holding the live blocks twice (IMAP/POP3 sessions reconnect)",
                )
                _restart_one(manager, "dovecot")
            else:
                logger.info("reloading dovecot for its new config process limit before adding blocks")
                _reload_one(manager, "dovecot")
            outcome.reloaded.append("dovecot")
            dovecot.wait_for_limit(dropin.limit_mb)
        except MisconfiguredError as exc:  # back to the drop-in it served, and make it serve again
            dovecot.restore(previous)
            try:
                _reload_one(manager, "dovecot")
            except MisconfiguredError as again:
                raise ServiceError(f"{exc}; putting the previous drop-in back: {again}") from None
            raise ServiceError(f"{exc}; the previous drop-in was put back and reloaded") from None


#: How long the lineages' directory must have been still for its identity to be recorded
#: (fsutil.settled_identity).
SETTLED = 2.0


def _missing(plan: Plan, keep: Set[str], seen: str = "") -> Tuple[Set[str], str]:
    """The lineages of ``plan`` (but those in ``keep``, checked now) whose full chain or key no
    longer exists; and what to record of the directory they share for the next run (see below).

    certbot removes a whole ``live/<name>`` directory, so the directory the lineages share is
    listed once and only those missing from the listing are looked up on their own: 10,000
    lineages cost one ``listdir`` and set operations, not 20,000 ``stat`` calls. A key kept
    outside its lineage directory is looked up on its own.

    Removing an entry changes the directory's mtime. When a listing finds every lineage right in
    the directory with its key beside its chain, the directory's identity is recorded (``seen``);
    while the directory keeps it and each lineage deployed since is laid out the same way, no
    lineage directory was removed, and the listing is skipped: a renewal run of hundreds of
    lineages on a host of 10,000 lists ``live/`` once.
    """
    lineages = plan.lineages
    incoming = [lineages[lid] for lid in keep if lid in lineages]
    if seen and _unchanged(seen, incoming):
        return set(), seen
    every = lineages.ids()
    if not every:
        return set(), ""
    ids = every - keep
    shared = os.path.commonpath([min(every), max(every)])  # every id lies between them
    head = shared.rstrip("/") + "/"  # paths are absolute (names.check_path)
    stamp = fsutil.settled_identity(head, SETTLED)
    try:
        listed = {head + entry for entry in os.listdir(head)}
    except OSError:
        listed = set()
    unlisted = ids - listed
    missing = {lid for lid in unlisted if not os.path.exists(lineages[lid].files.fullchain)}
    apart = lineages.keys_apart()
    missing.update(lid for lid, key in apart if lid in ids and lid not in missing and not os.path.exists(key))
    laid_out = not unlisted and not apart and all(lin.id in listed for lin in incoming)
    return missing, f"{stamp}:{head}" if stamp and laid_out else ""


def _unchanged(seen: str, incoming: Sequence[Lineage]) -> bool:
    """Whether the directory recorded in ``seen`` has its identity still, and each lineage in
    ``incoming`` is right in it with its key beside its chain (else a later listing could miss it)."""
    *fields, head = seen.split(":", 3)  # "<fsutil.identity>:<head>", as _missing records it
    directory = head.rstrip("/")
    for lineage in incoming:
        if not (in_directory(lineage.id, directory) and in_directory(lineage.files.key, lineage.id)):
            return False
    return ":".join(fields) == fsutil.settled_identity(head, SETTLED)


def _typed(plan: Plan, incoming: Sequence[Lineage]) -> Plan:
    """``plan`` with the key type filled in for each lineage of unknown type ("": a state file from
    before types were kept) that shares a name with ``incoming``: whether an incoming lineage takes
    a name or serves it beside the other depends on it. Only those few key files are read, not the
    thousands an old state may list, and they are found by name."""
    ids = {lineage.id for lineage in incoming}
    sharing = {lin for lineage in incoming for name in lineage.names for lin in plan.serving_of(name)}
    unknown = [lin for lin in sharing if not lin.key_type and lin.id not in ids]
    typed = [lin._replace(key_type=key_type_of_file(lin.files.key)) for lin in unknown]
    typed = [lin for lin in typed if lin.key_type]
    return plan.with_changes({lin.id: lin for lin in typed}) if typed else plan


def _stamps(
    postfix: Optional[Postfix], candidate: Optional[Candidate], before: Sequence[str], relaid: bool
) -> List[str]:
    """The identity of each table after the swap: the candidate's for those it built, the ones
    recorded before for the others (none of them when the layout changed)."""
    if postfix is None or candidate is None:
        return list(before)
    stamps = ["" for _ in range(candidate.layout.count)]
    if not relaid:
        stamps[: len(before)] = list(before)[: candidate.layout.count]
    for table in candidate.tables:
        stamps[table.index] = postfix.stamp(table.table)
    return stamps


def _restart_one(manager: service_managers.ServiceManager, service: str) -> None:
    try:
        manager.restart(service)
    except (CommandError, NotInstalledError) as exc:
        raise ServiceError(f"restarting {service} ({manager.name}) failed: {exc}") from None


def _reload_one(manager: service_managers.ServiceManager, service: str) -> None:
    try:
        manager.reload(service)
    except (CommandError, NotInstalledError) as exc:  # systemctl absent is as fatal as a failure
        raise ServiceError(f"reloading {service} ({manager.name}) failed: {exc}") from None


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
