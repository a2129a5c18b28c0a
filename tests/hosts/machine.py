"""A Debian system booted with ``systemd-nspawn -b`` in its own network namespace, for the real-host suite.

Each test boots a copy of a prepared root (tests/hosts/make-root.sh, then the plugin installed as the
README says), runs commands inside with ``nsenter`` and always kills it, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

BOOT_TIMEOUT = 90.0


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class CommandFailed(AssertionError):
    pass


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _container_init(nspawn: int) -> int:
    """The container's PID 1 (pid 1 in its own PID namespace) among nspawn's children and theirs, or 0.
    Not just nspawn's first child: for a few milliseconds, longer on a busy machine, that is nspawn's
    helper, whose child init is; a host taken for the helper never boots and is never killed."""
    for pid in [p for child in _children(nspawn) for p in (child, *_children(child))]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1":
            return pid
    return 0


class Machine:
    """One booted copy of ``base`` (a root directory); ``init`` is "systemd" or "openrc"."""

    def __init__(self, base: Path, workdir: Path, init: str, name: str, bridge: Optional[str] = None) -> None:
        self.base = base
        #: A Linux bridge to join (the fleet suite's private network), else a network of its own.
        self.bridge = bridge
        self.root = workdir / "root"
        self.init = init
        self.name = name
        self.log_path = workdir / "console.log"
        self._nspawn: Optional[subprocess.Popen[bytes]] = None
        self.pid1 = 0

    # -- life cycle ---------------------------------------------------------------------------

    def copy(self) -> None:
        """The root copied, with SSH host keys of its own (make-root.sh leaves none to share)."""
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.base), str(self.root)], check=True)
        subprocess.run(["chroot", str(self.root), "ssh-keygen", "-A"], check=True, capture_output=True)

    def boot(self) -> None:
        with open(self.log_path, "ab") as log:
            self._nspawn = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D", str(self.root),
                 "-M", self.name, *self._network(), "-b"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise RuntimeError(f"{self.name} did not boot:\n{self.console_tail()}")
            self.pid1 = _container_init(self._nspawn.pid)
            if self.pid1:
                break
            time.sleep(0.1)
        self.wait_booted(deadline)

    def _network(self) -> List[str]:
        return [f"--network-bridge={self.bridge}"] if self.bridge else ["--private-network"]

    def address(self, cidr: str) -> None:
        """Give the interface nspawn made on the bridge (host0) the IPv4 address ``cidr``."""
        self.run(f"ip addr add {cidr} dev host0 && ip link set host0 up")

    def wait_booted(self, deadline: float) -> None:
        """Until init has started the runlevel's services (both daemons answer on loopback)."""
        while time.monotonic() < deadline:
            if self.init == "systemd":
                state = self.run("systemctl is-system-running", check=False).stdout.strip()
                booted = state in ("running", "degraded")
            else:
                booted = (
                    self.run("rc-status default | grep -q 'dovecot.*started'", check=False).returncode == 0
                )
            if booted and self.run("ss -Hltn 'sport = :143'", check=False).stdout.strip():
                return
            time.sleep(0.3)
        raise RuntimeError(
            f"{self.name} did not finish booting in {BOOT_TIMEOUT:.0f} s:\n{self.console_tail()}"
        )

    def stop(self) -> None:
        """Kill the container (its init first: the whole PID namespace goes with it) and reap nspawn."""
        proc, self._nspawn = self._nspawn, None
        if proc is None:
            return
        pid1 = self.pid1 or _container_init(proc.pid)  # a boot that failed early had not seen it
        if pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.pid1 = 0

    def reboot(self) -> None:
        """Power off and boot the same root again, as a reboot of the server would."""
        self.stop()
        self.boot()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def console_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"

    # -- inside -------------------------------------------------------------------------------

    def run(self, script: str, *, check: bool = True, timeout: float = 300.0) -> Result:
        """Run ``script`` with /bin/sh inside, as root, in the container's namespaces and a login-like
        environment."""
        argv = ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "--",
                "/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root", "LC_ALL=C.UTF-8", "/bin/sh", "-c", script]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandFailed(f"{self.name}: `{script}` exited {proc.returncode}:\n{result.output[-3000:]}")
        return result

    def path(self, inside: str) -> Path:
        """A path of the container's file system, seen from outside."""
        return self.root / inside.lstrip("/")
