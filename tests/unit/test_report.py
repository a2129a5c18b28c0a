"""report: what a deployment does to each lineage, and the JSON and text a dry run prints."""

from __future__ import annotations

import json

from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.report import (
    ADD,
    FAILED,
    UNCHANGED,
    UPDATE,
    DaemonResult,
    Report,
    action_of,
    lineage_results,
    render_json,
    render_text,
)

LIVE = "/etc/letsencrypt/live"


def lineage(name: str, digest: str = "d1", key_type: str = "ec", names: tuple = ()) -> Lineage:  # type: ignore[type-arg]
    files = CertFiles(f"{LIVE}/{name}/privkey.pem", f"{LIVE}/{name}/fullchain.pem")
    return Lineage(files, names or (f"mail.{name}",), digest, key_type)


def test_a_lineage_is_added_updated_or_left_as_it_is() -> None:
    before = Plan({lin.id: lin for lin in [lineage("a.test"), lineage("b.test")]})
    assert action_of(before, lineage("c.test")) == ADD
    assert action_of(before, lineage("a.test")) == UNCHANGED
    assert action_of(before, lineage("a.test", digest="d2")) == UPDATE  # renewed in place
    assert action_of(before, lineage("a.test", names=("mail.a.test", "imap.a.test"))) == UPDATE
    assert action_of(before, lineage("b.test", key_type="")) == UNCHANGED  # an old state's lineage


def test_each_lineage_dir_gets_one_result_in_the_order_given() -> None:
    before = Plan({lineage("a.test").id: lineage("a.test")})
    deployed = {lin.id: lin for lin in [lineage("a.test"), lineage("b.test")]}
    dirs = [f"{LIVE}/b.test", f"{LIVE}/bad.test", f"{LIVE}/a.test/"]
    results = lineage_results(dirs, deployed, before, [(f"{LIVE}/bad.test", "no privkey.pem")])
    assert [(r.action, r.names, r.error) for r in results] == [
        (ADD, ("mail.b.test",), ""),
        (FAILED, (), "no privkey.pem"),
        (UNCHANGED, ("mail.a.test",), ""),
    ]


def test_the_json_document_carries_changed_and_every_part() -> None:
    report = Report(
        dry_run=True,
        lineages=lineage_results(
            [f"{LIVE}/a.test", f"{LIVE}/x"],
            {lineage("a.test").id: lineage("a.test")},
            Plan(),
            [(f"{LIVE}/x", "bad")],
        ),
        unmapped=[f"{LIVE}/gone.test"],
        daemons=[DaemonResult("postfix", True, True), DaemonResult("dovecot", False, True)],
        changed=True,
    )
    doc = json.loads(render_json(report))
    assert doc["changed"] is True and doc["dry_run"] is True and doc["exit_code"] == 1
    assert doc["summary"] == {"add": 1, "update": 0, "unchanged": 0, "failed": 1}
    assert doc["lineages"][0] == {"lineage": "a.test", "path": f"{LIVE}/a.test", "action": "add",
                                  "names": ["mail.a.test"]}  # fmt: skip
    assert doc["lineages"][1]["error"] == "bad"
    assert doc["daemons"][1] == {"service": "dovecot", "running": False, "reload": True}
    text = render_text(report)
    assert "add       a.test: mail.a.test" in text and "dovecot: NOT running; would reload" in text
    assert text.endswith("1 failed, 1 to unmap; the served configuration would change\n")


def test_a_dry_run_with_nothing_to_do_says_so() -> None:
    report = Report(dry_run=True, daemons=[DaemonResult("postfix", True, False)])
    assert render_text(report).endswith("nothing would change\n")
    assert report.exit_code() == 0
