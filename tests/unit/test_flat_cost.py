"""What keeps one deployment cheap on a host of 10,000 lineages without weakening a check."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest

from mailstack_installer.certfiles import gone_lineages
from mailstack_installer.dovecot import Dovecot
from mailstack_installer.dovecot.dropin import render_dropin
from mailstack_installer.fsutil import text_digest
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.pipeline import Pipeline
from mailstack_installer.settings import resolve


def lineage_in(live: Path, name: str, *, key_dir: Path | None = None) -> Lineage:
    directory = live / name
    directory.mkdir(parents=True)
    (directory / "fullchain.pem").write_text("chain")
    key = (key_dir or directory) / "privkey.pem"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("key")
    files = CertFiles(str(key), str(directory / "fullchain.pem"))
    return Lineage(files, (f"mail.{name}.test",), "d")


def test_gone_unmaps_a_lineage_whose_directory_certbot_deleted(tmp_path: Path) -> None:
    live = tmp_path / "live"
    kept, deleted = lineage_in(live, "kept"), lineage_in(live, "deleted")
    plan = Plan({kept.id: kept, deleted.id: deleted})
    shutil.rmtree(live / "deleted")

    assert gone_lineages(plan, set()) == {deleted.id}


def test_gone_looks_up_a_key_kept_outside_its_lineage_on_its_own(tmp_path: Path) -> None:
    live = tmp_path / "live"
    apart = lineage_in(live, "apart", key_dir=tmp_path / "keys")
    os.unlink(apart.files.key)

    assert gone_lineages(Plan({apart.id: apart}), set()) == {apart.id}


def test_gone_keeps_lineages_being_deployed_and_those_under_an_unlistable_parent(tmp_path: Path) -> None:
    live = tmp_path / "live"
    fresh = lineage_in(live, "fresh")
    elsewhere = Lineage(CertFiles("/nonexistent/x/privkey.pem", "/nonexistent/x/fullchain.pem"), ("x.test",))
    plan = Plan({fresh.id: fresh, elsewhere.id: elsewhere})

    assert gone_lineages(plan, {fresh.id}) == {elsewhere.id}  # the unlistable one is looked up: gone


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


def test_gone_finds_deleted_lineages_under_several_parents(tmp_path: Path) -> None:
    kept = [lineage_in(tmp_path / "one" / "live", "a"), lineage_in(tmp_path / "two" / "live", "b")]
    deleted = [lineage_in(tmp_path / "one" / "live", "c"), lineage_in(tmp_path / "two" / "live", "d")]
    plan = Plan({lin.id: lin for lin in kept + deleted})
    for lin in deleted:
        shutil.rmtree(lin.id)

    assert gone_lineages(plan, set()) == {lin.id for lin in deleted}
