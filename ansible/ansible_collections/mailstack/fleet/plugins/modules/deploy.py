#!/usr/bin/python
"""Ansible module mailstack.fleet.deploy: put lineages on a mail node and deploy them there.

It writes each lineage's files as certbot's ``live/<name>/`` would hold them (the key 0600 root)
and runs ``certbot-mailstack deploy --json --require-running`` for them. If that fails, the files
it replaced are put back, so the node keeps serving, and keeps on disk, what it had before.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy
short_description: Deploy certificate lineages to Postfix and Dovecot on a mail node, per SNI name
description:
  - Writes each lineage given to C(<config_dir>/live/<name>/fullchain.pem) (0644) and
    C(privkey.pem) (0600, root), then runs C(certbot-mailstack deploy --json --require-running)
    for them. Changed only when what Postfix or Dovecot serve changes (or, in check mode, would).
  - A failure (a daemon not running, a lineage that fails its checks, a reload that does not
    serve) puts back the lineage files it replaced; the daemons keep their previous configuration
    (certbot-mailstack rolls its own changes back).
  - Check mode writes nothing and runs C(certbot-mailstack deploy --dry-run --json).
options:
  lineages:
    description: The lineages to deploy; the private keys are never logged (no_log).
    type: list
    elements: dict
    required: true
    suboptions:
      name: {description: "The lineage name (certbot's cert name): live/<name>", type: str, required: true}
      fullchain: {description: Contents of fullchain.pem, type: str, required: true}
      privkey: {description: Contents of privkey.pem, type: str, required: true}
  config_dir:
    description: The certbot config dir on the node that holds the lineages and certbot-mailstack's state.
    type: path
    default: /etc/letsencrypt
  require_running:
    description: Fail, changing nothing, while Postfix or Dovecot is not running.
    type: bool
    default: true
  options:
    description: certbot-mailstack options without the leading dashes, e.g. C({postfix-map-type: lmdb}).
    type: dict
    default: {}
  executable:
    description: The certbot-mailstack command.
    type: str
    default: certbot-mailstack
"""

EXAMPLES = r"""
- name: Deploy the lineages to this node
  mailstack.fleet.deploy:
    lineages: "{{ query('mailstack.fleet.lineages', 'domain1.com', 'domain2.com') }}"
"""

RETURN = r"""
deploy:
  description: certbot-mailstack's deploy report (schema certbot-mailstack/deploy, docs/user-guide.md).
  type: dict
  returned: when certbot-mailstack ran
files_changed:
  description: Names of the lineages whose files were (in check mode, would be) written.
  type: list
  returned: always
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

KEY_MODE, CHAIN_MODE, DIR_MODE = 0o600, 0o644, 0o755


def lineage_dir(config_dir, name):
    """live/<name>, refusing a name that would leave it (certbot-mailstack's own rule)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"lineage name {name!r}: give a certbot cert name, as in live/<name>")
    return os.path.join(config_dir, "live", name)


def read_or_none(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomic(path, data, mode):
    """Write ``data`` to a temp file made with ``mode`` beside ``path`` and rename it over: a reader
    sees the old file or the new one, and a key is never readable by others, not even briefly."""
    fd, temp = tempfile.mkstemp(prefix=".mailstack-", dir=os.path.dirname(path))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


class Files:
    """The lineage files one run writes, and what to put back if the deployment fails."""

    def __init__(self, config_dir):
        self.config_dir = config_dir
        self.undo = []  # (lineage name, path, old bytes or None, mode)
        self.made_dirs = []  # (lineage name, dir)

    def differing(self, lineage):
        """The (path, bytes, mode) of ``lineage`` that differ from the node's files."""
        directory = lineage_dir(self.config_dir, lineage["name"])
        wanted = [
            (os.path.join(directory, "fullchain.pem"), lineage["fullchain"].encode(), CHAIN_MODE),
            (os.path.join(directory, "privkey.pem"), lineage["privkey"].encode(), KEY_MODE),
        ]
        for path, _data, _mode in wanted:
            if os.path.islink(path):
                raise ValueError(f"{path} is a symlink: this node's own certbot manages {lineage['name']}")
        return [(path, data, mode) for path, data, mode in wanted if read_or_none(path) != data
                or (os.stat(path).st_mode & 0o777) != mode]  # fmt: skip

    def write(self, name, path, data, mode):
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=DIR_MODE)
            self.made_dirs.append((name, directory))
        self.undo.append((name, path, read_or_none(path), mode))
        write_atomic(path, data, mode)

    def put_back(self, names=None):
        """Restore the files of the lineages ``names`` (None: all) as they were before the run."""
        for name, path, old, mode in reversed(self.undo):
            if names is None or name in names:
                if old is None:
                    os.unlink(path)
                else:
                    write_atomic(path, old, mode)
        for name, directory in reversed(self.made_dirs):
            if names is None or name in names:
                os.rmdir(directory)


def mailstack(module, args):
    """Run certbot-mailstack; (exit code, its JSON document or None, its error line)."""
    rc, out, err = module.run_command([module.params["executable"], *args])
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    error = " ".join(line for line in err.splitlines() if "WARNING" not in line).strip()
    return rc, doc, error


def cert_names(names):
    return [arg for name in names for arg in ("--cert-name", name)]


def failure_message(rc, doc, error):
    if doc is not None and doc.get("summary", {}).get("failed"):
        failed = [
            f"{e['lineage']}: {e.get('error', 'failed')}" for e in doc["lineages"] if e["action"] == "failed"
        ]
        return "certbot-mailstack deploy: " + "; ".join(failed)
    return error or f"certbot-mailstack deploy exited {rc}"


def main():
    module = AnsibleModule(
        argument_spec={
            "lineages": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "fullchain": {"type": "str", "required": True},
                    "privkey": {"type": "str", "required": True, "no_log": True},
                },
            },
            "config_dir": {"type": "path", "default": "/etc/letsencrypt"},
            "require_running": {"type": "bool", "default": True},
            "options": {"type": "dict", "default": {}},
            "executable": {"type": "str", "default": "certbot-mailstack"},
        },
        supports_check_mode=True,
    )
    params = module.params
    files = Files(params["config_dir"])
    try:
        pending = [(lin["name"], files.differing(lin)) for lin in params["lineages"]]
    except (ValueError, OSError) as exc:
        module.fail_json(msg=str(exc), files_changed=[])
    files_changed = [name for name, writes in pending if writes]
    base = ["deploy", "--json", "--config-dir", params["config_dir"]]
    for option, value in sorted(params["options"].items()):
        base += [f"--{option}", str(value)]
    if module.check_mode:
        on_node = [lin["name"] for lin in params["lineages"]
                   if os.path.isdir(lineage_dir(params["config_dir"], lin["name"]))]  # fmt: skip
        doc = None
        if on_node:
            rc, doc, error = mailstack(module, [*base, "--dry-run", *cert_names(on_node)])
            if rc == 2:
                module.fail_json(msg=error, files_changed=files_changed)
            stopped = [d["service"] for d in doc["daemons"] if not d["running"]] if doc else []
            if params["require_running"] and stopped:
                module.fail_json(msg=f"{' and '.join(stopped)} not running", files_changed=files_changed)
        changed = bool(files_changed) or bool(doc and doc["changed"])
        module.exit_json(changed=changed, files_changed=files_changed, deploy=doc)
    try:
        for name, writes in pending:
            for path, data, mode in writes:
                files.write(name, path, data, mode)
    except OSError as exc:
        files.put_back()
        module.fail_json(msg=f"cannot write {exc.filename}: {exc.strerror}", files_changed=[])
    args = [*base, *cert_names(lin["name"] for lin in params["lineages"])]
    if params["require_running"]:
        args.append("--require-running")
    rc, doc, error = mailstack(module, args)
    if rc == 1 and doc is not None:  # the others are deployed: only the failed ones go back
        failed = {e["lineage"] for e in doc["lineages"] if e["action"] == "failed"}
        files.put_back(failed)
        done = [name for name in files_changed if name not in failed]
        module.fail_json(msg=failure_message(rc, doc, error), deploy=doc, files_changed=done,
                         changed=bool(doc["changed"]))  # fmt: skip
    if rc != 0:  # certbot-mailstack changed nothing, or put back what it changed
        files.put_back()
        module.fail_json(msg=failure_message(rc, doc, error), deploy=doc, files_changed=[])
    module.exit_json(
        changed=bool(doc["changed"]) or bool(files_changed), files_changed=files_changed, deploy=doc
    )


if __name__ == "__main__":
    main()
