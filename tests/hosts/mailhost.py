"""What the real-host tests do on a booted host: certbot against the host's own Pebble, the plugin
as installed for Debian's certbot, and judging by TLS handshakes with SNI on every mail port."""

from __future__ import annotations

import re
import time
from typing import Dict, Iterable, List, Optional, Tuple

from tests.hosts.conftest import GUEST, Kind
from tests.hosts.machine import Machine, Result

#: Every mail port a Debian admin enables: SMTP, submission, submissions, IMAP, IMAPS, POP3, POP3S.
PORTS = (25, 587, 465, 143, 993, 110, 995)
DOMAIN = "example.test"
MYHOSTNAME = f"mailhost.{DOMAIN}"  # make-root.sh: Postfix's myhostname, the default certificate's name
ACME = ["--server", "https://127.0.0.1:14000/dir", "--non-interactive", "--agree-tos",
        "--register-unsafely-without-email", "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", "/bin/true"]  # fmt: skip


def error_line(run: Result) -> str:
    """The one line a failed certbot-mailstack run printed (warnings aside), with no traceback."""
    lines = [line for line in run.stderr.splitlines() if "WARNING" not in line]
    assert len(lines) == 1 and "Traceback" not in run.output, run.output
    return lines[0]


class Mailhost:
    def __init__(self, machine: Machine, kind: Kind) -> None:
        self.machine = machine
        self.kind = kind

    def sh(self, script: str, check: bool = True) -> Result:
        return self.machine.run(script, check=check)

    def start_pebble(self) -> None:
        self.sh(f"sh {GUEST}/pebble-up.sh")

    def certbot(self, *args: str, check: bool = True) -> Result:
        words = " ".join(f"'{a}'" for a in args)
        return self.sh(f"certbot {words}", check=check)

    def issue(self, cert_name: str, names: Iterable[str], *extra: str, install: bool = True) -> None:
        domains = [arg for name in names for arg in ("-d", name)]
        verb = ["run", "-i", "mailstack"] if install else ["certonly"]
        self.certbot(*verb, *ACME, "--cert-name", cert_name, *domains, *extra)

    def tool(self, *args: str, check: bool = True) -> Result:
        """The certbot-mailstack command the package installs."""
        words = " ".join(f"'{a}'" for a in args)
        return self.sh(f"certbot-mailstack {words}", check=check)

    def renew_as_the_distribution_does(self) -> None:
        """systemd: start Debian's certbot.service (what certbot.timer starts). OpenRC: Debian's
        /etc/cron.d/certbot line, run by cron itself (its environment comes from pam_env) in the
        next minute, without its random sleep of up to 12 hours."""
        if self.kind.init == "systemd":
            self.sh("systemctl start certbot.service")
            assert self.sh("systemctl show -p Result --value certbot.service").stdout.strip() == "success"
            return
        line = next(
            line
            for line in self.machine.path("/etc/cron.d/certbot").read_text().splitlines()
            if "certbot -q renew" in line
        )
        command = line.split(" root ", 1)[1]
        command = re.sub(r"perl -e 'sleep int\(rand\(\d+\)\)' && ", "", command)
        done = "/run/mailstack-test-renewed"
        now = self.machine.path("/etc/cron.d/certbot-now")
        now.write_text(f"* * * * * root {command}; touch {done}\n")
        try:
            self.sh(f"for i in $(seq 130); do [ -e {done} ] && exit 0; sleep 1; done; exit 1")
        finally:
            now.unlink()

    # -- judging ------------------------------------------------------------------------------

    def leaf(self, cert_name: str) -> str:
        return self.fingerprint(f"/etc/letsencrypt/live/{cert_name}/cert.pem")

    def fingerprint(self, pem: str) -> str:
        out = self.sh(f"openssl x509 -noout -fingerprint -sha256 -in {pem}")
        return out.stdout.strip().split("=", 1)[1]

    def served(self, port: int, name: Optional[str], only: str = "") -> str:
        return self.sh(f"sh {GUEST}/served.sh {port} {name or '-'} {only}", check=False).stdout.strip()

    def wait_serving(self, timeout: float = 60.0) -> None:
        """After a boot: until every port completes a handshake. Ports listening is not enough: on the
        OpenRC host Postfix answered port 25 about half a second after rc-status said it started."""
        deadline = time.monotonic() + timeout
        while any(not self.served(port, None) for port in PORTS):
            assert time.monotonic() < deadline, (
                f"{self.machine.name} serves no TLS {timeout:.0f} s after boot"
            )
            time.sleep(0.5)

    def wrong_ports(self, expected: Dict[Tuple[Optional[str], str], str]) -> List[str]:
        """Every (name, client key type) -> leaf fingerprint that some port does not serve, as
        readable lines ("" key type: any client; name None: no SNI)."""
        wrong = []
        for (name, only), want in expected.items():
            for port in PORTS:
                got = self.served(port, name, only)
                if got != want:
                    wrong.append(
                        f"{name or '(no SNI)'} {only or ''} port {port}: got {got or 'nothing'}, want {want}"
                    )
        return wrong

    def files_digest(self) -> Dict[str, str]:
        """What the plugin writes into the daemons' configuration, per file: main.cf, the map's
        sources and the drop-in (a compiled table is judged by what Postfix serves instead: postmap
        writes the same entries to different bytes)."""
        out = self.sh(
            "sha256sum /etc/postfix/main.cf /etc/dovecot/conf.d/99-mailstack-sni.conf "
            "$(ls /etc/postfix/tls_server_sni_maps* | grep -vE '[.](db|lmdb|cdb)$')"
        ).stdout
        return {path: digest for digest, path in (line.split() for line in out.splitlines())}

    def reloads_since(self, marker: str) -> Dict[str, int]:
        """How often each daemon was reloaded since ``marker`` (a journal cursor or a log offset):
        systemd's journal shows each ``systemctl reload``; without systemd the daemons' own lines in
        syslog's mail.log (Postfix's master logs ``reload``, Dovecot's ``SIGHUP received``)."""
        if self.kind.init == "systemd":
            log = self.sh(f"journalctl --no-pager -o cat --after-cursor='{marker}' _PID=1").stdout
            return {
                d: len(re.findall(rf"^Reloading {d}\.service", log, re.M)) for d in ("postfix", "dovecot")
            }
        log = self.sh(f"tail -c +{int(marker) + 1} /var/log/mail.log").stdout
        return {
            "postfix": len(re.findall(r"postfix/master\[\d+\]: reload", log)),
            "dovecot": len(re.findall(r"master: Warning: SIGHUP received - reloading", log)),
        }

    def marker(self) -> str:
        if self.kind.init == "systemd":
            out = self.sh("journalctl --no-pager -n 0 --show-cursor").stdout
            return out.strip().rsplit("cursor: ", 1)[1]
        return self.sh("stat -c %s /var/log/mail.log 2>/dev/null || echo 0").stdout.strip()

    def service_manager(self) -> str:
        """The backend ``--service-manager auto`` picks on this host."""
        return self.sh(
            "python3 -c 'from mailstack_installer import service_managers as m, "
            "settings as s; print(m.detect(s.resolve({})))'"
        ).stdout.strip()
