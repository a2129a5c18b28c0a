"""Reload step: tell the daemons to re-read their configuration through the host's service manager.

Backends are looked up by name: the built-in ones below, plus any a third party registers in the
entry-point group ``mailstack_installer.service_managers`` (a ``ServiceManager`` subclass, which is
constructed with ``Settings``). Each backend only says which command reloads a daemon; ``runner``
runs it. ``auto`` picks one by looking at the host through ``Host``, which tests point at a fake root.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type

from . import runner
from .constants import CLI_DEFAULTS
from .errors import CommandError, InputError, MisconfiguredError, NotInstalledError, ServiceError
from .settings import Settings

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mailstack_installer.service_managers"

#: Where runit keeps the supervised services (``sv`` finds them itself): Void, Artix, Debian, and
#: the daemontools tradition. Detection only uses them to see that runit supervises the daemons.
RUNIT_SERVICE_DIRS: Tuple[str, ...] = ("/var/service", "/run/runit/service", "/etc/service", "/service")

#: s6-svscan's scan directory: s6-linux-init and s6-overlay 3 (Artix, containers), s6-overlay 2,
#: and the daemontools tradition; ``--s6-scandir`` names another.
S6_SCANDIRS: Tuple[str, ...] = ("/run/service", "/var/run/s6/services", "/service")


@dataclass(frozen=True)
class Host:
    """The host as detection and the s6 backend see it: every path is looked up under ``root``.

    Paths handed out (in a command line, say) stay host-absolute, so a test that builds a fake root
    in a temp dir gets the same argv as the real host would.
    """

    root: str = "/"

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.real(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(self.real(path))

    def which(self, program: str) -> Optional[str]:
        """``program`` in the directories ``runner`` would search (sbin included), under the root."""
        if self.root == "/":
            return runner.which(program)
        dirs = [self.real(d) for d in runner.search_path().split(os.pathsep) if d]
        return shutil.which(program, path=os.pathsep.join(dirs))

    def init_name(self) -> str:
        """The name of process 1 (``runit``, ``s6-svscan``, ``systemd``), or "" if unreadable."""
        try:
            with open(self.real("/proc/1/comm"), encoding="utf-8", errors="replace") as handle:
                return handle.read().strip()
        except OSError:
            return ""

    def service_dir(self, bases: Sequence[str], names: Sequence[str]) -> Optional[str]:
        """The first ``base/name`` directory (a symlink to one counts), host-absolute, or None."""
        for base in bases:
            for name in names:
                path = os.path.join(base, name)
                if self.isdir(path):
                    return path
        return None


class ServiceManager(ABC):
    """Reloads ``postfix`` or ``dovecot``; subclasses only say which command does it."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = Host()  # for_settings() replaces it with the host detection looked at

    @abstractmethod
    def reload_argv(self, service: str) -> List[str]:
        """The command that reloads ``service`` ("postfix" or "dovecot")."""

    def reload(self, service: str) -> None:
        runner.run(self.reload_argv(service))

    def restart_argv(self, service: str) -> List[str]:
        """The command that restarts ``service``: the reload command with its verb replaced
        (``reload`` -> ``restart``); backends whose reload says it otherwise override this."""
        argv = self.reload_argv(service)
        if "reload" not in argv:
            raise MisconfiguredError(
                f"the {self.name} service manager cannot restart {service}: restart it by hand"
            )
        return ["restart" if arg == "reload" else arg for arg in argv]

    def restart(self, service: str) -> None:
        runner.run(self.restart_argv(service))


def postfix_reload(settings: Settings) -> List[str]:
    """``postfix reload`` signals the master through its pid file, however the master was started.

    Supervisors cannot be relied on for that: with the common run script ``exec postfix start-fg``
    the supervised process is postfix-script (Postfix execs the master as its child unless it is
    PID 1), and postfix-script ignores SIGHUP, so ``sv reload postfix`` or ``s6-svc -h`` reports
    success and reloads nothing (checked on Postfix 3.7.11).
    """
    return ["postfix", "-c", settings.postfix_dir, "reload"]


class Systemd(ServiceManager):
    name = "systemd"

    def reload_argv(self, service: str) -> List[str]:
        # On Debian postfix.service propagates the reload to the real unit, postfix@-.service.
        return ["systemctl", "reload", f"{service}.service"]


class OpenRC(ServiceManager):
    name = "openrc"

    def reload_argv(self, service: str) -> List[str]:
        return ["rc-service", service, "reload"]


class Runit(ServiceManager):
    """runit (Void, Artix): ``sv reload`` sends SIGHUP to the supervised ``dovecot -F``.

    ``sv`` finds the service directory itself (its default differs per distribution: /var/service
    on Void, /run/runit/service on Artix). Postfix goes through ``postfix_reload``.
    """

    name = "runit"

    def reload_argv(self, service: str) -> List[str]:
        if service == "postfix":
            return postfix_reload(self.settings)
        return ["sv", "reload", service]


class S6(ServiceManager):
    """s6 and s6-rc: ``s6-svc -h`` sends SIGHUP to the supervised ``dovecot -F``, which reloads.

    s6-rc has no reload verb of its own; its longruns are plain service directories linked into
    the scan directory, under the daemon's name or (Artix) ``<name>-srv``. Postfix goes through
    ``postfix_reload``.
    """

    name = "s6"

    def reload_argv(self, service: str) -> List[str]:
        if service == "postfix":
            return postfix_reload(self.settings)
        scandirs = s6_scandirs(self.settings)
        path = self.host.service_dir(scandirs, s6_names(service))
        if path is None:
            raise MisconfiguredError(
                f"no s6 service directory {service} or {service}-srv in {', '.join(scandirs)}: "
                "give the scan directory with --s6-scandir, or choose another --service-manager"
            )
        return ["s6-svc", "-h", path]

    def restart_argv(self, service: str) -> List[str]:
        # -r: SIGTERM; the supervisor starts it again.
        return ["s6-svc", "-r", self.reload_argv(service)[-1]]


def s6_scandirs(settings: Settings) -> Tuple[str, ...]:
    """The scan directory given with ``--s6-scandir``, else the known ones, most common first."""
    return (settings.s6_scandir,) if settings.s6_scandir else S6_SCANDIRS


def s6_names(service: str) -> Tuple[str, str]:
    """Service directory names: plain, or Artix's ``-srv`` suffix for s6-rc longruns."""
    return (service, f"{service}-srv")


class SysVinit(ServiceManager):
    name = "sysvinit"

    def reload_argv(self, service: str) -> List[str]:
        return ["service", service, "reload"]


class Native(ServiceManager):
    """The daemons' own commands: work under any init system and for any config dir."""

    name = "native"

    def reload_argv(self, service: str) -> List[str]:
        if service == "postfix":
            return postfix_reload(self.settings)
        return ["doveadm", "-c", self.settings.dovecot_conf, "reload"]

    #: How long a stopped Dovecot master may take to exit before the new one is started.
    STOP_TIMEOUT = 60.0

    def restart(self, service: str) -> None:
        """Dovecot has no restart command of its own: stop the master, then start it. ``doveadm
        stop`` may return while the master is still exiting (seen: up to 5 s on Dovecot 2.3.19),
        and ``dovecot`` then refuses to start ("already running"): tried again until it is gone."""
        if service != "dovecot":
            super().restart(service)
            return
        conf = self.settings.dovecot_conf
        runner.run(["doveadm", "-c", conf, "stop"])
        deadline = time.monotonic() + self.STOP_TIMEOUT
        while True:
            started = runner.run(["dovecot", "-c", conf], daemonizes=True, check=False)
            if started.returncode == 0:
                return
            if "already running" not in started.stdout or time.monotonic() > deadline:
                detail = runner.last_line(started.stdout) or "no error output"
                raise CommandError(f"dovecot -c {conf} failed (exit {started.returncode}): {detail}")
            time.sleep(0.5)


class Command(ServiceManager):
    """The administrator's own command line, for hosts none of the others fit.

    It is split like a shell would split it and ``{service}`` is replaced inside each argument
    afterwards, so a daemon's name can never become shell syntax; no shell ever runs it.
    ``settings.resolve`` has already refused a missing command or one that cannot tell the
    daemons apart.
    """

    name = "command"

    def reload_argv(self, service: str) -> List[str]:
        try:
            argv = shlex.split(self.settings.reload_command)
        except ValueError as exc:
            raise InputError(f"--reload-command {self.settings.reload_command!r}: {exc}") from None
        if not argv:
            raise InputError("--service-manager command needs --reload-command")
        return [arg.replace("{service}", service) for arg in argv]


BUILTIN: Dict[str, Type[ServiceManager]] = {
    cls.name: cls for cls in (Systemd, OpenRC, Runit, S6, SysVinit, Native, Command)
}


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
            loaded = point.load()
        except Exception as exc:  # a broken third-party backend must not break the others
            logger.warning("service manager %s could not be loaded: %s", point.name, exc)
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, ServiceManager)):
            logger.warning(
                "service manager %s (%s) is not a ServiceManager subclass: ignored", point.name, point.value
            )
            continue
        found[point.name] = loaded
    found.update(BUILTIN)
    return found


def _supervised(host: Host, bases: Sequence[str], settings: Settings, *, s6: bool = False) -> bool:
    """Whether every managed daemon has a service directory in one of ``bases``."""
    return all(
        host.service_dir(bases, s6_names(service) if s6 else (service,)) is not None
        for service in settings.services
    )


def detect(settings: Settings, host: Optional[Host] = None) -> str:
    """The backend for this host: the init system's for the default instances, else native.

    A supervision suite (runit, s6) is chosen only when it supervises every managed daemon, so a
    runit or s6 merely installed beside another init system is not mistaken for the one in charge.
    Anything unrecognised gets ``native``, which works everywhere.
    """
    host = host or Host()
    default_dirs = (
        settings.postfix_dir == CLI_DEFAULTS["postfix-dir"]
        and settings.dovecot_dir == CLI_DEFAULTS["dovecot-dir"]
    )
    if not default_dirs:
        return Native.name  # an init script would reload the system instance, not this one
    if host.isdir("/run/systemd/system") and host.which("systemctl"):
        return Systemd.name
    if host.isdir("/run/openrc") and host.which("rc-service"):
        return OpenRC.name
    runit_runs = host.init_name() == "runit" or host.isdir("/run/runit") or host.isdir("/etc/runit")
    if runit_runs and host.which("sv") and _supervised(host, RUNIT_SERVICE_DIRS, settings):
        return Runit.name
    if host.which("s6-svc") and _supervised(host, s6_scandirs(settings), settings, s6=True):
        return S6.name
    init_scripts = all(host.exists(f"/etc/init.d/{service}") for service in settings.services)
    if host.which("service") and init_scripts:
        return SysVinit.name
    return Native.name


def for_settings(settings: Settings, host: Optional[Host] = None) -> ServiceManager:
    """The backend the settings name (``auto``: the detected one), ready to reload."""
    host = host or Host()
    name = settings.service_manager
    if name == "auto":
        name = detect(settings, host)
    backends = registered()
    if name not in backends:
        raise InputError(
            f"unknown service manager {name!r}: choose one of auto, {', '.join(sorted(backends))}"
        )
    manager = backends[name](settings)
    manager.host = host
    return manager


def reload(manager: ServiceManager, service: str) -> None:
    """Reload ``service``; a failure, or a backend that cannot run (systemctl absent), is a
    ServiceError: the daemon may not serve what its files say."""
    try:
        manager.reload(service)
    except (CommandError, NotInstalledError) as exc:
        raise ServiceError(f"reloading {service} ({manager.name}) failed: {exc}") from None


def restart(manager: ServiceManager, service: str) -> None:
    """Restart ``service``, failing as reload() does."""
    try:
        manager.restart(service)
    except (CommandError, NotInstalledError) as exc:
        raise ServiceError(f"restarting {service} ({manager.name}) failed: {exc}") from None
