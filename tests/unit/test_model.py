"""model.py: a plan says which lineage serves each name; its lineages can be read from the state
file's rows, and a deployment builds only the lineages it asks about."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Dict, List

import pytest

from mailstack_installer.model import CertFiles, Lineage, Lineages, Plan
from mailstack_installer.postfix.mapfile import render_map
from mailstack_installer.state import State, StateStore


def files(name: str) -> CertFiles:
    return CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")


def plan_of(*lineages: Lineage) -> Plan:
    plan = Plan()
    for lineage in lineages:
        plan = plan.with_lineage(lineage)
    return plan


def test_name_moves_to_the_lineage_that_claims_it_last():
    plan = plan_of(Lineage(files("old"), ("mail.a.test", "a.test")), Lineage(files("new"), ("mail.a.test",)))
    assert plan.lineages["/le/live/old"].names == ("a.test",)
    assert plan.lineages["/le/live/new"].names == ("mail.a.test",)
    assert render_map(plan).count("mail.a.test") == 1


def test_lineage_left_without_names_disappears():
    plan = plan_of(Lineage(files("old"), ("mail.a.test",)), Lineage(files("new"), ("mail.a.test",)))
    assert list(plan.lineages) == ["/le/live/new"]


def lineage(index: int, digest: str = "d", key: str = "") -> Lineage:
    directory = f"/le/live/l{index}"
    files = CertFiles(key or f"{directory}/privkey.pem", f"{directory}/fullchain.pem")
    return Lineage(files, (f"mail.l{index}.test", f"l{index}.test")[: 1 + index % 2], digest, "ec")


def from_rows(lineages: List[Lineage]) -> Lineages:
    return Lineages.from_rows([list(lin.row()) for lin in lineages])  # lists, as JSON gives


def agree(lazy: Lineages, plain: Dict[str, Lineage]) -> None:
    assert sorted(lazy) == sorted(plain)  # order: a lineage of the rows keeps its place
    assert len(lazy) == len(plain)
    assert lazy.ids() == set(plain)
    assert dict(lazy.items()) == plain
    assert lazy == plain
    assert all(lid in lazy for lid in plain)
    assert f"/le/live/l{len(plain) + 99}" not in lazy
    assert sorted(lazy.rows()) == sorted(lin.row() for lin in plain.values())
    index: Dict[str, List[str]] = {}
    for lid, lin in plain.items():
        for name in lin.names:
            index.setdefault(name, []).append(lid)
    assert {n: sorted(ids) for n, ids in lazy.ids_by_name().items()} == {
        n: sorted(ids) for n, ids in index.items()
    }


@pytest.mark.parametrize("seed", range(12))
def test_lineages_over_rows_answer_as_a_plain_dict_does(seed: int) -> None:
    rng = random.Random(seed)
    start = [lineage(i) for i in range(12)]
    lazy, plain = from_rows(start), {lin.id: lin for lin in start}
    history = [(lazy, dict(plain))]
    for _ in range(40):
        roll = rng.random()
        if plain and roll < 0.3:
            gone = rng.choice(sorted(plain))
            lazy = lazy.replaced({}, [gone])
            del plain[gone]
        else:
            lin = lineage(rng.randrange(20), f"d{rng.random()}")
            lazy = lazy.replaced({lin.id: lin})
            plain[lin.id] = lin
        agree(lazy, plain)
        then_lazy, then_plain = rng.choice(history)
        changed = sorted(lid for lid, lin in plain.items() if then_plain.get(lid) != lin)
        dropped = sorted(set(then_plain) - set(plain))
        assert lazy.changes_from(then_lazy) == (changed, dropped)
        history.append((lazy, dict(plain)))


def test_lineages_are_built_only_when_asked_for_and_once() -> None:
    lazy = from_rows([lineage(i) for i in range(100)])
    assert lazy["/le/live/l7"] is lazy["/le/live/l7"]
    later = lazy.replaced({"/le/live/l3": lineage(3, "new")})
    assert later["/le/live/l7"] is lazy["/le/live/l7"]  # an unchanged lineage built once
    assert later.changes_from(lazy) == (["/le/live/l3"], [])
    assert lazy["/le/live/l3"] == lineage(3) and later["/le/live/l3"] == lineage(3, "new")


def test_replacing_makes_new_lineages_and_leaves_the_old_as_they_were() -> None:
    lazy = from_rows([lineage(i) for i in range(5)])
    later = lazy.replaced({"/le/live/l9": lineage(9)}, ["/le/live/l1"])
    assert list(lazy) == [f"/le/live/l{i}" for i in range(5)]
    assert list(later) == ["/le/live/l0", "/le/live/l2", "/le/live/l3", "/le/live/l4", "/le/live/l9"]
    assert lazy == from_rows([lineage(i) for i in range(5)])  # equal by content, not identity
    assert later != lazy


def test_keys_kept_outside_their_lineage_directory_are_found_without_building() -> None:
    outside = lineage(1, key="/srv/keys/l1.pem")
    lazy = from_rows([lineage(0), outside, lineage(2)])
    assert lazy.keys_apart() == [("/le/live/l1", "/srv/keys/l1.pem")]
    moved = lazy.replaced({"/le/live/l2": lineage(2, key="/le/live/l2/sub/k.pem")}, ["/le/live/l1"])
    assert moved.keys_apart() == [("/le/live/l2", "/le/live/l2/sub/k.pem")]


def test_a_loaded_plan_saved_again_keeps_its_rows_and_its_changes(tmp_path) -> None:
    store = StateStore(str(tmp_path))
    store.save(State(plan=Plan({lin.id: lin for lin in (lineage(i) for i in range(300))})))
    state = store.load()
    state = replace(state, plan=state.plan.with_lineage(lineage(400)).without(["/le/live/l5"]))
    store.save(state)  # a journal over the snapshot
    assert (tmp_path / "mailstack" / "state.journal").exists()
    loaded = StateStore(str(tmp_path)).load()  # as in a process of its own
    assert "/le/live/l5" not in loaded.plan.lineages and "/le/live/l400" in loaded.plan.lineages
    assert len(loaded.plan.lineages) == 300
    assert loaded.plan.lineages_of("mail.l400.test") == (lineage(400),)
    assert loaded.plan.lineages_of("mail.l6.test") == (lineage(6),)
    assert loaded.plan == state.plan


def test_every_load_reads_the_state_as_it_is_on_disk_now(tmp_path) -> None:
    """certbot renews many lineages in one process, each with a new installer (and store): each
    sees what the one before it saved."""
    plan = Plan({lin.id: lin for lin in (lineage(i) for i in range(300))})
    StateStore(str(tmp_path)).save(State(plan=plan))
    store = StateStore(str(tmp_path))
    first = store.load()
    first.plan.lineages_of("mail.l1.test")  # builds the name index
    first = replace(
        first, plan=first.plan.with_lineage(lineage(1, "renewed")), unconfirmed=frozenset({"/le/live/l1"})
    )
    store.save(first)  # a journal: the snapshot's bytes stay

    second = StateStore(str(tmp_path)).load()

    assert second == first
    assert second.plan.lineages_of("mail.l1.test") == (lineage(1, "renewed"),)
    assert second.unconfirmed == {"/le/live/l1"}
    path = tmp_path / "mailstack" / "state.json"
    path.write_bytes(path.read_bytes().replace(b"mail.l2.test", b"mail.l2.tesu"))  # same size
    third = StateStore(str(tmp_path)).load()
    assert third.plan.lineages_of("mail.l2.tesu") and not third.plan.lineages_of("mail.l2.test")
