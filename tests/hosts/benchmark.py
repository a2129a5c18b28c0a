"""The booted-host benchmark (``scripts/benchmark.py --booted``): Dovecot 2.3 (Debian 12) and 2.4
(Debian 13) side by side, each on a booted host with the distribution's own daemons and systemd.

For each size N, a fresh copy of each host gets N lineages (two names each) and measures: the bulk
import (``certbot-mailstack deploy --all``, wall time with its reload and confirmation), the memory of
Dovecot's config process after it (peak address space / peak resident), ``systemctl reload dovecot``
(how long it takes to return, when TLS on 993 answers again after it went dark, or the return
time if it never did, and how long TLS was dark in between;
medians of --repeat), and deploying one more lineage into the host (wall time, median). After the
import, 10 names picked at random are judged on all seven ports ("sample ok": handshakes that got
the name's own certificate).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from tests.hosts.conftest import GUEST, Kind, PreparedRoots, install_package
from tests.hosts.machine import Machine
from tests.hosts.mailhost import PORTS, Mailhost

KINDS = [Kind("bookworm", "systemd"), Kind("trixie", "systemd")]
#: Names judged on every port after the import, picked at random (seeded by the size).
SAMPLE = 10
TOOL = "certbot-mailstack"
#: Peak address space and peak resident set (kB) of Dovecot's config process.
MEMORY = "awk '/VmPeak|VmHWM/ {print $2}' /proc/$(pgrep -f dovecot/config | head -n 1)/status"

#: Runs inside the host: reload Dovecot and watch TLS on 993 (times from the start of the reload).
_WATCH = r"""
import json, socket, ssl, subprocess, time
def answers():
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", 993), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname="mail.d0.bulk.test"):
                return True
    except OSError:
        return False
start = time.monotonic()
subprocess.run(["systemctl", "reload", "dovecot.service"], check=True)
returned = time.monotonic() - start
dark_from = back = None
while time.monotonic() - start < 120:
    if answers():
        if dark_from is not None or time.monotonic() - start > returned + 5:
            back = time.monotonic() - start
            break
    elif dark_from is None:
        dark_from = time.monotonic() - start
    time.sleep(0.05)
dark = 0.0 if dark_from is None else (back or 120.0) - dark_from
print(json.dumps({"returned": returned, "back": (back or 120.0) if dark else returned, "dark": dark}))
"""


def _seconds(host: Mailhost, script: str) -> float:
    out = host.sh(f's=$(date +%s.%N); {script} >/dev/null 2>&1; e=$(date +%s.%N); echo "$s $e"').stdout
    start, end = (float(x) for x in out.split())
    return end - start


def measure(machine: Machine, kind: Kind, size: int, repeat: int) -> Dict[str, str]:
    host = Mailhost(machine, kind)
    host.sh(f"python3 {GUEST}/make-lineages.py {size} /etc/letsencrypt")
    imported = _seconds(host, f"{TOOL} deploy --all")
    peak, resident = (int(value) // 1024 for value in host.sh(MEMORY).stdout.split()[:2])
    sample = random.Random(size).sample(range(size), min(size, SAMPLE))
    expected = {
        (f"mail.d{k}.bulk.test", ""): host.fingerprint(f"/etc/letsencrypt/live/d{k}/cert.pem") for k in sample
    }
    wrong = host.wrong_ports(expected)
    machine.path("/root/watch.py").write_text(_WATCH)
    watched = [json.loads(host.sh("python3 /root/watch.py").stdout) for _ in range(repeat)]
    deploys = []
    for k in range(repeat):
        host.sh(f"python3 {GUEST}/make-lineages.py 1 /etc/letsencrypt {size + k}")
        deploys.append(_seconds(host, f"{TOOL} deploy --cert-name d{size + k}"))
    return {
        "import": f"{imported:.1f}",
        "sample ok": f"{len(PORTS) * len(expected) - len(wrong)}/{len(PORTS) * len(expected)}",
        "config MB": f"{peak}/{resident}",
        "reload": f"{statistics.median(w['returned'] for w in watched):.1f}",
        "TLS back": f"{statistics.median(w['back'] for w in watched):.1f}",
        "dark": f"{statistics.median(w['dark'] for w in watched):.1f}",
        "deploy 1": f"{statistics.median(deploys):.2f}",
    }


def run(sizes: List[int], repeat: int) -> List[Dict[str, str]]:
    rows: List[Dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mailstack-bench-") as tmp:
        roots = PreparedRoots(Path(tmp))
        for size in sizes:
            row = {"lineages": f"{size:,}", "names": f"{2 * size:,}"}
            for kind in KINDS:
                print(f"N = {size:,} on Debian {kind.release} (Dovecot {kind.dovecot}) ...", file=sys.stderr)
                work = Path(tmp) / f"{kind.name}-{size}"
                work.mkdir()
                machine = Machine(roots.get(kind), work, kind.init, f"bench-{kind.name}")
                try:
                    machine.copy()
                    machine.boot()
                    install_package(machine)
                    for column, value in measure(machine, kind, size, repeat).items():
                        row[f"{kind.dovecot} {column}"] = value
                finally:
                    machine.destroy()
            rows.append(row)
    return rows
