"""The renderers are pure: plan in, text out."""

from mailstack_installer.dovecot.dropin import render_dropin
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.postfix.mapfile import render_map


def files(name: str) -> CertFiles:
    return CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")


def plan_of(*lineages: Lineage) -> Plan:
    plan = Plan()
    for lineage in lineages:
        plan = plan.with_lineage(lineage)
    return plan


def test_postfix_map_lists_key_before_fullchain_and_dots_wildcards():
    plan = plan_of(Lineage(files("a"), ("mail.a.test", "*.a.test")))
    lines = [line for line in render_map(plan).splitlines() if not line.startswith("#")]
    assert lines == [
        "mail.a.test /le/live/a/privkey.pem /le/live/a/fullchain.pem",
        ".a.test /le/live/a/privkey.pem /le/live/a/fullchain.pem",
    ]


def test_dovecot_block_per_lineage_with_exact_names_before_any_wildcard():
    plan = plan_of(
        Lineage(files("w"), ("*.b.test",)),
        Lineage(files("a"), ("a.test", "mail.a.test", "*.a.test")),
        Lineage(files("b"), ("x.b.test",)),
    )
    text = render_dropin(plan)
    heads = [line for line in text.splitlines() if line.startswith("local_name")]
    assert heads == [
        'local_name "a.test mail.a.test" {',
        'local_name "x.b.test" {',
        'local_name "*.a.test" {',
        'local_name "*.b.test" {',
    ]
    assert "  ssl_cert = </le/live/a/fullchain.pem\n  ssl_key = </le/live/a/privkey.pem\n" in text
    assert "cert.pem" not in text.replace("fullchain.pem", "")


def test_name_moves_to_the_lineage_that_claims_it_last():
    plan = plan_of(Lineage(files("old"), ("mail.a.test", "a.test")), Lineage(files("new"), ("mail.a.test",)))
    assert plan.lineages["/le/live/old"].names == ("a.test",)
    assert plan.lineages["/le/live/new"].names == ("mail.a.test",)
    assert render_map(plan).count("mail.a.test") == 1


def test_lineage_left_without_names_disappears():
    plan = plan_of(Lineage(files("old"), ("mail.a.test",)), Lineage(files("new"), ("mail.a.test",)))
    assert list(plan.lineages) == ["/le/live/new"]


def test_empty_plan_renders_only_headers():
    assert [line for line in render_map(Plan()).splitlines() if not line.startswith("#")] == []
    assert "local_name" not in render_dropin(Plan())
