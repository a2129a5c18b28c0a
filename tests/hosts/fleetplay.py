"""The fleet scenario of docs/fleet.md on booted hosts (tests/hosts/fleet.py): the issuer holds certbot,
Pebble (the ACME server) and Ansible from Debian; the mail nodes get certbot-mailstack from the
collection's node role and their certificates from its rolling playbook, over SSH.

Shared by tests/hosts/test_fleet.py (which asserts) and scripts/fleet_demo.py (which prints).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from tests.hosts.conftest import GUEST, REPO
from tests.hosts.fleet import INVENTORY, Fleet
from tests.hosts.machine import Machine, Result
from tests.hosts.mailhost import ACME

#: Where the scenario keeps its files on the issuer (the inventory is the fleet's).
HOME = "/root/fleet"
VARS = f"{HOME}/vars.yml"
HOOK_LOG = "/var/log/mailstack-fleet.log"
#: The roots verify trusts on each node: Pebble's, and those of bulk lineages.
CA_FILE = "/etc/ssl/mailstack-fleet-roots.pem"
COLLECTION = "ansible/ansible_collections/mailstack/fleet"

SITE = """\
- name: Install certbot-mailstack on the mail nodes, and the roots verify trusts
  hosts: mailnodes
  gather_facts: false
  roles: [mailstack.fleet.node]
  tasks:
    - name: The roots the verify step checks chains against
      ansible.builtin.copy:
        src: /root/fleet/roots.pem
        dest: /etc/ssl/mailstack-fleet-roots.pem
        mode: "0644"

- name: The renewal hook on the issuer
  hosts: localhost
  connection: local
  gather_facts: false
  roles: [mailstack.fleet.issuer]
"""


@dataclass(frozen=True)
class PlayResult:
    returncode: int
    output: str
    seconds: float
    recap: Dict[str, Dict[str, int]]  # per inventory host: ok, changed, failed, ...


def parse_recap(output: str) -> Dict[str, Dict[str, int]]:
    recap: Dict[str, Dict[str, int]] = {}
    section = output.split("PLAY RECAP", 1)[-1] if "PLAY RECAP" in output else ""
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", section, re.M):
        recap[host] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", fields)}
    return recap


class FleetPlay:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.issuer: Machine = fleet.issuer
        self.nodes: List[Machine] = fleet.nodes

    def sh(self, script: str, check: bool = True, timeout: float = 1800.0) -> Result:
        return self.issuer.run(script, check=check, timeout=timeout)

    # -- setting up ---------------------------------------------------------------------------

    def hosts(self) -> List[str]:
        """The mail nodes' names in the inventory, in order."""
        return [self.fleet.member(node).fqdn for node in self.nodes]

    def prepare(self, debs: Dict[str, Path]) -> None:
        """Pebble on the issuer; the collection built and installed there with ansible-galaxy; each
        node's package (per release, ``debs``) given to the node role; the site playbook run."""
        self.sh(f"sh {GUEST}/pebble-up.sh")
        home = self.issuer.path(HOME)
        shutil.copytree(REPO / COLLECTION, home / "collection", ignore=shutil.ignore_patterns("*.tar.gz"))
        self.sh(f"cd {HOME} && ansible-galaxy collection build --force collection >/dev/null && "
                "ansible-galaxy collection install --force mailstack-fleet-*.tar.gz >/dev/null")  # fmt: skip
        (home / "debs").mkdir(exist_ok=True)
        host_vars = home / "host_vars"
        host_vars.mkdir(exist_ok=True)
        for host, node in zip(self.hosts(), self.nodes):
            deb = debs[self.fleet.release_of(node)]
            shutil.copy(deb, home / "debs" / f"{host}-{deb.name}")
            (host_vars / f"{host}.yml").write_text(f"mailstack_deb: {HOME}/debs/{host}-{deb.name}\n")
        self.issuer.path(VARS).write_text(
            f"mailstack_verify_ca_file: {CA_FILE}\n"
            "mailstack_serial: 1\n"
            f"mailstack_fleet_inventory: {INVENTORY}\n"
            f"mailstack_fleet_extra_vars: '@{VARS}'\n"
        )
        self.sh(
            "python3 -c 'import ssl, urllib.request; ctx = ssl._create_unverified_context(); "
            'print(urllib.request.urlopen("https://127.0.0.1:15000/roots/0", context=ctx).read().decode())\' '
            f">{HOME}/roots.pem"
        )
        self.issuer.path(f"{HOME}/site.yml").write_text(SITE)
        result = self.play(f"{HOME}/site.yml")
        assert result.returncode == 0, result.output[-4000:]

    def issue(self, lineages: Sequence[str]) -> None:
        """One lineage per name ``mail.<lineage>``, from Pebble (challenges always pass)."""
        acme = " ".join(f"'{a}'" for a in ACME)
        for lineage in lineages:
            self.sh(f"certbot certonly {acme} --cert-name {lineage} -d mail.{lineage} --key-type ecdsa -q")

    def bulk(self, count: int, first: int = 0) -> List[str]:
        """``count`` lineages made directly (thousands a minute; no ACME), their CA added to the roots
        (the nodes get it at the next prepare)."""
        self.sh(f"python3 {GUEST}/make-lineages.py {count} /etc/letsencrypt {first} && "
                f"cat /etc/letsencrypt/bulk-ca-{first}.pem >>{HOME}/roots.pem")  # fmt: skip
        self.play_ad_hoc(f"-m ansible.builtin.copy -a 'src={HOME}/roots.pem dest={CA_FILE} mode=0644'")
        return [f"d{i}" for i in range(first, first + count)]

    # -- running ------------------------------------------------------------------------------

    def play(self, playbook: str = "mailstack.fleet.deploy", *args: str) -> PlayResult:
        words = " ".join(f"'{a}'" for a in args)
        start = time.monotonic()
        run = self.sh(f"cd {HOME} && ANSIBLE_NOCOLOR=1 ansible-playbook -i {INVENTORY} -e @{VARS} "
                      f"{playbook} {words}", check=False)  # fmt: skip
        seconds = time.monotonic() - start
        print(f"[fleet] {playbook} {words}: {seconds:.1f} s")  # shown by pytest -s and in failures
        return PlayResult(run.returncode, run.output, seconds, parse_recap(run.stdout))

    def play_ad_hoc(self, module_args: str) -> None:
        self.sh(f"ANSIBLE_NOCOLOR=1 ansible -i {INVENTORY} mailnodes {module_args} >/dev/null")

    def renew(self, lineage: str) -> str:
        """``certbot renew`` of one lineage on the issuer, as its timer would: the deploy hook the
        issuer role installed runs the playbook for it. What the hook logged."""
        before = self.issuer.path(HOOK_LOG).stat().st_size if self.issuer.path(HOOK_LOG).exists() else 0
        self.sh(f"certbot renew -q --force-renewal --no-random-sleep-on-renew --cert-name {lineage}",
                check=False)  # fmt: skip
        return self.issuer.path(HOOK_LOG).read_text()[before:]

    def dovecot(self, node: Machine, action: str) -> None:
        """Stop or start Dovecot on ``node`` as its init system does."""
        node.run(f"systemctl {action} dovecot" if node.init == "systemd" else f"rc-service dovecot {action}")

    # -- judging ------------------------------------------------------------------------------

    def issued_leaf(self, lineage: str) -> str:
        """The SHA-256 of the lineage's leaf on the issuer, as verify --json gives it (read from
        outside: one nsenter per lineage would cost minutes at 1,000)."""
        pem = self.issuer.path(f"/etc/letsencrypt/live/{lineage}/cert.pem").resolve().read_text()
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()

    def node_files(self, node: Machine) -> Dict[str, str]:
        """The lineage files on a node, by content."""
        out = node.run("cd /etc/letsencrypt && sha256sum live/*/*.pem 2>/dev/null || true").stdout
        return {path: digest for digest, path in (line.split() for line in out.splitlines())}

    def served(self, node: Machine) -> Dict[str, Any]:
        """``certbot-mailstack verify --json`` on the node: what each name gets on each port."""
        run = node.run(f"certbot-mailstack verify --json --ca-file {CA_FILE}", check=False, timeout=900)
        doc: Dict[str, Any] = json.loads(run.stdout) if run.stdout.strip() else {"error": run.stderr}
        return doc
