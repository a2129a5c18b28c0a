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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from . import fsutil, service_managers
from .certfiles import CheckedFiles, check_files, gone_lineages, key_type_of_file
from .confirm import answering, confirm
from .daemon import Change, Daemon
from .dovecot import Dovecot
from .errors import InputError, MailstackError, MisconfiguredError, ServiceError
from .listeners import Listener
from .model import CertFiles, Lineage, Plan, Serving
from .names import covered_by, normalize_name, probe_name
from .postfix import Postfix
from .previous import Previous
from .settings import Settings, merge_options, resolve
from .state import State, StateStore
from .transaction import Transaction
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
    unmapped: List[str] = field(default_factory=list)  # ids of lineages whose files are gone


@dataclass
class Imported:
    """What a bulk import did: the lineages deployed, their names, and (lineage dir, error) failures."""

    names: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)
    #: The plan before, and each lineage deployed by id (report.action_of tells what changed).
    before: Plan = field(default_factory=Plan)
    lineages: Dict[str, Lineage] = field(default_factory=dict)

    @property
    def deployed(self) -> List[str]:
        """The ids of the lineages deployed, in the order given."""
        return list(self.lineages)


#: Called as a bulk import goes: (phase, done, total).
Progress = Callable[[str, int, int], None]


def default_files(plan: Plan, name: str) -> Serving:
    """The files of the lineages a client asking for ``name`` would get, to serve as the default
    certificate: those serving ``name`` itself, else those serving the wildcard that covers it
    (one label, as a certificate does); empty if none do, or for no name. Two when an ECDSA and
    an RSA lineage serve it (primary first)."""
    if not name:
        return ()
    return plan.files_of(name) or plan.files_of(f"*.{name.partition('.')[2]}")


def default_name(settings: Settings, daemons: Sequence[Daemon[Any]]) -> str:
    """The name whose lineage becomes the default certificate ("" for none): as given, else the
    host's own name as a daemon knows it (Postfix's myhostname)."""
    if settings.default_name == "none":
        return ""
    if settings.default_name:
        return settings.default_name
    return next((name for name in (daemon.own_name() for daemon in daemons) if name), "")


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

    def daemons(self, settings: Settings) -> List[Daemon[Any]]:
        """The daemons the settings name, in the order they are changed and reloaded."""
        found: List[Daemon[Any]] = []
        if settings.uses("postfix"):
            found.append(Postfix(settings))
        if settings.uses("dovecot"):
            found.append(Dovecot(settings))
        return found

    def check_installed(self, settings: Settings) -> None:
        for daemon in self.daemons(settings):
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
    IMPORT_BATCH = 1000

    def import_lineages(
        self,
        lineage_dirs: Sequence[str],
        progress: Optional[Progress] = None,
        require_running: bool = False,
    ) -> Imported:
        """Map every DNS name of each lineage (certbot's ``live/<name>``): the bulk import.

        A lineage whose files fail the checks, or that a batch cannot take, is reported and
        skipped; the others go on. Nothing is reloaded: call reload_pending() once at the end. A
        daemon that fails (ServiceError) stops the import and puts back the configuration it began
        with. ``require_running``: refuse (ServiceError, nothing changed) while a daemon is stopped.
        """
        result = Imported()
        report = progress or (lambda phase, done, total: None)
        with self._run():
            state = self.store.load()
            options, settings = self._resolved(state)
            if require_running:
                self._check_running(settings)
            result.before = state.plan
            pairs, incoming = self._check_dirs(state.plan, lineage_dirs, result.failed, report)
            goal = state.plan.with_lineages(incoming)  # what the daemons are sized for (Change.goal)
            for start in range(0, len(pairs), self.IMPORT_BATCH):
                batch = pairs[start : start + self.IMPORT_BATCH]
                try:
                    state = self._deploy_checked(state, settings, options, batch, None, result.outcome, goal)
                except ServiceError as exc:  # the daemon's fault, not a lineage's: trying each cannot
                    # help; the batches before are on disk, not served: back to what is served
                    back = (
                        self._roll_back(settings, state, result.outcome, {}) if self.previous.exists() else ""
                    )
                    raise ServiceError(f"{exc}; {back}" if back else str(exc)) from None
                except MailstackError:  # find the lineage at fault: apply the batch one by one
                    for pair in batch:
                        try:
                            state = self._deploy_checked(
                                state, settings, options, [pair], None, result.outcome, goal
                            )
                        except MailstackError as exc:
                            result.failed.append((os.path.dirname(pair[0].files.fullchain), str(exc)))
                report("deploying", min(start + len(batch), len(pairs)), len(pairs))
            failed = {os.path.normpath(d) for d, _ in result.failed}
            result.lineages = {lin.id: lin for lin in incoming if lin.id not in failed}
            mapped = [state.plan.lineages[lid] for lid in result.deployed if lid in state.plan.lineages]
            result.names = len({name for lineage in mapped for name in lineage.names})  # dual: once
        return result

    def preview(self, lineage_dirs: Sequence[str]) -> Tuple[Imported, List[str], Dict[str, bool]]:
        """What import_lineages() would do, changing nothing (a dry run): the import as it would
        report it, the services that would reload, and whether each configured daemon runs.

        It takes no lock and writes nothing, not even the state directory of a host that never had
        a deployment; which daemons reload is judged from the plan (any lineage added, changed or
        unmapped reloads both), not from the rendered files."""
        result = Imported()
        state = self.store.load()
        options, settings = self._resolved(state)
        self.check_installed(settings)
        result.before = state.plan
        _pairs, incoming = self._check_dirs(state.plan, lineage_dirs, result.failed, None)
        plan = _typed(state.plan, incoming).with_lineages(incoming)
        ids = {lineage.id for lineage in incoming}
        result.outcome.unmapped = sorted(gone_lineages(plan, ids))
        plan = plan.without(result.outcome.unmapped)
        changed, dropped = plan.lineages.changes_from(state.plan.lineages)
        result.lineages = {lin.id: lin for lin in incoming}
        daemons = self.daemons(settings)
        reloads = set(state.pending_reload)
        if changed or dropped or options != state.options:
            reloads |= {daemon.service for daemon in daemons}
        running = {daemon.service: daemon.is_running() for daemon in daemons}
        return result, [service for service in settings.services if service in reloads], running

    def _check_running(self, settings: Settings) -> None:
        stopped = [daemon.service for daemon in self.daemons(settings) if not daemon.is_running()]
        if stopped:
            raise ServiceError(f"{' and '.join(stopped)} not running: nothing changed")

    def _check_dirs(
        self,
        before: Plan,
        lineage_dirs: Sequence[str],
        failed: List[Tuple[str, str]],
        progress: Optional[Progress],
    ) -> Tuple[List[Tuple[Request, CheckedFiles]], List[Lineage]]:
        """Each lineage dir's files checked, as a request and the lineage it makes over ``before``;
        (lineage dir, error) appended to ``failed`` for those that fail."""
        pairs: List[Tuple[Request, CheckedFiles]] = []
        incoming: List[Lineage] = []
        for done, lineage_dir in enumerate(lineage_dirs, 1):
            files = CertFiles(
                os.path.join(lineage_dir, "privkey.pem"), os.path.join(lineage_dir, "fullchain.pem")
            )
            try:
                checked = check_files(files)
                if not checked.dns_names:
                    raise InputError(f"{files.fullchain} names no DNS name to map")
                request = Request(checked.files, checked.dns_names)
                known = before.lineages.get(checked.files.lineage_id)
                incoming.append(self._lineage(request, checked, known))  # refuses bad names
                pairs.append((request, checked))
            except MailstackError as exc:
                failed.append((lineage_dir, str(exc)))
            if progress is not None:
                progress("checking", done, len(lineage_dirs))
        return pairs, incoming

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
            names = tuple(n for n in known.names if covered_by(n, checked.dns_names))
            dropped = [n for n in known.names if n not in names]
            if dropped:
                self._warn(outcome, f"{', '.join(dropped)} no longer in {known.files.fullchain}: unmapped")
            lineage = Lineage(known.files, names, checked.digest, checked.key_type)
            if names:
                plan = _typed(state.plan, [lineage]).with_lineage(lineage)
            else:
                plan = state.plan.without([lineage_id])
            plan = self._prune(plan, {lineage_id}, outcome)
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
                owners = state.plan.lineages_of(name)  # an ECDSA and an RSA lineage may serve it
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
                state = self._reload(settings, state, outcome, held)
                self._confirm(settings, state, held, outcome)
            except MisconfiguredError as exc:
                raise ServiceError(f"{exc}; {self._roll_back(settings, state, outcome, held)}") from None
            self.store.save(replace(state, unconfirmed=frozenset()))
            self.previous.drop()
        return outcome

    #: How many changed lineages are checked by handshake after a reload (each costs one handshake
    #: per daemon; the full check of every name and port is ``certbot-mailstack verify``).
    CONFIRM_SAMPLE = 3

    #: How long a reloaded daemon may take to serve TLS and the new certificates before it counts as
    #: dark or refusing: Dovecot parses its whole configuration again and serves no TLS meanwhile,
    #: ~10 s at 10,000 names on 2.3 and ~5 s at 20,000 on 2.4 (docs/benchmarks.md); a daemon
    #: that refused the configuration is judged only when this runs out (70 s at 20,000 names).
    CONFIRM_TIMEOUT = 10.0
    CONFIRM_TIMEOUT_PER_NAME = 0.003
    #: After a rollback, Dovecot may still throttle a login service that failed to start (for up to
    #: a minute): wait that long before saying the old configuration is not served either.
    ROLLBACK_CONFIRM_TIMEOUT = 70.0

    def _reload(self, settings: Settings, state: State, outcome: Outcome, held: Held) -> State:
        """Reload each daemon with a pending change, saving the state after each; the state then.
        ``held`` gets, per daemon reloaded, its TLS listeners and those that served just before the
        reload (what it must serve again)."""
        manager = service_managers.for_settings(settings)
        daemons = {daemon.service: daemon for daemon in self.daemons(settings)}
        for service in [*settings.services, *sorted(state.pending_reload - set(settings.services))]:
            if service not in state.pending_reload:
                continue
            daemon = daemons.get(service)  # None: no longer configured
            if daemon is not None and not daemon.is_running():
                self._warn(
                    outcome, f"{service} is not running; it will serve the new certificates when it starts"
                )
            elif daemon is not None:
                if service not in held:  # a rollback keeps what served before the change
                    found = daemon.listeners()
                    held[service] = (found, answering(found))
                service_managers.reload(manager, service)
                outcome.reloaded.append(service)
            state = replace(state, pending_reload=state.pending_reload - {service})
            self.store.save(state)
        return state

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
        timeout = max(timeout, self.CONFIRM_TIMEOUT + self.CONFIRM_TIMEOUT_PER_NAME * state.plan.name_count())
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
        kept_state = self.previous.restore(self.daemons(settings), self.store.files())
        restored = replace(
            self.store.load() if kept_state else State(options=state.options),
            pending_reload=frozenset(settings.services),
            unconfirmed=frozenset(),
        )
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
            for daemon in self.daemons(settings):
                daemon.after_restore()
            self.store.save(replace(state, pending_reload=state.pending_reload | set(settings.services)))

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
        goal: Optional[Plan] = None,
    ) -> State:
        """Apply the checked requests to ``state``; the new state."""
        lineages = [
            self._lineage(request, checked, state.plan.lineages.get(checked.files.lineage_id))
            for request, checked in pairs
        ]
        content_changed = any(
            state.plan.lineages.get(lin.id) is None or state.plan.lineages[lin.id].digest != lin.digest
            for lin in lineages
        )
        plan = _typed(state.plan, lineages).with_lineages(lineages)
        plan = self._prune(plan, {lin.id for lin in lineages}, outcome)
        return self._apply(state, settings, options, plan, content_changed, checkpoint, outcome, goal)

    @staticmethod
    def _lineage(request: Request, checked: CheckedFiles, known: Optional[Lineage]) -> Lineage:
        names: Dict[str, None] = {}
        for raw in request.names:
            name = normalize_name(raw)
            if checked.dns_names and not covered_by(name, checked.dns_names):
                raise InputError(
                    f"name {name} is not covered by {request.files.fullchain} "
                    f"(it covers {', '.join(checked.dns_names)})"
                )
            names[name] = None
        if known is not None:  # keep names mapped before that the certificate still covers
            for name in known.names:
                if covered_by(name, checked.dns_names):
                    names.setdefault(name, None)
        return Lineage(checked.files, tuple(names), checked.digest, checked.key_type)

    def _prune(self, plan: Plan, keep: Set[str], outcome: Outcome) -> Plan:
        """Drop lineages whose files are gone (``certbot delete``) instead of breaking the daemons."""
        missing = gone_lineages(plan, keep)
        gone = [plan.lineages[lid] for lid in sorted(missing)]
        for lin in gone:
            self._warn(outcome, f"unmapped {', '.join(lin.names)}: {lin.files.fullchain} no longer exists")
            outcome.unmapped.append(lin.id)
        return plan.without(lin.id for lin in gone) if gone else plan

    def _apply(
        self,
        state: State,
        settings: Settings,
        options: Dict[str, str],
        plan: Plan,
        content_changed: bool,
        checkpoint: Optional[Checkpoint],
        outcome: Outcome,
        goal: Optional[Plan] = None,
    ) -> State:
        """Make the daemons serve ``plan``; the new state. Each daemon prepares its part (candidate
        beside the live files, validated); then the previous configuration is kept, the new state
        staged (a full disk fails here), each part swapped in, and the state committed. A failure
        anywhere undoes every step taken, in reverse order. ``goal``: the plan a bulk import is
        heading to (Change.goal)."""
        daemons = self.daemons(settings)
        changed, _dropped = plan.lineages.changes_from(state.plan.lineages)
        name = default_name(settings, daemons)
        change = Change(
            before=state.plan,
            after=plan,
            changed=tuple(changed),
            content_changed=content_changed,
            default=default_files(plan, name),
            before_default=default_files(state.plan, name),
            pending_reload=state.pending_reload,
            goal=goal,
        )
        fsutil.remove_stale_temps(self.store.files())
        with Transaction() as undo:
            steps = [
                (daemon, daemon.prepare(change, state.record(daemon.service), undo)) for daemon in daemons
            ]
            for _, step in steps:
                for warning in step.warnings:
                    self._warn(outcome, warning)
            new_state = replace(
                state.with_records({daemon.service: step.record for daemon, step in steps}),
                options=options,
                plan=plan,
            )
            reloads = [daemon.service for daemon, step in steps if step.reload]
            touched = set().union(*(step.files for _, step in steps))
            if not reloads and not touched:
                if new_state != state:
                    self.store.save(new_state)
                undo.commit()
                return new_state
            new_state = replace(
                new_state,
                pending_reload=state.pending_reload | set(reloads),
                unconfirmed=state.unconfirmed | set(changed),
            )
            if checkpoint is not None:
                touched |= set(self.store.files())
                existing = {path for path in touched if os.path.exists(path)}
                checkpoint(existing, touched - existing)
            if not self.previous.exists():  # else it holds the last configuration confirmed served
                kept = [(daemon, state.record(daemon.service)) for daemon in daemons]
                self.previous.save(kept, self.store.files())
                undo.on_failure(self.previous.drop)
            staged = self.store.stage(new_state)  # a full disk or read-only dir fails here
            undo.on_failure(self.store.discard, staged)
            for daemon, step in steps:
                if step.files:
                    daemon.swap(step, undo)
            self.store.commit(staged)
            undo.commit()
        outcome.changed += reloads
        return new_state


def _typed(plan: Plan, incoming: Sequence[Lineage]) -> Plan:
    """``plan`` with the key type filled in for each lineage of unknown type ("": a state file from
    before types were kept) that shares a name with ``incoming``: whether an incoming lineage takes
    a name or serves it beside the other depends on it. Only those few key files are read, not the
    thousands an old state may list, and they are found by name."""
    ids = {lineage.id for lineage in incoming}
    sharing = {lin for lineage in incoming for name in lineage.names for lin in plan.lineages_of(name)}
    unknown = [lin for lin in sharing if not lin.key_type and lin.id not in ids]
    typed = [lin._replace(key_type=key_type_of_file(lin.files.key)) for lin in unknown]
    typed = [lin for lin in typed if lin.key_type]
    return plan.with_changes({lin.id: lin for lin in typed}) if typed else plan
