"""A private Postfix instance (own config, queue and data directories) on free local ports."""

from __future__ import annotations

import contextlib
import os
import pwd
from pathlib import Path
from types import TracebackType

from .certs import make_self_signed
from .fs import ReachableDir
from .ports import LOCALHOST, free_ports, wait_for_ports, wait_for_ports_closed
from .procs import kill_and_wait, log_tail, pid_alive, read_pid, run_checked, wait_gone

DEFAULT_NAME = "mail.default.test"
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
MAIL_OWNER = "postfix"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
SERVICES = ("smtp", "submission", "smtps")

# Internal services from Debian's master.cf, all with chroot = n.
_INTERNAL_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    """Postfix run with ``postfix -c config_dir``; never reads or writes /etc/postfix/main.cf."""

    def __init__(self, base: Path, *, hostname: str = DEFAULT_NAME) -> None:
        self.base = base
        self.hostname = hostname
        self.config_dir = base / "postfix"
        self.queue_dir = base / "postfix-queue"
        self._data = ReachableDir(base / "postfix-data", prefix="lab-postfix-data-")
        self.data_dir = self._data.preferred
        self.certs_dir = base / "postfix-certs"
        self.log_path = base / "postfix.log"
        self.ports: dict[str, int] = dict(zip(SERVICES, free_ports(len(SERVICES))))
        self.default_key: Path | None = None
        self.default_cert: Path | None = None
        self._master_pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment that points Postfix commands at this instance (``MAIL_CONFIG``)."""
        return {**os.environ, "MAIL_CONFIG": str(self.config_dir)}

    @property
    def pid_file(self) -> Path:
        """The master's pid file (``queue_directory/pid/master.pid``)."""
        return self.queue_dir / "pid" / "master.pid"

    @property
    def master_pid(self) -> int | None:
        """Pid of the running master process, if any."""
        pid = read_pid(self.pid_file)
        return pid if pid is not None and pid_alive(pid) else None

    def main_cf(self) -> str:
        """Return the text of main.cf."""
        assert self.default_key is not None and self.default_cert is not None
        return f"""\
# Written by tests.lab.postfix: a throwaway instance; edit with postconf -c {self.config_dir}.
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = {MAIL_OWNER}
maillog_file = {self.log_path}
maillog_file_prefixes = {self.base}
myhostname = {self.hostname}
mydomain = {self.hostname.partition(".")[2] or self.hostname}
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = {LOCALHOST}
inet_protocols = ipv4
alias_maps =
alias_database =
relayhost =
default_transport = error:lab instance does not deliver mail
relay_transport = error:lab instance does not deliver mail
local_transport = error:lab instance does not deliver mail
smtpd_banner = $myhostname ESMTP lab
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = may
smtpd_tls_chain_files = {self.default_key}, {self.default_cert}
smtpd_tls_loglevel = 1
"""

    def master_cf(self) -> str:
        """Return the text of master.cf: three smtpd listeners plus the internal services."""
        smtp, submission, smtps = (self.ports[name] for name in SERVICES)
        return f"""\
# Written by tests.lab.postfix.
{LOCALHOST}:{smtp} inet n - n - - smtpd
  -o syslog_name=postfix/smtp
{LOCALHOST}:{submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
{LOCALHOST}:{smtps} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
{_INTERNAL_SERVICES}"""

    def _prepare(self) -> None:
        """Create directories; on first start also the default certificate, main.cf and master.cf.

        Later starts keep main.cf (the plugin edits it) and only repoint ``data_directory`` if needed.
        """
        owner = pwd.getpwnam(MAIL_OWNER)
        for directory in (self.config_dir, self.queue_dir, self.certs_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        self.data_dir = self._data.get()
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        self.data_dir.chmod(0o700)
        self.default_key = self.certs_dir / f"{self.hostname}.key"
        self.default_cert = self.certs_dir / f"{self.hostname}.crt"
        if not (self.default_key.exists() and self.default_cert.exists()):
            make_self_signed(self.certs_dir, self.hostname)
        main_cf = self.config_dir / "main.cf"
        if not main_cf.exists():
            main_cf.write_text(self.main_cf())
            (self.config_dir / "master.cf").write_text(self.master_cf())
        elif self.postconf("-h", "data_directory").strip() != str(self.data_dir):
            self.postconf("-e", f"data_directory = {self.data_dir}")

    def postfix(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``postfix -c config_dir ARGS`` and return its stdout."""
        return run_checked([POSTFIX, "-c", str(self.config_dir), *args], timeout=timeout).stdout

    def postconf(self, *args: str) -> str:
        """Run ``postconf -c config_dir ARGS`` and return its stdout."""
        return run_checked([POSTCONF, "-c", str(self.config_dir), *args]).stdout

    def start(self) -> None:
        """Prepare the instance, start the master and wait until every port accepts connections."""
        if self.master_pid is not None:
            return
        self._prepare()
        try:
            self.postfix("start")
            self._master_pid = read_pid(self.pid_file)
            if not wait_for_ports(self.ports.values(), timeout=START_TIMEOUT):
                raise RuntimeError(f"Postfix ports {self.ports} not listening")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\nlog {self.log_path}:\n{log_tail(self.log_path)}") from exc

    def reload(self) -> None:
        """Run ``postfix -c config_dir reload``."""
        self.postfix("reload")

    def stop(self) -> None:
        """Stop the master (``postfix stop``, else kill its pid); safe to call when not running."""
        pid = self.master_pid or self._master_pid
        self._master_pid = None
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(RuntimeError):
                self.postfix("stop", timeout=STOP_TIMEOUT)
            if not wait_gone(pid, STOP_TIMEOUT):
                kill_and_wait(pid)
            wait_for_ports_closed(self.ports.values(), timeout=5.0)
        self._data.cleanup()

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
