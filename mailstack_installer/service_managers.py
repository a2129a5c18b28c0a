"""Reload step: tell the daemons to re-read their configuration through the host's service manager.

Backends are looked up by name: the built-in ones below, plus any a third party registers in the
entry-point group ``mailstack_installer.service_managers`` (a class taking ``Settings``).
"""

from __future__ import annotations

import logging
import os
import sys
from abc import ABC, abstractmethod
from typing import ClassVar, Dict, List, Type

from . import runner
from .constants import CLI_DEFAULTS
from .errors import InputError
from .settings import Settings

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mailstack_installer.service_managers"


class ServiceManager(ABC):
    """Reloads ``postfix`` or ``dovecot``; subclasses only say which command does it."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def reload_argv(self, service: str) -> List[str]:
        """The command that reloads ``service`` ("postfix" or "dovecot")."""

    def reload(self, service: str) -> None:
        runner.run(self.reload_argv(service))


class Systemd(ServiceManager):
    name = "systemd"

    def reload_argv(self, service: str) -> List[str]:
        # On Debian postfix.service propagates the reload to the real unit, postfix@-.service.
        return ["systemctl", "reload", f"{service}.service"]


class OpenRC(ServiceManager):
    name = "openrc"

    def reload_argv(self, service: str) -> List[str]:
        return ["rc-service", service, "reload"]


class SysVinit(ServiceManager):
    name = "sysvinit"

    def reload_argv(self, service: str) -> List[str]:
        return ["service", service, "reload"]


class Native(ServiceManager):
    """The daemons' own commands: work under any init system and for any config dir."""

    name = "native"

    def reload_argv(self, service: str) -> List[str]:
        if service == "postfix":
            return ["postfix", "-c", self.settings.postfix_dir, "reload"]
        return ["doveadm", "-c", self.settings.dovecot_conf, "reload"]


BUILTIN: Dict[str, Type[ServiceManager]] = {cls.name: cls for cls in (Systemd, OpenRC, SysVinit, Native)}


def registered() -> Dict[str, Type[ServiceManager]]:
    """Built-in backends plus those registered through entry points (which may not replace them)."""
    found: Dict[str, Type[ServiceManager]] = {}
    from importlib import metadata

    if sys.version_info >= (3, 10):
        points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    else:  # pragma: no cover - Python 3.9
        points = list(metadata.entry_points().get(ENTRY_POINT_GROUP, []))
    for point in points:
        if point.name in BUILTIN:
            continue
        try:
            found[point.name] = point.load()
        except Exception as exc:  # a broken third-party backend must not break the others
            logger.warning("service manager %s could not be loaded: %s", point.name, exc)
    found.update(BUILTIN)
    return found


def detect(settings: Settings) -> str:
    """The backend for this host: the init system's for the default instances, else native."""
    default_dirs = (
        settings.postfix_dir == CLI_DEFAULTS["postfix-dir"]
        and settings.dovecot_dir == CLI_DEFAULTS["dovecot-dir"]
    )
    if not default_dirs:
        return Native.name  # an init script would reload the system instance, not this one
    if os.path.isdir("/run/systemd/system") and runner.which("systemctl"):
        return Systemd.name
    if os.path.isdir("/run/openrc") and runner.which("rc-service"):
        return OpenRC.name
    if runner.which("service") and os.path.isdir("/etc/init.d"):
        return SysVinit.name
    return Native.name


def for_settings(settings: Settings) -> ServiceManager:
    name = settings.service_manager
    if name == "auto":
        name = detect(settings)
    backends = registered()
    if name not in backends:
        raise InputError(
            f"unknown service manager {name!r}: choose one of auto, {', '.join(sorted(backends))}"
        )
    return backends[name](settings)
