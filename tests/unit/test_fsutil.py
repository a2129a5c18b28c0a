"""fsutil.py: files are replaced whole by rename, private from their first byte, and what a
change replaced can be put back."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailstack_installer import fsutil
from mailstack_installer.constants import HEADER
from mailstack_installer.errors import MisconfiguredError


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_replaces_the_file_private_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text("old")
    path.chmod(0o644)
    fsutil.atomic_write(str(path), b"new")
    assert path.read_text() == "new"
    assert mode_of(path) == 0o600
    assert os.listdir(tmp_path) == ["map"]


def test_a_temp_file_is_written_beside_its_target_with_the_mode_asked(tmp_path: Path) -> None:
    temp = fsutil.write_temp(str(tmp_path / "drop-in.conf"), b"x", mode=0o644)
    assert os.path.dirname(temp) == str(tmp_path)
    assert os.path.basename(temp).startswith(".drop-in.conf.") and temp.endswith(".mailstack-tmp")
    assert mode_of(Path(temp)) == 0o644


def test_a_temp_file_in_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MisconfiguredError, match=f"directory {tmp_path}/nope does not exist"):
        fsutil.write_temp(str(tmp_path / "nope" / "map"), b"x")


def test_what_set_aside_kept_is_put_back_after_a_new_file_replaced_it(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text("served")
    aside = fsutil.set_aside(str(path))
    fsutil.atomic_write(str(path), b"candidate")
    fsutil.put_back(aside, str(path))
    assert path.read_text() == "served"
    assert os.listdir(tmp_path) == ["map"]


def test_putting_back_a_file_that_did_not_exist_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "map"
    assert fsutil.set_aside(str(path)) is None
    fsutil.atomic_write(str(path), b"candidate")
    fsutil.put_back(None, str(path))
    assert not path.exists()


def test_a_file_not_written_by_this_package_is_refused_with_the_option_to_change(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_text(f"# {HEADER}\nmail.a.test x y\n")
    theirs.write_text("mail.a.test x y\n")
    fsutil.check_owned(str(ours), "--postfix-map")
    fsutil.check_owned(str(tmp_path / "missing"), "--postfix-map")
    with pytest.raises(MisconfiguredError, match=f"{theirs} exists and was not written .* --postfix-map"):
        fsutil.check_owned(str(theirs), "--postfix-map")


def test_identity_tells_a_replaced_file_from_the_one_recorded(tmp_path: Path) -> None:
    path = tmp_path / "map.db"
    assert fsutil.identity(str(path)) == ""
    path.write_text("x")
    recorded = fsutil.identity(str(path))
    assert fsutil.identity(str(path)) == recorded
    fsutil.atomic_write(str(path), b"x")  # same content, another file
    assert fsutil.identity(str(path)) != recorded
    assert fsutil.settled_identity(str(path), 60) == ""  # changed within the last minute
    assert fsutil.settled_identity(str(path), 0) == fsutil.identity(str(path))


def test_snapshot_keeps_the_old_content_when_the_file_is_replaced(tmp_path: Path) -> None:
    live, kept = tmp_path / "map", tmp_path / "kept"
    live.write_bytes(b"old")
    os.chmod(live, 0o600)

    assert fsutil.snapshot(str(live), str(kept))
    fsutil.atomic_write(str(live), b"new")

    assert kept.read_bytes() == b"old"
    assert kept.stat().st_mode & 0o077 == 0
    assert not fsutil.snapshot(str(tmp_path / "absent"), str(tmp_path / "nothing"))


def test_copy_private_copies_every_byte_into_a_private_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "table.db", tmp_path / "candidate.db"
    data = os.urandom(3 << 20) + b"tail"
    src.write_bytes(data)
    os.chmod(src, 0o644)

    fsutil.copy_private(str(src), str(dst))

    assert dst.read_bytes() == data
    assert dst.stat().st_mode & 0o777 == 0o600
    with pytest.raises(MisconfiguredError, match=f"cannot copy {src} to {dst}"):
        fsutil.copy_private(str(src), str(dst))  # never over an existing file


def test_stale_temps_of_the_given_files_are_removed_with_one_listing(tmp_path: Path) -> None:
    left = [".map.k3x9q.mailstack-tmp", ".map.k3x9q.mailstack-tmp.db", ".map.03.a1b2.mailstack-tmp.lmdb-lock"]
    kept = ["map", "map.03", ".other.a1b2.mailstack-tmp", ".map.bak", "notes.mailstack-tmp"]
    for name in left + kept:
        (tmp_path / name).write_text("x")

    fsutil.remove_stale_temps([str(tmp_path / "map"), str(tmp_path / "map.03"), str(tmp_path / "gone" / "x")])

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
