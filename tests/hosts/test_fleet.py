"""The fleet (docs/fleet.md) on four booted hosts over SSH: certificates issued once on the issuer,
deployed to three mail nodes (Debian 13 systemd, Debian 12 systemd, Debian 12 OpenRC) by the
collection's playbook, a node at a time, each verified by TLS handshakes.

The tests run in order on one fleet: from scratch; a second run that changes nothing; a renewal
whose deploy hook changes exactly the renewed lineage on every node; a node whose Dovecot is stopped
failing alone, keeping what it had, and the play stopping before the next node.
"""

from __future__ import annotations

from typing import Dict, Iterator, List

import pytest

from tests.hosts.conftest import PreparedRoots, _package
from tests.hosts.fleet import Fleet
from tests.hosts.fleetplay import FleetPlay, PlayResult
from tests.hosts.machine import Machine

pytestmark = pytest.mark.hosts

LINEAGES = ["shop1.test", "shop2.test", "shop3.test"]


@pytest.fixture(scope="module")
def fleet(prepared_roots: PreparedRoots, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetPlay]:
    """The booted fleet with the collection installed on the issuer, the plugin on the nodes (by the
    node role) and the issuer's renewal hook (by the issuer role); torn down after the last test."""
    hosts = Fleet(prepared_roots, tmp_path_factory.mktemp("fleet"), install=False)  # the node role installs
    try:
        hosts.start()
        play = FleetPlay(hosts)
        play.prepare({release: _package(release) for release in ("bookworm", "trixie")})
        play.issue(LINEAGES)
        yield play
    finally:
        hosts.stop()


def served_by(play: FleetPlay, node: Machine) -> Dict[str, set]:  # type: ignore[type-arg]
    """Per name: the set of leaf fingerprints the node's ports serve for it (verify --json)."""
    doc = play.served(node)
    found: Dict[str, set] = {}  # type: ignore[type-arg]
    for check in doc["checks"]:  # type: ignore[attr-defined]
        found.setdefault(check["name"], set()).add(check["served"])
    return found


def expected(play: FleetPlay, lineages: List[str] = LINEAGES) -> Dict[str, set]:  # type: ignore[type-arg]
    return {f"mail.{lineage}": {play.issued_leaf(lineage)} for lineage in lineages}


def assert_recap(result: PlayResult, changed: Dict[str, int]) -> None:
    assert result.returncode == 0, result.output[-4000:]
    got = {host: counts["changed"] for host, counts in result.recap.items()}
    assert got == changed, result.output[-4000:]
    # deployed, then verified (skipped where nothing changed: nothing to verify)
    verified = {
        host: (c["ok"], c["skipped"]) == ((2, 0) if changed[host] else (1, 1))
        for host, c in result.recap.items()
    }
    assert all(c["failed"] == 0 for c in result.recap.values()) and all(verified.values()), result.output[
        -4000:
    ]


def test_the_issuer_reaches_every_node_over_ssh_and_each_has_its_own_host_key(fleet: FleetPlay) -> None:
    for node in fleet.nodes:
        fqdn = fleet.fleet.member(node).fqdn
        # BatchMode: a host key or password prompt fails instead of waiting.
        assert fleet.sh(f"ssh -o BatchMode=yes root@{fqdn} hostname").stdout.strip() == fqdn
    keys = {m.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1] for m in fleet.fleet.machines}
    assert len(keys) == len(fleet.fleet.machines)


def test_the_playbook_serves_every_name_on_every_node_and_port(fleet: FleetPlay) -> None:
    hosts = fleet.hosts()
    assert_recap(fleet.play(), {host: 1 for host in hosts})
    for node in fleet.nodes:
        doc = fleet.served(node)
        assert doc["summary"] == {"ok": 21, "problem": 0, "error": 0, "skipped": 0}, doc  # 3 names x 7 ports
        assert served_by(fleet, node) == expected(fleet)
        mode = node.run("stat -c %a /etc/letsencrypt/live/shop1.test/privkey.pem").stdout.strip()
        assert mode == "600"


def test_a_second_run_changes_nothing(fleet: FleetPlay) -> None:
    before = [fleet.node_files(node) for node in fleet.nodes]
    assert_recap(fleet.play(), {host: 0 for host in fleet.hosts()})
    assert [fleet.node_files(node) for node in fleet.nodes] == before


def test_a_renewal_changes_exactly_the_renewed_lineage_on_every_node(fleet: FleetPlay) -> None:
    before = [fleet.node_files(node) for node in fleet.nodes]
    log = fleet.renew("shop2.test")  # the issuer's deploy hook runs the playbook for it
    assert "renewed shop2.test" in log and "failed=1" not in log, log[-4000:]
    for node, files in zip(fleet.nodes, before):
        now = fleet.node_files(node)
        assert {path for path in now if now[path] != files.get(path)} == {
            "live/shop2.test/fullchain.pem", "live/shop2.test/privkey.pem"}  # fmt: skip
        assert served_by(fleet, node) == expected(fleet)


def test_a_node_whose_dovecot_is_stopped_fails_alone_and_the_play_stops(fleet: FleetPlay) -> None:
    node1, node2, node3 = fleet.nodes
    old_leaf = fleet.issued_leaf("shop3.test")
    before = [fleet.node_files(node) for node in fleet.nodes]
    fleet.dovecot(node2, "stop")

    log = fleet.renew("shop3.test")
    new_leaf = fleet.issued_leaf("shop3.test")
    assert new_leaf != old_leaf
    assert "dovecot not running: nothing changed" in log, log[-4000:]
    # The first node took the renewal; the failing one kept its files; the next was never touched.
    assert served_by(fleet, node1)["mail.shop3.test"] == {new_leaf}
    assert fleet.node_files(node2) == before[1]
    assert fleet.node_files(node3) == before[2]
    assert served_by(fleet, node3)["mail.shop3.test"] == {old_leaf}
    postfix = node2.run("sh /root/mailstack-tests/served.sh 465 mail.shop3.test").stdout.strip()
    assert postfix.replace(":", "").lower() == old_leaf

    # Dovecot back: the next run brings every node to the renewed certificate.
    fleet.dovecot(node2, "start")
    result = fleet.play()
    assert result.returncode == 0, result.output[-4000:]
    for node in fleet.nodes:
        assert served_by(fleet, node) == expected(fleet)
