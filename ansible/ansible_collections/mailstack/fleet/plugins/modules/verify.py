#!/usr/bin/python
"""Ansible module mailstack.fleet.verify: what a mail node serves, by TLS handshakes with SNI.

It runs ``certbot-mailstack verify --json`` on the node and fails, naming each name and port that
serves the wrong certificate or nothing, when any check fails. It changes nothing.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: verify
short_description: Check by TLS handshakes that every name gets its own certificate on every mail port
description:
  - Runs C(certbot-mailstack verify --json) on the node: per mapped name and mail port, a handshake
    with SNI; the served leaf must be the lineage's, its chain must verify and it must cover the name.
  - Fails when any check fails; never changes anything (check mode runs it as well).
options:
  names:
    description: The names to check (default, empty, every mapped name).
    type: list
    elements: str
    default: []
  host:
    description: The address to connect to.
    type: str
    default: 127.0.0.1
  ports:
    description: Comma list of service=port (default all seven mail ports on their usual numbers).
    type: str
  ca_file:
    description: PEM file of trusted roots on the node for the chain check (default the system's).
    type: path
  expiry_days:
    description: A certificate expiring within this many days is a problem.
    type: int
    default: 14
  config_dir:
    description: The certbot config dir on the node that holds certbot-mailstack's state.
    type: path
    default: /etc/letsencrypt
  executable:
    description: The certbot-mailstack command.
    type: str
    default: certbot-mailstack
"""

RETURN = r"""
served:
  description: Per check, C(name), C(service), C(port), C(status) and the C(served) leaf's SHA-256.
  type: list
  returned: when certbot-mailstack ran
summary:
  description: Counts of checks per status.
  type: dict
  returned: when certbot-mailstack ran
"""

import json

from ansible.module_utils.basic import AnsibleModule

FAILED = ("problem", "error")


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "default": []},
            "host": {"type": "str", "default": "127.0.0.1"},
            "ports": {"type": "str"},
            "ca_file": {"type": "path"},
            "expiry_days": {"type": "int", "default": 14},
            "config_dir": {"type": "path", "default": "/etc/letsencrypt"},
            "executable": {"type": "str", "default": "certbot-mailstack"},
        },
        supports_check_mode=True,
    )
    params = module.params
    args = [params["executable"], "verify", "--json", "--config-dir", params["config_dir"],
            "--host", params["host"], "--expiry-days", str(params["expiry_days"])]  # fmt: skip
    if params["ports"]:
        args += ["--ports", params["ports"]]
    if params["ca_file"]:
        args += ["--ca-file", params["ca_file"]]
    rc, out, err = module.run_command([*args, *params["names"]])
    try:
        doc = json.loads(out)
    except ValueError:
        module.fail_json(msg=err.strip() or f"certbot-mailstack verify exited {rc}")
    served = [
        {"name": c["name"], "service": c["service"], "port": c["port"], "status": c["status"],
         "served": c.get("served"), "problems": c["problems"]}
        for c in doc["checks"]
    ]  # fmt: skip
    result = {"changed": False, "served": served, "summary": doc["summary"]}
    if rc != 0:
        bad = [f"{c['name']} {c['service']}/{c['port']}: {', '.join(c['problems']) or c['status']}"
               for c in served if c["status"] in FAILED]  # fmt: skip
        bad += [
            f"no SNI {p['service']}/{p['port']}: {p['detail']}" for p in doc["ports"] if p["status"] in FAILED
        ]
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        module.fail_json(msg=f"{len(bad)} check(s) failed: {shown or err.strip()}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
