"""The fleet scenario of docs/fleet.md, shown: four booted hosts on a private network (an issuer and
three mail nodes), certificates issued once and deployed to every node by Ansible over SSH, a batch
at a time. Prints each step's result, then per node and port which certificate each name gets, and
ends with ``N passed, N failed``. Run through scripts/fleet-demo.sh (as root).

    python -m tests.hosts.fleet_demo [--bulk N]

--bulk N: N more lineages made on the issuer without ACME (timing at scale).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, TypeVar

from tests.hosts.conftest import PreparedRoots, _package
from tests.hosts.fleet import Fleet
from tests.hosts.fleetplay import FleetPlay, PlayResult

LINEAGES = ["shop1.test", "shop2.test", "shop3.test"]
SHOWN_NAMES = 12  # per node and port, beyond this the names are counted, not listed


class Tally:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"  {'PASS' if ok else 'FAIL'}  {what}" + (f"\n        {detail}" if detail and not ok else ""))
        return ok


def recap_line(result: PlayResult) -> str:
    return ", ".join(f"{host.split('.')[0]} changed={c['changed']} failed={c['failed']}"
                     for host, c in result.recap.items())  # fmt: skip


T = TypeVar("T")


def step(title: str, action: Callable[[], T]) -> T:
    print(f"\n== {title}")
    start = time.monotonic()
    value = action()
    print(f"   ({time.monotonic() - start:.1f} s)")
    return value


def show_served(play: FleetPlay, tally: Tally, lineages: List[str]) -> None:
    """Per node and port, which lineage's certificate each name gets (by leaf fingerprint)."""
    leaf_of = {play.issued_leaf(lineage): lineage for lineage in lineages}
    want = {f"mail.{lineage}": play.issued_leaf(lineage) for lineage in lineages}
    for node in play.nodes:
        member = play.fleet.member(node)
        doc = play.served(node)
        checks = doc.get("checks", [])
        print(f"\n{member.fqdn} ({member.kind.release}, {member.kind.init})")
        by_port: Dict[str, List[Dict[str, Any]]] = {}
        for check in checks:
            by_port.setdefault(f"{check['service']}/{check['port']}", []).append(check)
        for port, port_checks in by_port.items():
            right = [
                c
                for c in port_checks
                if c["status"] == "ok" and c["served"] == want.get(c["name"], c["served"])
            ]
            if len(port_checks) <= SHOWN_NAMES:
                for c in port_checks:
                    got = leaf_of.get(c["served"], (c["served"] or "nothing")[:12])
                    tally.check(c in right, f"{port:<15} {c['name']:<22} -> {got}")
            else:
                counted = f"{len(right)} of {len(port_checks)} names get their own certificate"
                tally.check(len(right) == len(port_checks), f"{port:<15} {counted}")
        if not checks:
            tally.check(False, f"{member.fqdn}: verify ran", str(doc.get("error", ""))[:300])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bulk", type=int, default=0, help="lineages made on the issuer without ACME")
    args = parser.parse_args()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="mailstack-fleet-") as work:
        roots = PreparedRoots(Path(work) / "roots")
        roots.into.mkdir()
        fleet = Fleet(roots, Path(work) / "fleet", install=False)  # the node role installs it
        try:
            step("Boot the issuer and three mail nodes on a private network, SSH between them", fleet.start)
            play = FleetPlay(fleet)
            debs = {release: _package(release) for release in ("bookworm", "trixie")}
            step("Install the collection on the issuer; the node role installs the plugin on each node",
                 lambda: play.prepare(debs))  # fmt: skip
            step(f"Issue {len(LINEAGES)} lineages once, on the issuer (certbot + Pebble)",
                 lambda: play.issue(LINEAGES))  # fmt: skip
            lineages = list(LINEAGES)
            if args.bulk:
                lineages += step(
                    f"Make {args.bulk} more lineages on the issuer", lambda: play.bulk(args.bulk)
                )
            names = len(lineages)

            first = step("Playbook from scratch (one node at a time, each verified)", play.play)
            print(f"   {recap_line(first)}")
            deployed = first.returncode == 0 and all(c["changed"] == 1 for c in first.recap.values())
            tally.check(
                deployed, f"every node deployed and verified {names} lineage(s)", first.output[-2000:]
            )

            second = step("The same playbook again", play.play)
            print(f"   {recap_line(second)}")
            tally.check(second.returncode == 0 and all(c["changed"] == 0 for c in second.recap.values()),
                        "no node changed", second.output[-2000:])  # fmt: skip

            before = [play.node_files(node) for node in play.nodes]
            log = step("certbot renew of shop2.test on the issuer: its deploy hook runs the playbook for it",
                       lambda: play.renew("shop2.test"))  # fmt: skip
            for node, files in zip(play.nodes, before):
                now = play.node_files(node)
                changed = sorted({path.split("/")[1] for path in now if now[path] != files.get(path)})
                tally.check(changed == ["shop2.test"], f"{play.fleet.member(node).name}: changed {changed}",
                            str(log)[-2000:])  # fmt: skip

            node2 = play.nodes[1]
            play.dovecot(node2, "stop")
            before = [play.node_files(node) for node in play.nodes]
            log = step("Dovecot stopped on node2; certbot renew of shop3.test",
                       lambda: play.renew("shop3.test"))  # fmt: skip
            tally.check("dovecot not running: nothing changed" in str(log), "node2 fails with its reason",
                        str(log)[-2000:])  # fmt: skip
            tally.check(
                play.node_files(node2) == before[1], "node2 keeps its previous files and configuration"
            )
            tally.check(
                play.node_files(play.nodes[2]) == before[2], "the play stopped: node3 was not touched"
            )
            play.dovecot(node2, "start")
            again = step("Dovecot started again; the playbook brings every node up to date", play.play)
            print(f"   {recap_line(again)}")
            tally.check(again.returncode == 0, "every node deployed and verified", again.output[-2000:])

            print(
                "\n== What each name gets, per node and port (certbot-mailstack verify --json on each node)"
            )
            show_served(play, tally, lineages)
        finally:
            fleet.stop()
    print(f"\n{tally.passed} passed, {tally.failed} failed")
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
