"""Four booted hosts on a private network with SSH between them, for the fleet suite (docs/fleet.md):
an issuer (the Ansible control host, with certbot) and three mail nodes, one of each kind.

The network is a Linux bridge on this machine that only the four containers join (nspawn's
``--network-bridge``), with fixed addresses and every name in every /etc/hosts. The issuer has
root's SSH key; each node trusts it, and the issuer knows each node's own host key, scanned from the
node (never accepted blindly). ``stop()`` tears everything down, whatever happened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from tests.hosts.conftest import Kind, PreparedRoots, install_package
from tests.hosts.machine import Machine, Result

DOMAIN = "fleet.test"
INVENTORY = "/root/fleet/inventory.ini"
SSHD_TIMEOUT = 60.0


@dataclass(frozen=True)
class Member:
    name: str  # its host name within DOMAIN
    kind: Kind
    host: int  # its address within the fleet's subnet

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"


ISSUER = Member("issuer", Kind("bookworm", "systemd"), 10)
NODES = (
    Member("node1", Kind("trixie", "systemd"), 11),
    Member("node2", Kind("bookworm", "systemd"), 12),
    Member("node3", Kind("bookworm", "openrc"), 13),
)


def _each(machines: Sequence[Machine], step: Callable[[Machine], None]) -> None:
    """``step`` on every machine side by side (booting is mostly waiting); returns when all are done,
    raising the first failure."""
    with ThreadPoolExecutor(len(machines)) as pool:
        list(pool.map(step, machines))


class Fleet:
    """The issuer and the nodes on the bridge ``msf<pid>``: ``with Fleet(...) as fleet``, or start()
    and stop() (both tear down on failure; stop() may be called again)."""

    def __init__(
        self, roots: PreparedRoots, workdir: Path, subnet: str = "10.77.0.0/24", install: bool = True
    ) -> None:
        self.roots = roots
        self.workdir = workdir
        self.network = ipaddress.IPv4Network(subnet)
        self.install = install  # the package on the nodes (the issuer needs none)
        self.bridge = f"msf{os.getpid()}"
        self.members: Dict[str, Member] = {}  # by machine name
        self.machines: List[Machine] = []  # the issuer first
        self.timings: Dict[str, float] = {}  # seconds per phase of start()
        self._forward: Optional[List[str]] = None

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def issuer(self) -> Machine:
        return self.machines[0]

    @property
    def nodes(self) -> List[Machine]:
        return self.machines[1:]

    def member(self, machine: Machine) -> Member:
        return self.members[machine.name]

    def release_of(self, machine: Machine) -> str:
        return self.member(machine).kind.release

    def ip(self, member: Member) -> str:
        return str(self.network.network_address + member.host)

    def on_issuer(self, script: str, *, check: bool = True, timeout: float = 300.0) -> Result:
        return self.issuer.run(script, check=check, timeout=timeout)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Every machine killed and deleted, then the bridge, even if one of them fails."""
        with contextlib.ExitStack() as undo:
            undo.callback(
                subprocess.run, ["ip", "link", "del", self.bridge], capture_output=True, check=False
            )
            if self._forward:
                undo.callback(subprocess.run, ["iptables", "-D", *self._forward], check=False)
            for machine in self.machines:
                undo.callback(machine.destroy)
            self.machines, self.members, self._forward = [], {}, None

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.timings[phase] = time.monotonic() - start

    def _start(self) -> None:
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        self._let_bridge_forward()
        with self._timed("roots"):
            for member in (ISSUER, *NODES):  # one at a time: PreparedRoots makes each on first use
                workdir = self.workdir / member.name
                workdir.mkdir(parents=True)
                name = f"{member.name}-{os.getpid()}"
                base = self.roots.get(member.kind)
                self.machines.append(Machine(base, workdir, member.kind.init, name, bridge=self.bridge))
                self.members[name] = member
        with self._timed("boot"):
            _each(self.machines, self._boot)
        if self.install:
            with self._timed("install"):
                _each(self.nodes, install_package)
        with self._timed("ssh"):
            self._ssh()
        self._inventory()

    def _let_bridge_forward(self) -> None:
        """Where br_netfilter hands bridged packets to iptables (Docker hosts, whose FORWARD policy is
        DROP), let the fleet's own traffic through."""
        calls = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if shutil.which("iptables") and calls.exists() and calls.read_text().strip() == "1":
            rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
            subprocess.run(["iptables", "-I", *rule], check=True)
            self._forward = rule

    def _boot(self, machine: Machine) -> None:
        """A copy of the member's root with its name and everyone's address, booted on the bridge."""
        member = self.member(machine)
        machine.copy()
        machine.path("/etc/hostname").write_text(f"{member.fqdn}\n")
        with machine.path("/etc/hosts").open("a") as hosts:
            hosts.writelines(f"{self.ip(m)}\t{m.fqdn} {m.name}\n" for m in (ISSUER, *NODES))
        machine.boot()
        machine.address(f"{self.ip(member)}/{self.network.prefixlen}")
        machine.run(f"hostname {member.fqdn}")

    def _ssh(self) -> None:
        """Root's key on the issuer, trusted by every node; the nodes' host keys as scanned."""
        self.on_issuer(
            "install -d -m 0700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519"
        )
        public = self.issuer.path("/root/.ssh/id_ed25519.pub").read_text()
        for node in self.nodes:
            ssh_dir = node.path("/root/.ssh")
            ssh_dir.mkdir(exist_ok=True)
            ssh_dir.chmod(0o700)
            (ssh_dir / "authorized_keys").write_text(public)
            (ssh_dir / "authorized_keys").chmod(0o600)
        _each(self.nodes, self._wait_sshd)
        # Names for ssh, addresses for Ansible (its ansible_host).
        targets = [t for n in self.nodes for t in (self.member(n).fqdn, self.ip(self.member(n)))]
        scan = self.on_issuer(f"ssh-keyscan -T 10 {' '.join(targets)} >/root/.ssh/known_hosts")
        known = self.issuer.path("/root/.ssh/known_hosts").read_text().splitlines()
        missing = set(targets) - {line.split()[0] for line in known if line.strip()}
        if missing:
            raise RuntimeError(f"ssh-keyscan got no host key from {sorted(missing)}:\n{scan.stderr}")

    def _wait_sshd(self, node: Machine) -> None:
        """Until the sshd its init started at boot listens (OpenRC may start it after Dovecot)."""
        deadline = time.monotonic() + SSHD_TIMEOUT
        while not node.run("ss -Hltn 'sport = :22'").stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name}: sshd not listening {SSHD_TIMEOUT:.0f} s after boot")
            time.sleep(0.2)

    def _inventory(self) -> None:
        lines = [f"{self.member(n).fqdn} ansible_host={self.ip(self.member(n))}" for n in self.nodes]
        inventory = self.issuer.path(INVENTORY)
        inventory.parent.mkdir(parents=True, exist_ok=True)
        inventory.write_text(
            "[mailnodes]\n" + "".join(f"{line}\n" for line in lines) + "\n[mailnodes:vars]\n"
            "ansible_user=root\nansible_python_interpreter=/usr/bin/python3\n"
        )
