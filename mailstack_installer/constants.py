"""Defaults shared by the certbot plugin and the ``certbot-mailstack`` command."""

from typing import Dict, Tuple

DEFAULT_CONFIG_DIR = "/etc/letsencrypt"

#: Option name (without the ``mailstack-`` prefix) -> default. ``None`` means "derived" (see settings.py).
CLI_DEFAULTS: Dict[str, str] = {
    "postfix-dir": "/etc/postfix",
    "postfix-map-type": "auto",
    "dovecot-dir": "/etc/dovecot",
    "service-manager": "auto",
    "services": "postfix,dovecot",
}

MAP_BASENAME = "tls_server_sni_maps"
DOVECOT_DROPIN = "conf.d/99-mailstack-sni.conf"

#: Postfix table types that ``postmap -F`` can build, and the suffix of the file each one writes.
MAP_SUFFIXES: Dict[str, str] = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}

SERVICES: Tuple[str, ...] = ("postfix", "dovecot")

#: Where this package keeps its state, relative to certbot's config dir.
STATE_DIRNAME = "mailstack"
HOOK_NAME = "mailstack"

HEADER = "Managed by certbot-mailstack: do not edit, it is rewritten on every deployment."
