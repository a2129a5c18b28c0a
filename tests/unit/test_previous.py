"""previous.py: the last configuration confirmed served is kept whole, or not at all, and put back
with the state that went with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List

import pytest

from mailstack_installer import fsutil
from mailstack_installer.daemon import Change, Daemon, Step
from mailstack_installer.errors import MisconfiguredError
from mailstack_installer.listeners import Listener
from mailstack_installer.previous import Previous
from mailstack_installer.transaction import Transaction


class OneFile(Daemon[str]):
    """A daemon whose whole configuration is one file; it keeps and puts back that file."""

    service = "one-file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def keep(self, directory: str, record: str) -> None:
        fsutil.snapshot(str(self.path), os.path.join(directory, "one-file"))

    def put_back(self, directory: str) -> None:
        fsutil.atomic_write(str(self.path), Path(directory, "one-file").read_bytes())

    def check_installed(self) -> None: ...
    def is_running(self) -> bool:
        return True

    def listeners(self) -> List[Listener]:
        return []

    def known_names(self) -> List[str]:
        return []

    def check_config(self) -> None: ...
    def fresh_record(self) -> str:
        return ""

    def prepare(self, change: Change, record: str, undo: Transaction) -> Step[str]:
        raise NotImplementedError

    def swap(self, step: Step[Any], undo: Transaction) -> None:
        raise NotImplementedError


@pytest.fixture
def live(tmp_path: Path) -> Path:
    (tmp_path / "conf").write_text("served")
    (tmp_path / "state.json").write_text("state then")
    return tmp_path


def test_what_was_kept_is_put_back_with_its_state(live: Path) -> None:
    daemon, previous = OneFile(live / "conf"), Previous(str(live / "mailstack"))
    state_files = [str(live / "state.json"), str(live / "state.journal")]
    previous.save([(daemon, "")], state_files)
    assert previous.exists()
    fsutil.atomic_write(str(live / "conf"), b"candidate")
    fsutil.atomic_write(str(live / "state.json"), b"state now")
    fsutil.atomic_write(str(live / "state.journal"), b"journal now")

    assert previous.restore([daemon], state_files) is True

    assert (live / "conf").read_text() == "served"
    assert (live / "state.json").read_text() == "state then"
    assert not (live / "state.journal").exists()  # there was none then
    previous.drop()
    assert not previous.exists() and not (live / "mailstack" / "previous").exists()


def test_with_no_state_then_restore_says_so_and_removes_the_state_now(live: Path) -> None:
    (live / "state.json").unlink()
    daemon, previous = OneFile(live / "conf"), Previous(str(live / "mailstack"))
    previous.save([(daemon, "")], [str(live / "state.json")])
    fsutil.atomic_write(str(live / "state.json"), b"state now")
    assert previous.restore([daemon], [str(live / "state.json")]) is False
    assert not (live / "state.json").exists()


def test_a_copy_without_its_marker_is_not_a_previous_configuration(live: Path) -> None:
    """A run killed while keeping leaves a partial copy: it must never be restored."""
    previous = Previous(str(live / "mailstack"))
    os.makedirs(previous.directory)
    fsutil.snapshot(str(live / "conf"), os.path.join(previous.directory, "one-file"))
    assert not previous.exists()


def test_a_damaged_marker_is_one_clear_error(live: Path) -> None:
    daemon, previous = OneFile(live / "conf"), Previous(str(live / "mailstack"))
    previous.save([(daemon, "")], [str(live / "state.json")])
    Path(previous.marker).write_text("{")
    with pytest.raises(
        MisconfiguredError, match=f"cannot restore the previous configuration from {previous.marker}"
    ):
        previous.restore([daemon], [str(live / "state.json")])
