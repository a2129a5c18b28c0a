"""Where the mail stack lives and how to reload it: one frozen value resolved from options.

Options given now win over the ones persisted at the last deployment, which win over the defaults;
so the deploy hook, run from cron with no options, uses what the lineage was deployed with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from .constants import CLI_DEFAULTS, DOVECOT_DROPIN, MAP_BASENAME, MAP_SUFFIXES, SERVICES
from .errors import InputError
from .names import check_path

#: The option names shared by ``--mailstack-<name>`` and ``certbot-mailstack --<name>``.
OPTION_NAMES: Tuple[str, ...] = (
    "postfix-dir",
    "postfix-map",
    "postfix-map-type",
    "dovecot-dir",
    "dovecot-config",
    "service-manager",
    "services",
)

OPTION_HELP: Dict[str, str] = {
    "postfix-dir": "Postfix configuration directory (default: /etc/postfix)",
    "postfix-map": "SNI map source file; the compiled map sits beside it "
    "(default: <postfix-dir>/tls_server_sni_maps)",
    "postfix-map-type": "Postfix table type: hash, btree, lmdb, cdb, or auto = the type "
    "tls_server_sni_maps already uses, else default_database_type (default: auto)",
    "dovecot-dir": "Dovecot configuration directory holding dovecot.conf (default: /etc/dovecot)",
    "dovecot-config": "the one file this plugin owns in Dovecot's configuration "
    "(default: <dovecot-dir>/conf.d/99-mailstack-sni.conf)",
    "service-manager": "how to reload: systemd, openrc, sysvinit, native, another registered "
    "backend, or auto (default: auto)",
    "services": "comma list of the daemons to manage (default: postfix,dovecot)",
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
    return Settings(
        postfix_dir=postfix_dir,
        postfix_map=_path(options, "postfix-map", os.path.join(postfix_dir, MAP_BASENAME)),
        postfix_map_type=map_type,
        dovecot_dir=dovecot_dir,
        dovecot_config=_path(options, "dovecot-config", os.path.join(dovecot_dir, DOVECOT_DROPIN)),
        service_manager=options.get("service-manager") or CLI_DEFAULTS["service-manager"],
        services=services,
    )
