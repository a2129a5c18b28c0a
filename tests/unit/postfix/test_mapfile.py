"""postfix/mapfile.py: the SNI map source, rendered from a plan."""

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
