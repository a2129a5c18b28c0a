"""``deploy --dry-run`` and ``deploy --json``: what configuration management (the Ansible module in
ansible/) reads. Real certbot, Pebble, Postfix and Dovecot: a dry run changes nothing, says what a
deployment would do, and agrees with the deployment that follows; ``changed`` is false on the second
run; ``--require-running`` refuses while a daemon is stopped, before any file changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.lab.certbot import Certbot

from .conftest import Stack, pem_fingerprint
from .test_renew_once import mailstack

pytestmark = pytest.mark.e2e


def tree_digest(*dirs: Path) -> Dict[str, str]:
    """Every file under ``dirs`` by content (the empty lock file aside: runs take it to read the
    state): what a command that changes nothing must leave as it was."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for top in dirs
        for path in sorted(top.rglob("*"))
        if path.is_file()
        and path.name != "lock"
        and not path.name.endswith((".pid", ".log"))
        and "data" not in path.parts
    }


def deploy_json(certbot: Certbot, stack: Stack, *args: str, code: int = 0) -> Dict[str, Any]:
    proc = mailstack(certbot, stack, "deploy", "--json", *args)
    assert proc.returncode == code, proc.stderr
    doc: Dict[str, Any] = json.loads(proc.stdout)
    assert doc["schema"] == "certbot-mailstack/deploy" and doc["exit_code"] == code
    return doc


def actions(doc: Dict[str, Any]) -> Dict[str, str]:
    return {entry["lineage"]: entry["action"] for entry in doc["lineages"]}


def reloads(doc: Dict[str, Any]) -> Dict[str, bool]:
    return {entry["service"]: entry["reload"] for entry in doc["daemons"]}


def test_dry_run_changes_nothing_and_predicts_the_deployment(certbot: Certbot, stack: Stack) -> None:
    for lineage in ("p1.test", "p2.test"):
        certbot.run("certonly", *certbot.webroot_args(), "-d", f"mail.{lineage}", "--cert-name", lineage)
    lineages = ["--cert-name", "p1.test", "--cert-name", "p2.test"]
    watched = (stack.postfix.config_dir, stack.dovecot.config_dir, certbot.config_dir)
    before = tree_digest(*watched)

    plan = deploy_json(certbot, stack, "--dry-run", *lineages)
    assert plan["dry_run"] and plan["changed"]
    assert actions(plan) == {"p1.test": "add", "p2.test": "add"}
    assert plan["lineages"][0]["names"] == ["mail.p1.test"]
    assert reloads(plan) == {"postfix": True, "dovecot": True}
    assert all(entry["running"] for entry in plan["daemons"])
    assert tree_digest(*watched) == before, "a dry run wrote a file"
    assert not (certbot.config_dir / "mailstack").exists()
    text = mailstack(certbot, stack, "deploy", "--dry-run", *lineages)
    assert text.returncode == 0 and "dry run: 2 to add, 0 to update, 0 unchanged" in text.stdout

    done = deploy_json(certbot, stack, "--require-running", *lineages)
    assert not done["dry_run"] and done["changed"]
    assert actions(done) == actions(plan) and reloads(done) == reloads(plan)
    for lineage in ("p1.test", "p2.test"):
        want = pem_fingerprint(certbot.live_dir(lineage) / "cert.pem")
        assert set(stack.served(f"mail.{lineage}").values()) == {want}

    # The second run: nothing would change, nothing changes, nothing reloads.
    again = deploy_json(certbot, stack, "--dry-run", *lineages)
    assert not again["changed"] and actions(again) == {"p1.test": "unchanged", "p2.test": "unchanged"}
    reload_counts = stack.reload_counts()
    same = deploy_json(certbot, stack, *lineages)
    assert not same["changed"] and reloads(same) == {"postfix": False, "dovecot": False}
    assert stack.reload_counts() == reload_counts

    # One lineage renewed behind the plugin's back (no hooks): exactly that one would be updated.
    certbot.run("renew", "--force-renewal", "--cert-name", "p2.test", "--no-directory-hooks")
    renewed = deploy_json(certbot, stack, "--dry-run", *lineages)
    assert renewed["changed"] and actions(renewed) == {"p1.test": "unchanged", "p2.test": "update"}


def test_require_running_refuses_while_dovecot_is_stopped_and_changes_nothing(
    certbot: Certbot, stack: Stack
) -> None:
    certbot.run("certonly", *certbot.webroot_args(), "-d", "mail.q1.test", "--cert-name", "q1.test")
    stack.dovecot.stop()
    watched = (stack.postfix.config_dir, stack.dovecot.config_dir, certbot.config_dir)
    before = tree_digest(*watched)

    plan = deploy_json(certbot, stack, "--dry-run", "--cert-name", "q1.test")
    assert {e["service"]: e["running"] for e in plan["daemons"]} == {"postfix": True, "dovecot": False}

    proc = mailstack(certbot, stack, "deploy", "--json", "--require-running", "--cert-name", "q1.test")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "certbot-mailstack: error: dovecot not running: nothing changed\n"
    assert tree_digest(*watched) == before


def test_a_lineage_that_fails_its_checks_is_reported_as_failed_in_both(
    certbot: Certbot, stack: Stack
) -> None:
    certbot.run("certonly", *certbot.webroot_args(), "-d", "mail.f1.test", "--cert-name", "f1.test")
    lineages = ["--cert-name", "f1.test", "--cert-name", "nosuch"]
    for extra in (["--dry-run"], []):
        doc = deploy_json(certbot, stack, *extra, *lineages, code=1)
        assert actions(doc) == {"f1.test": "add", "nosuch": "failed"}
        (failed,) = [entry for entry in doc["lineages"] if entry["action"] == "failed"]
        assert "nosuch" in failed["error"] and "privkey.pem" in failed["error"]
