"""Lookup mailstack.fleet.lineages: certbot's lineages on the control host (the issuer), read into
memory for mailstack.fleet.deploy, which carries them to each node over Ansible's own connection.

Nothing is copied to a temporary file on the control host (ansible.builtin.copy with content= would
write one): the keys stay in certbot's archive and in memory.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: lineages
short_description: Read certbot lineages (fullchain.pem and privkey.pem) on the control host
description:
  - Returns, per lineage name given (none given, every lineage under C(<config_dir>/live)),
    a dict with C(name), C(fullchain) and C(privkey) (the files' contents) for mailstack.fleet.deploy.
  - Use it with query() and only in a module argument whose key is no_log (mailstack.fleet.deploy's is).
options:
  _terms:
    description: Lineage names (certbot cert names); a comma-separated string is split.
  config_dir:
    description: certbot's config dir on the control host.
    type: path
    default: /etc/letsencrypt
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


def _names(terms, live):
    names = [n.strip() for term in terms for n in (term if isinstance(term, list) else str(term).split(","))]
    names = [n for n in names if n]
    if names:
        return names
    try:
        return sorted(e for e in os.listdir(live) if os.path.isdir(os.path.join(live, e)))
    except OSError as exc:
        raise AnsibleLookupError(f"cannot list lineages in {live}: {exc.strerror}") from None


def _read(path):
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnsibleLookupError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        live = os.path.join(self.get_option("config_dir"), "live")
        found = []
        for name in _names(terms, live):
            if "/" in name or name in (".", ".."):
                raise AnsibleLookupError(
                    f"lineage name {name!r}: give a certbot cert name, as in live/<name>"
                )
            directory = os.path.join(live, name)
            found.append({
                "name": name,
                "fullchain": _read(os.path.join(directory, "fullchain.pem")),
                "privkey": _read(os.path.join(directory, "privkey.pem")),
            })  # fmt: skip
        return found
