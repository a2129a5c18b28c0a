"""Run a given certbot executable against a lab Pebble with private config/work/logs dirs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .pebble import Pebble
from .procs import tail

RUN_TIMEOUT = 120.0
# --no-verify-ssl makes urllib3 warn on every request; keep error tails readable.
QUIET_WARNINGS = {"PYTHONWARNINGS": "ignore:Unverified HTTPS request"}


class Certbot:
    """One certbot state (``config_dir``, ``config_dir/work``, ``config_dir/logs``) bound to a Pebble.

    ``command`` is the certbot executable, e.g. ``[sys.prefix + "/bin/certbot"]`` or ``["/usr/bin/certbot"]``;
    ``env`` is merged over ``os.environ`` (e.g. ``CERTBOT_PLUGIN_PATH`` for Debian's certbot).
    """

    def __init__(
        self,
        pebble: Pebble,
        base_dir: Path,
        *,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.pebble = pebble
        self.base_dir = base_dir
        self.command = list(command)
        self.env = dict(env or {})
        self.config_dir = base_dir / "config"
        self.work_dir = self.config_dir / "work"
        self.logs_dir = self.config_dir / "logs"
        self.webroot = base_dir / "webroot"
        for directory in (self.config_dir, self.work_dir, self.logs_dir, self.webroot):
            directory.mkdir(parents=True, exist_ok=True)

    def common_args(self) -> list[str]:
        """Flags appended to every invocation; certbot accepts each of them with every verb."""
        return [
            "--server", self.pebble.directory_url,
            "--no-verify-ssl",
            "--config-dir", str(self.config_dir),
            "--work-dir", str(self.work_dir),
            "--logs-dir", str(self.logs_dir),
            "--non-interactive",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--no-random-sleep-on-renew",
        ]  # fmt: skip

    def webroot_args(self) -> list[str]:
        """Authenticator flags for the webroot plugin with this instance's webroot directory."""
        return ["-a", "webroot", "-w", str(self.webroot)]

    def live_dir(self, cert_name: str) -> Path:
        """Path of ``live/<cert_name>`` in this config dir."""
        return self.config_dir / "live" / cert_name

    def run(
        self, *args: str, check: bool = True, timeout: float = RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command + args + common flags``; with ``check`` raise RuntimeError on a non-zero exit."""
        argv = [*self.command, *args, *self.common_args()]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**QUIET_WARNINGS, **os.environ, **self.env},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"certbot timed out after {timeout} s: {argv}") from exc
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"certbot exit {proc.returncode}: {argv}\n"
                f"stdout:\n{tail(proc.stdout)}\nstderr:\n{tail(proc.stderr)}"
            )
        return proc
