"""A private Dovecot 2.3 instance (own base_dir, log and config) on free local ports."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from pathlib import Path
from types import TracebackType

from .certs import make_self_signed
from .fs import ReachableDir
from .ports import LOCALHOST, free_ports, wait_for_ports, wait_for_ports_closed
from .procs import kill_and_wait, kill_leftovers, log_tail, pid_alive, read_pid, run_checked, wait_gone

DEFAULT_NAME = "mail.default.test"
DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
DOVECONF = "/usr/bin/doveconf"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
SERVICES = ("imap", "imaps", "pop3", "pop3s")
# Unix socket paths are limited to 108 bytes; base_dir gets names up to ~25 characters long.
MAX_BASE_DIR_LEN = 70
MAIL_USER = "dovecot"


#: How dovecot.conf includes conf.d/ (and with it the drop-in), by style: as Debian does, by
#: absolute path, by absolute path with !include_try, or the drop-in alone from local.conf.
INCLUDES = {
    "relative": "!include_try conf.d/*.conf",
    "absolute": "!include {dir}/conf.d/*.conf",
    "include_try": "!include_try {dir}/conf.d/*.conf",
    "local.conf": "!include_try {dir}/local.conf",
}


class DovecotInstance:
    """Dovecot run with ``dovecot -c config_file``; never reads /etc/dovecot or uses /run/dovecot."""

    def __init__(self, base: Path, *, hostname: str = DEFAULT_NAME, include: str = "relative") -> None:
        self.base = base
        self.hostname = hostname
        self.include = include
        self.config_dir = base / "dovecot"
        self.config_file = self.config_dir / "dovecot.conf"
        self.conf_d = self.config_dir / "conf.d"
        self.certs_dir = base / "dovecot-certs"
        self.log_path = base / "dovecot.log"
        self.ports: dict[str, int] = dict(zip(SERVICES, free_ports(len(SERVICES))))
        self._run = ReachableDir(base / "dovecot-run", prefix="lab-dovecot-", max_len=MAX_BASE_DIR_LEN)
        self.base_dir = self._run.preferred
        self._mail = ReachableDir(base / "dovecot-mail", prefix="lab-dovecot-mail-")
        self.mail_dir = self._mail.preferred
        self.default_key: Path | None = None
        self.default_cert: Path | None = None
        self._master_pid: int | None = None

    @property
    def pid_file(self) -> Path:
        """The master's pid file (``base_dir/master.pid``)."""
        return self.base_dir / "master.pid"

    @property
    def master_pid(self) -> int | None:
        """Pid of the running master process, if any."""
        pid = read_pid(self.pid_file)
        return pid if pid is not None and pid_alive(pid) else None

    def dovecot_conf(self) -> str:
        """Return the text of dovecot.conf."""
        assert self.default_key is not None and self.default_cert is not None
        imap, imaps, pop3, pop3s = (self.ports[name] for name in SERVICES)
        return f"""\
# Written by tests.lab.dovecot: a throwaway instance.
instance_name = lab-{imap}
base_dir = {self.base_dir}
state_dir = {self.base_dir}/state
log_path = {self.log_path}
listen = {LOCALHOST}
protocols = imap pop3
shutdown_clients = yes

ssl = yes
ssl_cert = <{self.default_cert}
ssl_key = <{self.default_key}

# Any user logs in with password "lab"; mail is stored as the dovecot user.
auth_mechanisms = plain
passdb {{
  driver = static
  args = password=lab
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_USER} home={self.mail_dir}/%u
}}
first_valid_uid = 1
mail_location = maildir:~/Maildir

service imap-login {{
  inet_listener imap {{
    address = {LOCALHOST}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {LOCALHOST}
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {LOCALHOST}
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = {LOCALHOST}
    port = {pop3s}
    ssl = yes
  }}
}}

{INCLUDES[self.include].format(dir=self.config_dir)}
"""

    def _prepare(self) -> None:
        """Create directories, the default certificate (once) and dovecot.conf.

        dovecot.conf is rewritten only if missing or if ``base_dir``/the mail directory moved; the
        plugin writes ``conf.d/``, which is left alone.
        """
        self.conf_d.mkdir(parents=True, exist_ok=True)
        old_paths = (self.base_dir, self.mail_dir)
        self.base_dir = self._run.get()
        self.mail_dir = self._mail.get()
        owner = pwd.getpwnam(MAIL_USER)
        os.chown(self.mail_dir, owner.pw_uid, owner.pw_gid)
        self.default_key = self.certs_dir / f"{self.hostname}.key"
        self.default_cert = self.certs_dir / f"{self.hostname}.crt"
        if not (self.default_key.exists() and self.default_cert.exists()):
            make_self_signed(self.certs_dir, self.hostname)
        if not self.config_file.exists() or old_paths != (self.base_dir, self.mail_dir):
            self.config_file.write_text(self.dovecot_conf())
        # conf.d is never empty on a real host ("!include" of a pattern that matches nothing fails).
        (self.conf_d / "10-lab.conf").write_text("# Written by tests.lab.dovecot.\n")
        if self.include == "local.conf":
            (self.config_dir / "local.conf").write_text(f"!include_try {self.conf_d}/99-mailstack-sni.conf\n")

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c config_file ARGS`` and return its stdout."""
        return run_checked([DOVEADM, "-c", str(self.config_file), *args]).stdout

    def doveconf(self, *args: str) -> str:
        """Run ``doveconf -c config_file ARGS`` and return its stdout."""
        return run_checked([DOVECONF, "-c", str(self.config_file), *args]).stdout

    def start(self) -> None:
        """Prepare the instance, start the master and wait until every port accepts connections."""
        if self.master_pid is not None:
            return
        self._prepare()
        try:
            run_checked([DOVECOT, "-c", str(self.config_file)])
            self._master_pid = read_pid(self.pid_file)
            if not wait_for_ports(self.ports.values(), timeout=START_TIMEOUT):
                raise RuntimeError(f"Dovecot ports {self.ports} not listening")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\nlog {self.log_path}:\n{log_tail(self.log_path)}") from exc

    def reload(self) -> None:
        """Run ``doveadm -c config_file reload`` (exit 0 even when the new config is bad: check the log)."""
        self.doveadm("reload")

    def stop(self, *, graceful: bool = False) -> None:
        """Stop the master and its children and confirm they are gone; safe to call when not running.

        By default SIGTERM goes to the master's process group (gone in ~0.05 s); ``graceful`` uses
        ``doveadm stop`` instead, where the master waits for its children (~1.5-3 s).  SIGKILL is the
        fallback either way.
        """
        pid = self.master_pid or self._master_pid
        self._master_pid = None
        if pid is not None and pid_alive(pid):
            if graceful or not _leads_own_group(pid):
                with contextlib.suppress(RuntimeError):
                    self.doveadm("stop")
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
            if not wait_gone(pid, STOP_TIMEOUT):
                kill_and_wait(pid)
            wait_for_ports_closed(self.ports.values(), timeout=5.0)
        # A master whose pid file was never read (it is written after dovecot returns) or is gone
        # is still found by its config file, so no test leaves a Dovecot behind.
        kill_leftovers(str(self.config_file))
        self._run.cleanup()
        self._mail.cleanup()

    def __enter__(self) -> DovecotInstance:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _leads_own_group(pid: int) -> bool:
    """Tell whether ``pid`` is its own process group leader (the daemonized Dovecot master is)."""
    try:
        return os.getpgid(pid) == pid and os.getpgid(0) != pid
    except ProcessLookupError:
        return False
