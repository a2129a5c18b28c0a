"""The drop-in edited block by block and the map source edited entry by entry (one deployment at
scale) say what a full rendering does.

Random deployments, renewals and removals over a small set of names, with wildcards, ECDSA + RSA
pairs and a default certificate, each applied to the file the previous step wrote: after every
step the edited drop-in must hold the same head and, in each section, the same blocks as the
drop-in rendered whole for the new plan (the order within a section does not matter to Dovecot),
and the edited map source the same lines as the rendered one (postmap does not care about order).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from mailstack_installer.dovecot import Dovecot
from mailstack_installer.dovecot import daemon as dovecot_module
from mailstack_installer.dovecot import dropin as dropin_module
from mailstack_installer.dovecot.dropin import render_dropin
from mailstack_installer.fsutil import text_digest
from mailstack_installer.model import CertFiles, Lineage, Plan, slots
from mailstack_installer.pipeline import default_files
from mailstack_installer.postfix.mapfile import Layout, edit_source, render_tables, table_edits
from mailstack_installer.settings import resolve

NAMES = ["mail.a.test", "imap.a.test", "*.a.test", "mail.b.test", "*.b.test", "c.test", "mail.c.test"]
BLOCK = re.compile(r'local_name "[^"\n]*" \{\n(?:  [^\n]*\n)*\}\n')
DIVIDER = re.compile(r"^# (?:Wildcards|Exact names): .*\n", re.M)


def layout(text: str) -> Tuple[str, List[str], List[str]]:
    """(head, sorted blocks before the divider, sorted blocks after it)."""
    divider = DIVIDER.search(text)
    assert divider is not None, text
    first, second = text[: divider.start()], text[divider.end() :]
    head_end = first.find('local_name "')
    head = first if head_end < 0 else first[:head_end]
    blocks = [sorted(BLOCK.findall(part)) for part in (first[len(head) :], second)]
    for part, found in ((first[len(head) :], blocks[0]), (second, blocks[1])):
        assert "".join(found) == "".join(sorted(BLOCK.findall(part))) and len("".join(found)) == len(part)
    return head, blocks[0], blocks[1]


def lineage(index: int, rng: random.Random) -> Lineage:
    files = CertFiles(f"/le/live/l{index}/privkey.pem", f"/le/live/l{index}/fullchain.pem")
    names = tuple(rng.sample(NAMES, rng.randint(1, 3)))
    return Lineage(files, names, f"digest{rng.random()}", rng.choice(["rsa", "ec", "rsa", "ed25519"]))


def step(plan: Plan, rng: random.Random) -> Plan:
    roll = rng.random()
    if plan.lineages and roll < 0.25:
        return plan.without([rng.choice(sorted(plan.lineages))])
    if plan.lineages and roll < 0.4:  # renewed: new digest, same names
        old = plan.lineages[rng.choice(sorted(plan.lineages))]
        return plan.with_lineage(old._replace(digest=f"digest{rng.random()}"))
    return plan.with_lineage(lineage(rng.randrange(8), rng))


@pytest.mark.parametrize("syntax", ["2.3", "2.4"])
@pytest.mark.parametrize("seed", range(12))
def test_edited_dropin_serves_what_a_full_rendering_does(
    tmp_path: Path, syntax: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spliced: List[bool] = []  # whether each step edited the drop-in (rather than rendering it)
    splice = dropin_module.splice

    def counted(*args: Any) -> Any:
        result = splice(*args)
        spliced.append(result is not None)
        return result

    monkeypatch.setattr(dovecot_module, "splice", counted)
    rng = random.Random(seed)
    settings = resolve({"dovecot-dir": str(tmp_path), "dovecot-syntax": syntax})
    dropin = Path(settings.dovecot_config)
    dropin.parent.mkdir(parents=True)
    dovecot = Dovecot(settings)
    plan = Plan()
    dropin.write_text(render_dropin(plan, syntax))
    for _ in range(40):
        after = step(plan, rng)
        changed = [lid for lid, lin in after.lineages.items() if plan.lineages.get(lid) != lin]
        before_default, default = default_files(plan, "mail.a.test"), default_files(after, "mail.a.test")
        written = text_digest(dropin.read_bytes())

        rendered = dovecot.render(after, plan, changed, default, before_default, written)

        whole = render_dropin(after, syntax, rendered.limit_mb, default=default)
        assert layout(rendered.text) == layout(whole)
        assert rendered.blocks == len(BLOCK.findall(whole))
        dropin.write_text(rendered.text)
        plan = after
    assert len(spliced) == 40 and sum(spliced) >= 30  # whole only where the default's pair count changed


def test_a_dropin_without_the_divider_is_rendered_whole(tmp_path: Path) -> None:
    """Written by an older version: it is replaced by a full rendering, which has the divider."""
    settings = resolve({"dovecot-dir": str(tmp_path), "dovecot-syntax": "2.3"})
    dropin = Path(settings.dovecot_config)
    dropin.parent.mkdir(parents=True)
    rng = random.Random(1)
    before = Plan().with_lineage(lineage(1, rng))
    old = DIVIDER.sub("", render_dropin(before, "2.3"))
    dropin.write_text(old)
    after = before.with_lineage(lineage(2, rng))

    rendered = Dovecot(settings).render(
        after, before, [lineage(2, random.Random(1)).id], written=text_digest(old.encode())
    )

    assert rendered.text == render_dropin(after, "2.3")


@pytest.mark.parametrize("tables", [1, 4])
@pytest.mark.parametrize("seed", range(12))
def test_edited_map_sources_have_the_lines_of_a_full_rendering(seed: int, tables: int) -> None:
    rng = random.Random(seed)
    layout = Layout("/etc/postfix/map", tables)
    plan = Plan()
    texts = render_tables(plan, layout)
    for _ in range(40):
        after = step(plan, rng)
        changed = [lid for lid, lin in after.lineages.items() if plan.lineages.get(lid) != lin]

        for index, (written, removed) in table_edits(plan, after, changed, layout).items():
            texts[index] = edit_source(texts[index], written, removed)

        whole = render_tables(after, layout)
        for index in range(tables):
            assert texts[index].splitlines()[0] == whole[index].splitlines()[0]  # the header stays first
            assert sorted(texts[index].splitlines()) == sorted(whole[index].splitlines())
        plan = after


def test_a_lineage_keeps_its_entries_in_one_table_and_the_split_covers_every_name() -> None:
    rng = random.Random(3)
    plan = Plan()
    for index in range(8):
        plan = plan.with_lineage(lineage(index, rng))
    layout = Layout("/etc/postfix/map", 4)
    texts = render_tables(plan, layout)
    keys = [line.split()[0] for text in texts.values() for line in text.splitlines()[1:]]
    assert sorted(keys) == sorted(name.lstrip("*") for name in plan.names())
    for lin in plan.lineages.values():  # the entries it is the primary of are in one table
        holding = {
            i for i, text in texts.items() for line in text.splitlines() if line.split()[1] == lin.files.key
        }
        assert len(holding) <= 1
    assert layout.sources() == [f"/etc/postfix/map.{i}" for i in range(4)]
    assert Layout("/etc/postfix/map", 16).sources()[3] == "/etc/postfix/map.03"
    assert Layout("/etc/postfix/map").sources() == ["/etc/postfix/map"]


def with_lineages_by_looking_at_every_lineage(plan: Plan, incoming: List[Lineage]) -> Plan:
    """The plain rule, for reference: of the incoming lineages, the later claim of a (name, key
    type slot) wins; every other lineage loses the names an incoming one kept for one of its
    slots. Every lineage is looked at."""
    claims = {(name, slot): lin.id for lin in incoming for name in lin.names for slot in slots(lin.key_type)}
    kept = {
        lin.id: tuple(n for n in lin.names if all(claims[(n, s)] == lin.id for s in slots(lin.key_type)))
        for lin in incoming
    }
    taken = {(name, slot) for lin in incoming for name in kept[lin.id] for slot in slots(lin.key_type)}
    result = {}
    for lid, lin in plan.lineages.items():
        if lid not in kept:
            names = tuple(n for n in lin.names if not any((n, s) in taken for s in slots(lin.key_type)))
            if names:
                result[lid] = lin._replace(names=names)
    result.update({lin.id: lin._replace(names=kept[lin.id]) for lin in incoming if kept[lin.id]})
    return Plan(result)


@pytest.mark.parametrize("seed", range(20))
def test_with_lineages_takes_names_as_the_plain_rule_says_and_indexes_them(seed: int) -> None:
    rng = random.Random(seed)
    plan = Plan()
    for _ in range(30):
        incoming = list(
            {
                lin.id: lin for lin in (lineage(rng.randrange(8), rng) for _ in range(rng.randint(1, 3)))
            }.values()
        )
        expected = with_lineages_by_looking_at_every_lineage(plan, incoming)
        plan.lineages_of("mail.a.test")  # builds its name index: the next plan's derives from it
        plan = plan.with_lineages(incoming)
        assert plan == expected
        derived, fresh = plan.__dict__["_by_name"], Plan(plan.lineages)._by_name
        assert {n: sorted(lins) for n, lins in derived.items()} == {
            n: sorted(lins) for n, lins in fresh.items()
        }
