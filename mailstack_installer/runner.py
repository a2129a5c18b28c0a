"""The one door to external commands: argv lists only, no shell, a timeout, errors as one line."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from .errors import CommandError, NotInstalledError

logger = logging.getLogger(__name__)

# cron runs with PATH=/usr/bin:/bin, but postfix, postmap and friends live in sbin.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def search_path() -> str:
    parts = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p]
    return os.pathsep.join(parts + [d for d in _SBIN if d not in parts])


def which(program: str) -> Optional[str]:
    """Find ``program`` on PATH or in the sbin directories that cron's PATH leaves out."""
    return shutil.which(program, path=search_path())


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(
    argv: Sequence[str],
    *,
    input_text: Optional[str] = None,
    timeout: float = 120.0,
    check: bool = True,
    discard_stdout: bool = False,
    env: Optional[Dict[str, str]] = None,
    daemonizes: bool = False,
) -> Result:
    """Run ``argv``; with ``check``, a non-zero exit raises CommandError naming the command and its error.

    ``discard_stdout`` is for commands whose output holds secrets (``doveconf -x`` prints keys).
    ``daemonizes`` is for a command that leaves a daemon behind (``dovecot`` starting its master):
    its output goes to a file, not a pipe, since the daemon may keep the pipe open for good and
    the run would wait for it until the timeout.
    """
    if daemonizes:
        with tempfile.TemporaryFile("w+") as output:
            result = _run(argv, input_text, timeout, env, stdout=output, stderr=output)
            output.seek(0)
            result = Result(result.returncode, output.read(), "")
    else:
        stdout = subprocess.DEVNULL if discard_stdout else subprocess.PIPE
        result = _run(argv, input_text, timeout, env, stdout=stdout, stderr=subprocess.PIPE)
    if check and result.returncode != 0:
        detail = last_line(result.stderr) or last_line(result.stdout) or "no error output"
        raise CommandError(f"{' '.join(argv)} failed (exit {result.returncode}): {detail}")
    return result


def _run(
    argv: Sequence[str],
    input_text: Optional[str],
    timeout: float,
    env: Optional[Dict[str, str]],
    stdout: Any,
    stderr: Any,
) -> Result:
    program = which(argv[0])
    if program is None:
        raise NotInstalledError(f"{argv[0]} not found (searched {search_path()}): is it installed?")
    full = [program, *argv[1:]]
    logger.debug("running %s", " ".join(full))
    try:
        proc = subprocess.run(
            full,
            input=input_text,
            stdout=stdout,
            stderr=stderr,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise CommandError(f"{' '.join(argv)} could not be started: {exc.strerror}") from None
    return Result(proc.returncode, proc.stdout or "", proc.stderr or "")
