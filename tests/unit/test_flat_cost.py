"""What keeps one deployment cheap on a host of 10,000 lineages without weakening a check."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest

from mailstack_installer import fsutil
from mailstack_installer.dovecot import Dovecot, render_dropin, text_digest
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.pipeline import Outcome, Pipeline
from mailstack_installer.settings import resolve
from mailstack_installer.state import State


def lineage_in(live: Path, name: str, *, key_dir: Path | None = None) -> Lineage:
    directory = live / name
    directory.mkdir(parents=True)
    (directory / "fullchain.pem").write_text("chain")
    key = (key_dir or directory) / "privkey.pem"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("key")
    files = CertFiles(str(key), str(directory / "fullchain.pem"))
    return Lineage(files, (f"mail.{name}.test",), "d")


def test_prune_unmaps_a_lineage_whose_directory_certbot_deleted(tmp_path: Path) -> None:
    live = tmp_path / "live"
    kept, deleted = lineage_in(live, "kept"), lineage_in(live, "deleted")
    plan = Plan({kept.id: kept, deleted.id: deleted})
    shutil.rmtree(live / "deleted")
    outcome = Outcome()

    pruned = Pipeline(str(tmp_path))._prune(plan, set(), outcome)

    assert list(pruned.lineages) == [kept.id]
    assert outcome.warnings == [f"unmapped mail.deleted.test: {deleted.files.fullchain} no longer exists"]


def test_prune_looks_up_a_key_kept_outside_its_lineage_on_its_own(tmp_path: Path) -> None:
    live = tmp_path / "live"
    apart = lineage_in(live, "apart", key_dir=tmp_path / "keys")
    os.unlink(apart.files.key)

    pruned = Pipeline(str(tmp_path))._prune(Plan({apart.id: apart}), set(), Outcome())

    assert pruned.lineages == {}


def test_prune_keeps_lineages_being_deployed_and_those_under_an_unlistable_parent(tmp_path: Path) -> None:
    live = tmp_path / "live"
    fresh = lineage_in(live, "fresh")
    elsewhere = Lineage(CertFiles("/nonexistent/x/privkey.pem", "/nonexistent/x/fullchain.pem"), ("x.test",))
    plan = Plan({fresh.id: fresh, elsewhere.id: elsewhere})

    pruned = Pipeline(str(tmp_path))._prune(plan, {fresh.id}, Outcome())

    assert list(pruned.lineages) == [fresh.id]  # the unlistable one is looked up, and is gone


def test_snapshot_keeps_the_old_content_when_the_file_is_replaced(tmp_path: Path) -> None:
    live, kept = tmp_path / "map", tmp_path / "kept"
    live.write_bytes(b"old")
    os.chmod(live, 0o600)

    assert fsutil.snapshot(str(live), str(kept))
    fsutil.atomic_write(str(live), b"new")

    assert kept.read_bytes() == b"old"
    assert kept.stat().st_mode & 0o077 == 0
    assert not fsutil.snapshot(str(tmp_path / "absent"), str(tmp_path / "nothing"))


def one(name: str) -> Lineage:
    files = CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")
    return Lineage(files, (f"mail.{name}.test",), "d")


def test_dropin_recognised_by_its_recorded_digest_validates_only_the_change(tmp_path: Path) -> None:
    settings = resolve({"dovecot-dir": str(tmp_path), "dovecot-syntax": "2.3"})
    dropin = Path(settings.dovecot_config)
    dropin.parent.mkdir(parents=True)
    before = Plan({one("a").id: one("a")})
    written = render_dropin(before, "2.3").encode()
    dropin.write_bytes(written)
    after = before.with_lineage(one("b"))

    rendered = Dovecot(settings).render(after, before, [one("b").id], written=text_digest(written))
    assert rendered.check_text == render_dropin(Plan({one("b").id: one("b")}), "2.3")

    # Edited by hand since: neither the digest nor a fresh rendering of ``before`` matches it.
    dropin.write_bytes(written + b"# edited\n")
    rendered = Dovecot(settings).render(after, before, [one("b").id], written=text_digest(written))
    assert rendered.check_text == rendered.text


def test_copy_private_copies_every_byte_into_a_private_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "table.db", tmp_path / "candidate.db"
    data = os.urandom(3 << 20) + b"tail"
    src.write_bytes(data)
    os.chmod(src, 0o644)

    fsutil.copy_private(str(src), str(dst))

    assert dst.read_bytes() == data
    assert dst.stat().st_mode & 0o777 == 0o600


def test_a_run_pauses_the_cyclic_collector_and_always_restores_it(tmp_path: Path) -> None:
    pipeline = Pipeline(str(tmp_path))
    assert gc.isenabled()
    with pipeline._run():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), pipeline._run():
        raise RuntimeError("a failed run")
    assert gc.isenabled()
    gc.disable()
    try:
        with pipeline._run():
            pass
        assert not gc.isenabled()  # left off when the caller had turned it off
    finally:
        gc.enable()


def test_stale_temps_of_the_given_files_are_removed_with_one_listing(tmp_path: Path) -> None:
    left = [".map.k3x9q.mailstack-tmp", ".map.k3x9q.mailstack-tmp.db", ".map.03.a1b2.mailstack-tmp.lmdb-lock"]
    kept = ["map", "map.03", ".other.a1b2.mailstack-tmp", ".map.bak", "notes.mailstack-tmp"]
    for name in left + kept:
        (tmp_path / name).write_text("x")

    fsutil.remove_stale_temps([str(tmp_path / "map"), str(tmp_path / "map.03"), str(tmp_path / "gone" / "x")])

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_prune_finds_deleted_lineages_under_several_parents(tmp_path: Path) -> None:
    kept = [lineage_in(tmp_path / "one" / "live", "a"), lineage_in(tmp_path / "two" / "live", "b")]
    deleted = [lineage_in(tmp_path / "one" / "live", "c"), lineage_in(tmp_path / "two" / "live", "d")]
    plan = Plan({lin.id: lin for lin in kept + deleted})
    for lin in deleted:
        shutil.rmtree(lin.id)

    pruned = Pipeline(str(tmp_path))._prune(plan, set(), Outcome())

    assert sorted(pruned.lineages) == sorted(lin.id for lin in kept)


def settled(directory: Path) -> None:
    """As if ``directory`` last changed a minute ago."""
    past = os.stat(directory).st_mtime - 60
    os.utime(directory, (past, past))


def listings(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: calls.append(path) or real(path))
    return calls


def test_prune_lists_live_once_while_it_is_unchanged_and_again_when_a_lineage_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "live"
    lineages = [lineage_in(live, name) for name in ("a", "b", "c")]
    plan = Plan({lin.id: lin for lin in lineages})
    settled(live)
    calls = listings(monkeypatch)
    state = State()
    pipeline = Pipeline(str(tmp_path))

    assert pipeline._prune(plan, set(), Outcome(), state) is plan
    assert state.lineage_dir.endswith(f":{live}/") and len(calls) == 1
    assert pipeline._prune(plan, {lineages[0].id}, Outcome(), state) is plan  # a renewal: not listed
    assert len(calls) == 1

    shutil.rmtree(live / "b")  # certbot delete: live/ changes
    pruned = pipeline._prune(plan, set(), Outcome(), state)

    assert sorted(pruned.lineages) == [lineages[0].id, lineages[2].id]
    assert len(calls) == 2 and state.lineage_dir == ""
    assert pipeline._prune(pruned, set(), Outcome(), state) is pruned
    assert len(calls) == 3 and state.lineage_dir == ""  # changed just now: not trusted yet
    settled(live)
    pipeline._prune(pruned, set(), Outcome(), state)
    pipeline._prune(pruned, set(), Outcome(), state)
    assert len(calls) == 4 and state.lineage_dir


def test_prune_lists_again_for_a_lineage_deployed_outside_live_or_with_its_key_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "live"
    lineages = [lineage_in(live, "a"), lineage_in(live, "b")]
    deeper = lineage_in(live / "b", "deeper")  # under a lineage directory, not right in live/
    apart = lineage_in(live, "apart", key_dir=tmp_path / "keys")
    settled(live)
    state = State()
    plan = Plan({lin.id: lin for lin in lineages})
    Pipeline(str(tmp_path))._prune(plan, set(), Outcome(), state)
    recorded = state.lineage_dir
    assert recorded
    calls = listings(monkeypatch)

    for odd in (deeper, apart):
        state.lineage_dir = recorded
        Pipeline(str(tmp_path))._prune(plan.with_lineage(odd), {odd.id}, Outcome(), state)
        assert state.lineage_dir == ""  # never trusted while such a lineage is deployed
    assert len(calls) == 2

    os.unlink(apart.files.key)  # what only a lookup of its own finds
    pruned = Pipeline(str(tmp_path))._prune(plan.with_lineage(apart), set(), Outcome(), state)
    assert apart.id not in pruned.lineages
