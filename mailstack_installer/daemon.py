"""The interface both daemons implement (postfix/, dovecot/): the pipeline loops over the daemons
a host has and never asks which one it holds.

A deployment is one ``Change`` from the plan the daemons serve to a new one. Each daemon first
``prepare``s it beside its live files (render, write a candidate, validate it with its own tools:
nothing live changes), then, once every daemon has, ``swap``s it in; both register how to undo
what they did with the run's Transaction.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, FrozenSet, Generic, List, Optional, Tuple, TypeVar

from .listeners import Listener
from .model import Plan, Serving
from .transaction import Transaction

#: What the state keeps for a daemon between runs (postfix.daemon.PostfixRecord, ...).
R = TypeVar("R")


@dataclass(frozen=True)
class Change:
    """From ``before`` (what the daemons serve) to ``after``."""

    before: Plan
    after: Plan
    #: Ids of the lineages added or changed (names, files or content), sorted.
    changed: Tuple[str, ...]
    #: Whether a lineage's certificate content changed (files renewed in place): the daemons must
    #: reload even where their configuration text stays the same.
    content_changed: bool
    #: What serves the default name (for clients without SNI) before and after; () for nothing.
    default: Serving
    before_default: Serving
    #: The daemons that have a reload pending from an earlier change.
    pending_reload: FrozenSet[str]
    #: The plan a bulk import in batches is heading to (None: ``after`` is all there is): the map's
    #: tables and Dovecot's memory limit are sized for it from the first batch on, so that neither
    #: grows in steps on the way (a split rebuilds every table; a limit raised late needs a restart).
    goal: Optional[Plan] = None


@dataclass(frozen=True)
class Step(Generic[R]):
    """A daemon's part of a change, prepared: its record after the swap, whether it must reload to
    serve the change, and the live files the swap writes (empty: nothing to swap)."""

    record: R
    reload: bool
    files: FrozenSet[str]
    warnings: Tuple[str, ...] = ()


class Daemon(abc.ABC, Generic[R]):
    """One mail daemon this package configures."""

    #: Its service name, for the service manager and in messages: "postfix" or "dovecot".
    service: ClassVar[str]

    @abc.abstractmethod
    def check_installed(self) -> None:
        """Raise NotInstalledError if its tools or configuration are missing."""

    @abc.abstractmethod
    def is_running(self) -> bool: ...

    @abc.abstractmethod
    def listeners(self) -> List[Listener]:
        """Its TLS listeners, as its own configuration names them."""

    @abc.abstractmethod
    def known_names(self) -> List[str]:
        """Names its configuration already serves (certbot's domain menu)."""

    @abc.abstractmethod
    def check_config(self) -> None:
        """Raise MisconfiguredError if the daemon's own tools refuse its live configuration."""

    def own_name(self) -> str:
        """The host's name as this daemon knows it ("" if it has none): the default name."""
        return ""

    @abc.abstractmethod
    def fresh_record(self) -> R:
        """The record of a daemon this package has not configured yet."""

    @abc.abstractmethod
    def prepare(self, change: Change, record: R, undo: Transaction) -> Step[R]:
        """Render and validate ``change`` beside the live files (``record``: as the last change
        left them); register with ``undo`` how to remove what it wrote."""

    @abc.abstractmethod
    def swap(self, step: Step[R], undo: Transaction) -> None:
        """Put the prepared ``step`` live, atomically per file; register with ``undo`` how to put
        back what was live. Called only for a step with files to write."""

    @abc.abstractmethod
    def keep(self, directory: str, record: R) -> None:
        """Keep in ``directory`` what is live now (``record``: as the state has it), for put_back:
        hard links where it can (live files are only ever replaced by rename)."""

    @abc.abstractmethod
    def put_back(self, directory: str) -> None:
        """Make live again what keep() kept in ``directory``."""

    def after_restore(self) -> None:
        """After certbot's reverter put files back: rebuild what derives from them."""
