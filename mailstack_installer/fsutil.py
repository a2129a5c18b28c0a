"""The one way this package writes files: never half-written, never readable by others when secret."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import tempfile
import time
from typing import Dict, Optional, Sequence, Set

from .constants import HEADER
from .errors import MisconfiguredError


def text_digest(data: bytes) -> str:
    """What the state records of a file this package wrote, to recognise it unchanged later."""
    return hashlib.sha256(data).hexdigest()


def identity(path: str) -> str:
    """Which file is at ``path`` (inode, size, mtime; "" if none), which a rename keeps: recorded
    for a file this package swapped in, it tells whether anyone replaced the file since."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ""
    return _identity(info)


def settled_identity(path: str, seconds: float) -> str:
    """identity(), or "" if the file changed in the last ``seconds`` or cannot be read: a change
    within one tick of the file system's clock keeps the mtime, so only an identity that had
    been still for a while tells that nothing changed since."""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    return _identity(info) if time.time() - info.st_mtime >= seconds else ""


def _identity(info: os.stat_result) -> str:
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: str, data: bytes, mode: int = 0o600, suffix: str = ".mailstack-tmp") -> str:
    """Write ``data`` to a fresh temp file beside ``path`` (same directory, so a rename is atomic).

    The file is created 0600 by mkstemp and chmod-ed to ``mode`` before anyone can see it renamed.
    """
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    except FileNotFoundError:
        raise MisconfiguredError(f"cannot write {path}: directory {directory} does not exist") from None
    except PermissionError:
        raise MisconfiguredError(f"cannot write {path}: directory {directory} is not writable") from None
    except OSError as exc:
        raise MisconfiguredError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except OSError as exc:
        remove_quietly(tmp)
        raise MisconfiguredError(f"cannot write {path}: {exc.strerror}") from None
    return tmp


def replace(tmp: str, path: str) -> None:
    """Atomically move ``tmp`` over ``path`` and make the rename durable."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise MisconfiguredError(f"cannot replace {path}: {exc.strerror}") from None
    fsync_dir(os.path.dirname(path) or ".")


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, chmod, rename."""
    replace(write_temp(path, data, mode), path)


def copy_private(src: str, dst: str) -> None:
    """Copy ``src`` to a new file ``dst`` that is 0600 from its first byte (it holds private keys)."""
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            _copy_in_kernel(inp.fileno(), out.fileno())
            os.fsync(out.fileno())
    except OSError as exc:
        raise MisconfiguredError(f"cannot copy {src} to {dst}: {exc.strerror}") from None


def _copy_in_kernel(src: int, dst: int) -> None:
    """Copy a whole file without passing it through Python: ``copy_file_range`` (which shares the
    blocks on file systems that can, e.g. btrfs and XFS), else ``sendfile``. A 10,000-entry table
    is tens of MB."""
    size = os.fstat(src).st_size
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                step = os.copy_file_range(src, dst, size - copied)
                if step == 0:
                    break
                copied += step
        except OSError:
            pass  # not supported here (e.g. across file systems on old kernels): sendfile goes on
    while copied < size:
        step = os.sendfile(dst, src, copied, size - copied)
        if step == 0:
            raise OSError(errno.EIO, "the file shrank while it was copied")
        copied += step


def snapshot(src: str, dst: str, mode: int = 0o600) -> bool:
    """Keep the current content of ``src`` as ``dst``; False if ``src`` does not exist.

    A hard link where it can be made: this package only ever replaces ``src`` by renaming a new
    file over it, so the linked inode keeps the old content, and a 10,000-lineage map source,
    drop-in and state cost nothing to keep. Elsewhere (another file system) a copy.
    """
    try:
        os.link(src, dst)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        data = read_or_none(src)
        if data is None:
            return False
        atomic_write(dst, data, mode=mode)
        return True


def set_aside(path: str) -> Optional[str]:
    """A hard link to ``path`` under a temp name beside it, before a new file is renamed over it:
    put_back() restores it, remove_quietly() drops it; a killed run's is swept as a temp file.
    None if ``path`` does not exist."""
    directory, base = os.path.split(path)
    for _ in range(8):
        aside = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.mailstack-tmp")
        try:
            os.link(path, aside)
            return aside
        except FileNotFoundError:
            return None
        except FileExistsError:
            continue
        except OSError as exc:
            raise MisconfiguredError(f"cannot keep {path} to undo its change: {exc.strerror}") from None
    raise MisconfiguredError(f"cannot keep {path} to undo its change: no free temp name")


def put_back(aside: Optional[str], path: str) -> None:
    """Undo a replace of ``path`` that set_aside prepared (None: there was no file: remove it)."""
    if aside is None:
        remove_quietly(path)
    else:
        replace(aside, path)


def read_or_none(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def check_owned(path: str, option: str) -> None:
    """Refuse to overwrite a file that exists but was not written by this package."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MisconfiguredError(f"cannot read {path}: {exc.strerror}") from None
    if HEADER.encode() not in first:
        raise MisconfiguredError(
            f"{path} exists and was not written by certbot-mailstack: move it away (its entries "
            f"will not be kept) or choose another file with {option}"
        )


def remove_stale_temps(paths: Sequence[str]) -> None:
    """Remove temp files a killed run left beside ``paths`` (callers hold the state lock, so no
    live run owns them); map candidates hold private keys and must not linger. One listing per
    directory, however many files (a split map has tens of tables)."""
    by_directory: Dict[str, Set[str]] = {}
    for path in paths:
        directory, base = os.path.split(path)
        by_directory.setdefault(directory or ".", set()).add(base)
    for directory, bases in by_directory.items():
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if ".mailstack-tmp" in entry and entry.startswith("."):
                # ".<base>.<random>.mailstack-tmp[.db]" (write_temp, and a table postmap built from it)
                base = entry[1:].rpartition(".mailstack-tmp")[0].rpartition(".")[0]
                if base in bases:
                    remove_quietly(os.path.join(directory, entry))
