"""Directories that unprivileged daemon users (postfix, dovecot, dovenull) can reach."""

from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path


def traversable_by_all(path: Path) -> bool:
    """Tell whether every existing ancestor of ``path`` (and ``path``) has the o+x bit."""
    for directory in (path, *path.parents):
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return False
    return True


class ReachableDir:
    """``preferred`` if unprivileged users can reach it and its path is short enough, else a fresh temp dir.

    pytest's ``tmp_path`` for root lives below a 0700 directory, where the ``postfix`` user cannot open
    ``data_directory/master.lock`` and Dovecot's users cannot reach ``base_dir``; unix socket paths are
    also limited to ~107 bytes.  The fallback is ``tempfile.mkdtemp()`` (mode 0755) and is removed by
    ``cleanup()``.
    """

    def __init__(self, preferred: Path, *, prefix: str, max_len: int = 200) -> None:
        self.preferred = preferred
        self.prefix = prefix
        self.max_len = max_len
        self._temp: Path | None = None
        self._last: Path | None = None

    def get(self) -> Path:
        """Create (if needed) and return the directory; after ``cleanup()`` reuse the same path if free."""
        if self._temp is not None:
            return self._temp
        if len(str(self.preferred)) <= self.max_len and traversable_by_all(self.preferred.parent):
            self.preferred.mkdir(parents=True, exist_ok=True)
            self.preferred.chmod(0o755)
            if traversable_by_all(self.preferred):
                return self.preferred
        self._temp = self._recreate_last() or Path(tempfile.mkdtemp(prefix=self.prefix))
        self._last = self._temp
        self._temp.chmod(0o755)
        link = self.preferred
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self._temp, target_is_directory=True)
        return self._temp

    def _recreate_last(self) -> Path | None:
        """Recreate the previous fallback path so configs that name it stay valid across restarts."""
        if self._last is None:
            return None
        try:
            self._last.mkdir(mode=0o700)
        except OSError:
            return None
        return self._last

    def cleanup(self) -> None:
        """Remove the fallback temp dir (and the symlink to it), if one was made."""
        temp, self._temp = self._temp, None
        if temp is None:
            return
        if self.preferred.is_symlink():
            self.preferred.unlink()
        shutil.rmtree(temp, ignore_errors=True)
