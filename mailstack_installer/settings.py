"""Where the mail stack lives and how to reload it: one frozen value resolved from options.

Options given now win over the ones persisted at the last deployment, which win over the defaults;
so the deploy hook, run from cron with no options, uses what the lineage was deployed with.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

from .constants import CLI_DEFAULTS, DOVECOT_DROPIN, MAP_BASENAME, MAP_SUFFIXES, SERVICES
from .errors import InputError
from .names import check_path, is_wildcard, normalize_name

#: The option names shared by ``--mailstack-<name>`` and ``certbot-mailstack --<name>``.
OPTION_NAMES: Tuple[str, ...] = (
    "postfix-dir",
    "postfix-map",
    "postfix-map-type",
    "postfix-map-tables",
    "dovecot-dir",
    "dovecot-config",
    "dovecot-syntax",
    "default-name",
    "service-manager",
    "services",
    "reload-command",
    "s6-scandir",
)

OPTION_HELP: Dict[str, str] = {
    "postfix-dir": "Postfix configuration directory (default: /etc/postfix)",
    "postfix-map": "SNI map source file; the compiled map sits beside it "
    "(default: <postfix-dir>/tls_server_sni_maps)",
    "postfix-map-type": "Postfix table type: hash, btree, lmdb, cdb, or auto = the type "
    "tls_server_sni_maps already uses, else default_database_type (default: auto)",
    "postfix-map-tables": "how many tables the SNI map is split into, so that one deployment copies "
    "and edits a small one: auto = one up to 1,024 names, then a power of two with about 512 names "
    "each (never fewer than before), or a power of two (default: auto)",
    "dovecot-dir": "Dovecot configuration directory holding dovecot.conf (default: /etc/dovecot)",
    "dovecot-config": "the one file this plugin owns in Dovecot's configuration "
    "(default: <dovecot-dir>/conf.d/99-mailstack-sni.conf)",
    "dovecot-syntax": "Dovecot configuration syntax: 2.3 (ssl_cert = <file, first match wins), 2.4 "
    "(ssl_server_cert_file = file, last match wins), or auto = from dovecot --version (default: auto)",
    "default-name": "the name whose lineage becomes the default certificate, served to clients that "
    "send no SNI (Postfix smtpd_tls_chain_files, Dovecot top-level ssl_cert); auto = Postfix's "
    "myhostname, none = leave the daemons' defaults alone (default: auto)",
    "service-manager": "how to reload: systemd, openrc, runit, s6, sysvinit, native, command "
    "(runs --reload-command), another registered backend, or auto (default: auto)",
    "services": "comma list of the daemons to manage (default: postfix,dovecot)",
    "reload-command": "with --service-manager command: the command line that reloads one daemon, "
    "{service} replaced by postfix or dovecot; split like a shell would, run without one",
    "s6-scandir": "s6 scan directory holding the daemons' service directories "
    "(default: auto = the first of /run/service, /var/run/s6/services, /service that has them)",
}


@dataclass(frozen=True)
class Settings:
    postfix_dir: str
    postfix_map: str
    postfix_map_type: str
    dovecot_dir: str
    dovecot_config: str
    service_manager: str
    services: Tuple[str, ...]
    reload_command: str = ""  # only read by the ``command`` backend
    s6_scandir: str = ""  # "" = look in the known scan directories
    dovecot_syntax: str = "auto"
    #: Whose lineage is the default certificate: "" = Postfix's myhostname, "none" = nobody's.
    default_name: str = ""
    #: How many tables the Postfix map is split into: 0 = by its size (postfix.mapfile.tables_for).
    postfix_map_tables: int = 0

    @property
    def dovecot_conf(self) -> str:
        return os.path.join(self.dovecot_dir, "dovecot.conf")

    def uses(self, service: str) -> bool:
        return service in self.services


def merge_options(persisted: Mapping[str, str], given: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """The explicit options in force: persisted ones, overridden by those given now."""
    merged = {k: v for k, v in persisted.items() if k in OPTION_NAMES}
    merged.update({k: v for k, v in given.items() if k in OPTION_NAMES and v is not None})
    return merged


def _path(options: Mapping[str, str], name: str, default: str) -> str:
    value = os.path.normpath(options.get(name) or default)
    try:
        return check_path(value)
    except InputError as exc:
        raise InputError(f"--{name}: {exc}") from None


def _check_reload_command(command: str, services: Sequence[str]) -> None:
    """Refuse, before anything changes, a command the ``command`` backend could not run right.

    The same template is run once per daemon, so without ``{service}`` it could not tell Postfix
    from Dovecot; that is only allowed when one daemon is managed.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"--reload-command {command!r}: {exc}") from None
    if not argv:
        raise InputError(
            "--service-manager command needs --reload-command: the command line that reloads one "
            "daemon, with {service} where postfix or dovecot goes"
        )
    if len(services) > 1 and not any("{service}" in arg for arg in argv):
        raise InputError(
            f"--reload-command {command!r} has no {{service}}: it would run the same command for "
            "postfix and dovecot; add {service} or manage one daemon with --services"
        )


def resolve(options: Mapping[str, str]) -> Settings:
    """Fill defaults (derived paths follow their directory) and check every value."""
    postfix_dir = _path(options, "postfix-dir", CLI_DEFAULTS["postfix-dir"])
    dovecot_dir = _path(options, "dovecot-dir", CLI_DEFAULTS["dovecot-dir"])
    map_type = options.get("postfix-map-type") or CLI_DEFAULTS["postfix-map-type"]
    if map_type != "auto" and map_type not in MAP_SUFFIXES:
        raise InputError(f"--postfix-map-type {map_type!r} is not one of auto, {', '.join(MAP_SUFFIXES)}")
    raw_services = options.get("services") or CLI_DEFAULTS["services"]
    services = tuple(s.strip() for s in raw_services.split(",") if s.strip())
    unknown = [s for s in services if s not in SERVICES]
    if unknown or not services:
        raise InputError(f"--services {raw_services!r}: give a comma list of {', '.join(SERVICES)}")
    service_manager = options.get("service-manager") or CLI_DEFAULTS["service-manager"]
    reload_command = options.get("reload-command") or ""
    if service_manager == "command":  # other backends ignore it, so switching back needs no retyping
        _check_reload_command(reload_command, services)
    s6_scandir = options.get("s6-scandir") or "auto"
    dovecot_syntax = options.get("dovecot-syntax") or "auto"
    if dovecot_syntax not in ("auto", "2.3", "2.4"):
        raise InputError(f"--dovecot-syntax {dovecot_syntax!r} is not one of auto, 2.3, 2.4")
    return Settings(
        postfix_dir=postfix_dir,
        postfix_map=_path(options, "postfix-map", os.path.join(postfix_dir, MAP_BASENAME)),
        postfix_map_type=map_type,
        dovecot_dir=dovecot_dir,
        dovecot_config=_path(options, "dovecot-config", os.path.join(dovecot_dir, DOVECOT_DROPIN)),
        service_manager=service_manager,
        services=services,
        reload_command=reload_command,
        s6_scandir="" if s6_scandir == "auto" else _path(options, "s6-scandir", s6_scandir),
        dovecot_syntax=dovecot_syntax,
        default_name=_default_name(options.get("default-name") or "auto"),
        postfix_map_tables=_map_tables(options.get("postfix-map-tables") or "auto"),
    )


def _map_tables(raw: str) -> int:
    """``auto`` -> 0, else a power of two from 1 to 1024."""
    if raw == "auto":
        return 0
    count = int(raw) if raw.isdigit() else 0
    if not 1 <= count <= 1024 or count & (count - 1):
        raise InputError(f"--postfix-map-tables {raw!r} is not auto or a power of two from 1 to 1024")
    return count


def _default_name(raw: str) -> str:
    """``auto`` -> "", ``none`` -> "none", else the name normalized (a client without SNI asks for
    no name, so a wildcard cannot stand for one)."""
    if raw in ("auto", "none"):
        return "" if raw == "auto" else raw
    try:
        name = normalize_name(raw)
    except InputError as exc:
        raise InputError(f"--default-name: {exc}") from None
    if is_wildcard(name):
        raise InputError(f"--default-name {raw!r}: give one host name, not a wildcard (or auto, none)")
    return name
