"""A throwaway Pebble ACME CA on free local ports."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from .certs import make_self_signed
from .ports import LOCALHOST, free_ports
from .procs import log_tail

PEBBLE_BINARY = "/usr/bin/pebble"
START_TIMEOUT = 20.0
PEBBLE_ENV = {
    "PEBBLE_VA_ALWAYS_VALID": "1",
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_WFE_NONCEREJECT": "0",
}


def _unverified_context() -> ssl.SSLContext:
    """TLS context that accepts Pebble's self-signed listener certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Pebble:
    """Pebble with always-valid challenges; use as a context manager or call start()/stop()."""

    def __init__(self, workdir: Path, *, binary: str = PEBBLE_BINARY) -> None:
        self.workdir = workdir
        self.binary = binary
        self.acme_port, self.management_port = free_ports(2)
        self.directory_url = f"https://{LOCALHOST}:{self.acme_port}/dir"
        self.management_url = f"https://{LOCALHOST}:{self.management_port}"
        self.config_path = workdir / "pebble-config.json"
        self.log_path = workdir / "pebble.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        """Write the TLS listener cert and the JSON config."""
        key, cert = make_self_signed(self.workdir, "localhost", extra_names=[LOCALHOST])
        config = {
            "pebble": {
                "listenAddress": f"{LOCALHOST}:{self.acme_port}",
                "managementListenAddress": f"{LOCALHOST}:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": 5002,
                "tlsPort": 5001,
            }
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def _get(self, url: str) -> bytes:
        """GET ``url`` without certificate verification."""
        with urllib.request.urlopen(url, timeout=5, context=_unverified_context()) as resp:
            body: bytes = resp.read()
            return body

    def start(self) -> None:
        """Start Pebble and wait until its ACME directory answers."""
        if self._proc is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        env = {**os.environ, **PEBBLE_ENV}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                last_error = f"pebble exited with {self._proc.returncode}"
                break
            try:
                self._get(self.directory_url)
                return
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"Pebble did not start ({last_error}); log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def root_ca_pem(self) -> bytes:
        """Return the PEM of the root that signs this Pebble's certificates."""
        return self._get(f"{self.management_url}/roots/0")

    def intermediate_ca_pem(self) -> bytes:
        """Return the PEM of the issuing intermediate."""
        return self._get(f"{self.management_url}/intermediates/0")

    @property
    def pid(self) -> int | None:
        """Pid of the running Pebble, if any."""
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        """Stop Pebble (SIGTERM, then SIGKILL) and reap it; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> Pebble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
