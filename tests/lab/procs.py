"""Process helpers shared by the lab daemons: bounded commands, pid checks, log tails."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_TIMEOUT = 60.0


def run_checked(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell) and raise RuntimeError with its output if it fails or times out.

    Output goes through temporary files, not pipes: daemons that fork (``dovecot``) keep inherited
    pipes open, and reading a pipe to EOF would then hang until they exit.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
                env=None if env is None else dict(env),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(argv)}: timed out after {timeout} s") from exc
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)}: exit {proc.returncode}\nstdout:\n{tail(stdout)}\nstderr:\n{tail(stderr)}"
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def tail(text: str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of the file at ``path`` (or a note that it is missing)."""
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def read_pid(path: Path) -> int | None:
    """Return the pid stored in ``path``, or None if it is missing or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; return True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """Send SIGTERM, then SIGKILL after ``timeout`` seconds; raise RuntimeError if ``pid`` survives."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, timeout):
            return
    raise RuntimeError(f"process {pid} survived SIGKILL")


def pids_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line or environment contains ``text`` (a private
    config path): finds a lab daemon even when its pid file is gone or was never read."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            data = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in data and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_leftovers(text: str) -> list[int]:
    """Stop every process ``pids_mentioning(text)`` finds; return their pids."""
    pids = pids_mentioning(text)
    for pid in pids:
        kill_and_wait(pid)
    return pids
