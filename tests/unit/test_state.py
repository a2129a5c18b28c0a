"""state.py: what has been deployed, saved as a snapshot and a small journal beside it, private,
and read back as it is on disk now."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from mailstack_installer.dovecot.daemon import DovecotRecord
from mailstack_installer.errors import MisconfiguredError
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.state import State, StateStore


def test_state_round_trips_and_is_private(tmp_path):
    store = StateStore(str(tmp_path))
    lineage = Lineage(CertFiles("/l/a/privkey.pem", "/l/a/fullchain.pem"), ("a.test",), "d1")
    state = State(
        {"postfix-dir": "/x"}, Plan({lineage.id: lineage}), {"dovecot"}, dovecot=DovecotRecord("ab12")
    )
    store.save(state)
    loaded = store.load()
    assert loaded.dovecot == DovecotRecord("ab12")
    assert loaded.plan == Plan({lineage.id: lineage})
    assert loaded.options == {"postfix-dir": "/x"}
    assert loaded.pending_reload == {"dovecot"}
    assert (tmp_path / "mailstack" / "state.json").stat().st_mode & 0o077 == 0
    assert (tmp_path / "mailstack").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1, "lineages": {"x": {}}},
        {"version": 2, "lineages": [{"key": "/k"}]},
        {"version": 2, "lineages": [["/k", "/l/a/fullchain.pem", "d", "ec"]]},  # no name
        {"version": 2, "lineages": [["/k", "/l/a/fullchain.pem", "d", "ec", 7]]},
        {"version": 3, "lineages": []},
    ],
)
def test_damaged_state_gives_one_clear_line(tmp_path, doc):
    (tmp_path / "mailstack").mkdir()
    (tmp_path / "mailstack" / "state.json").write_text(json.dumps(doc))
    with pytest.raises(MisconfiguredError, match="state file .* is damaged"):
        StateStore(str(tmp_path)).load()


def test_missing_state_is_empty(tmp_path):
    assert StateStore(str(tmp_path)).load() == State()


def lineages(count: int, digest: str = "d") -> Plan:
    found = [
        Lineage(CertFiles(f"/l/{i}/privkey.pem", f"/l/{i}/fullchain.pem"), (f"m{i}.test",), digest)
        for i in range(count)
    ]
    return Plan({lin.id: lin for lin in found})


def test_a_save_that_changes_a_few_lineages_writes_the_journal_not_the_snapshot(tmp_path):
    store = StateStore(str(tmp_path))
    store.save(State(plan=lineages(300)))
    snapshot = store.path
    before = os.stat(snapshot)
    state = store.load()
    renewed = state.plan.lineages["/l/7"]._replace(digest="new")
    gone = "/l/9"
    state = replace(
        state, plan=state.plan.without([gone]).with_lineage(renewed), pending_reload=frozenset({"postfix"})
    )

    store.save(state)

    after = os.stat(snapshot)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    journal = json.loads(Path(store.journal).read_text())
    assert journal["lineages"] == [["/l/7/privkey.pem", "/l/7/fullchain.pem", "new", "", "m7.test"]]
    assert journal["dropped"] == [gone]
    loaded = StateStore(str(tmp_path)).load()
    assert loaded.plan == state.plan and loaded.pending_reload == {"postfix"}
    assert os.stat(store.journal).st_mode & 0o077 == 0


def test_a_save_that_changes_many_lineages_writes_a_new_snapshot_and_drops_the_journal(tmp_path):
    store = StateStore(str(tmp_path))
    store.save(State(plan=lineages(10)))
    state = store.load()
    state = replace(state, plan=state.plan.with_lineage(state.plan.lineages["/l/1"]._replace(digest="x")))
    store.save(state)
    assert os.path.exists(store.journal)
    first = json.loads(Path(store.path).read_text())["generation"]

    state = replace(state, plan=lineages(400, digest="renewed"))  # more than a journal holds
    store.save(state)

    assert not os.path.exists(store.journal)
    assert json.loads(Path(store.path).read_text())["generation"] == first + 1
    assert StateStore(str(tmp_path)).load().plan == lineages(400, digest="renewed")


def test_the_journal_of_an_older_snapshot_is_ignored(tmp_path):
    """A crash between writing a new snapshot and removing the old journal: the snapshot holds
    everything, and the journal, naming the old generation, must not be applied over it."""
    store = StateStore(str(tmp_path))
    store.save(State(plan=lineages(3)))
    state = store.load()
    state = replace(state, plan=state.plan.without(["/l/0"]))
    store.save(state)
    stale = Path(store.journal).read_text()
    state = replace(state, plan=lineages(400))
    store.save(state)
    Path(store.journal).write_text(stale)

    assert StateStore(str(tmp_path)).load().plan == lineages(400)


def test_a_snapshot_replaced_behind_the_stores_back_gets_a_snapshot_not_a_journal(tmp_path):
    store = StateStore(str(tmp_path))
    store.save(State(plan=lineages(3)))
    state = store.load()
    other = StateStore(str(tmp_path))
    other.save(State(plan=lineages(5)))  # e.g. restored from previous/

    state = replace(state, plan=state.plan.without(["/l/0"]))
    store.save(state)

    assert not os.path.exists(store.journal)
    assert StateStore(str(tmp_path)).load().plan == state.plan


@pytest.mark.parametrize("text", ["{broken", '{"journal_of": 1, "lineages": [["/k"]], "dropped": []}', "[]"])
def test_a_damaged_journal_gives_one_clear_line_naming_it(tmp_path, text):
    store = StateStore(str(tmp_path))
    store.save(State(plan=lineages(2)))
    Path(store.journal).write_text(text)
    with pytest.raises(MisconfiguredError, match=r"state file .*state\.journal is damaged"):
        StateStore(str(tmp_path)).load()
