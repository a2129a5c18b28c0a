"""The fleet's network (tests/hosts/fleet.py): from the issuer, root reaches every mail node over SSH
by name, with the node's own host key already known, and Ansible reaches them all by the inventory."""

from __future__ import annotations

import pytest

from tests.hosts.fleet import INVENTORY, Fleet

pytestmark = pytest.mark.hosts


def test_the_issuer_reaches_every_node_by_name_over_ssh(fleet: Fleet) -> None:
    for node in fleet.nodes:
        fqdn = fleet.member(node).fqdn
        # BatchMode: a host key or password prompt fails instead of waiting.
        assert fleet.on_issuer(f"ssh -o BatchMode=yes root@{fqdn} hostname").stdout.strip() == fqdn


def test_every_node_has_host_keys_of_its_own(fleet: Fleet) -> None:
    keys = [node.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1] for node in fleet.nodes]
    keys.append(fleet.issuer.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1])
    assert len(set(keys)) == len(keys)


def test_ansible_pings_every_mail_node(fleet: Fleet) -> None:
    run = fleet.on_issuer(f"ANSIBLE_NOCOLOR=1 ansible -i {INVENTORY} mailnodes -m ping", check=False)
    assert run.returncode == 0, run.output
    for node in fleet.nodes:
        assert f"{fleet.member(node).fqdn} | SUCCESS" in run.stdout, run.output
