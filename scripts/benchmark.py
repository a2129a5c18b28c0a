"""Benchmark at hosting scale: real lineages, real Postfix and Dovecot on 127.0.0.1, N names each.

For each size N it prints one row: the bulk import of all N lineages, deploying one new lineage and
renewing one lineage into a host of N names (installer time and the reload that follows, apart;
medians of --repeat runs), the installed deploy hook redeploying one renewed lineage as certbot
runs it (a process of its own: interpreter start and imports included), the memory of Dovecot's
config process, and how many of the N names Postfix (smtps) and Dovecot (imaps) serve with their
own certificate, judged by TLS handshakes.

"deploy 1" and "renew 1" run in one process one after another, as certbot's deploy_cert and
renew_deploy do in one certbot run; each reads the state from disk, as each of certbot's installers
does.

The hosts of every size run side by side, and the one-lineage runs take turns between them, so the
ratio of two sizes compares runs made under the same conditions (a noisy machine moves both).
Deployments come first, then renewals, then the hook, each as a series, as in a certbot run.

    .venv/bin/python scripts/benchmark.py [--sizes 10,100,1000,10000] [--repeat 5] [--map-type hash]
    .venv/bin/python scripts/benchmark.py --booted [--sizes ...] [--repeat ...]   # Dovecot 2.3 | 2.4
    .venv/bin/python scripts/benchmark.py --include-styles all [--sizes ...]     # bulk import only

Lineages are self-signed (a P-256 leaf per name under one RSA-2048 issuer, so each fullchain holds
two certificates like certbot's) and kept in --pool for the next run. Needs root, Postfix, Dovecot.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailstack_installer import hook
from mailstack_installer.dovecot.dropin import own_limit_mb
from mailstack_installer.model import CertFiles
from mailstack_installer.pipeline import Pipeline, Request
from mailstack_installer.probe import SERVICES, ProbeError, served_certificate
from tests.lab.dovecot import INCLUDES, DovecotInstance
from tests.lab.ports import LOCALHOST
from tests.lab.postfix import PostfixInstance


class Issuer:
    """One RSA issuer that signs every leaf, so a fullchain is leaf + issuer as from Let's Encrypt."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailstack benchmark issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, directory: Path, name: str) -> None:
        """Write certbot's privkey.pem (0600) and fullchain.pem for ``name`` into ``directory``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(directory / "privkey.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        (directory / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + self.cert.public_bytes(pem))


def lineage_name(index: int) -> str:
    return f"mail.d{index}.test"


def fill_pool(pool: Path, count: int, extra: int) -> None:
    """Lineages d0..d{count-1} and x0..x{extra-1} (one name each), made once and reused."""
    issuer: Optional[Issuer] = None
    wanted = [(f"d{i}", lineage_name(i)) for i in range(count)]
    wanted += [(f"x{i}", f"mail.x{i}.test") for i in range(extra)]
    missing = [(d, n) for d, n in wanted if not (pool / d / "fullchain.pem").exists()]
    for done, (directory, name) in enumerate(missing, 1):
        issuer = issuer or Issuer()
        issuer.issue(pool / directory, name)
        if done % 1000 == 0:
            print(f"  issued {done}/{len(missing)} lineages", file=sys.stderr)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_deploy_hook(config_dir: str, lineage: Path) -> None:
    """The installed deploy hook, run as certbot runs it after renewing ``lineage``: a new process
    (interpreter start and imports included), the reload left to the post hook."""
    env = {**os.environ, "RENEWED_LINEAGE": str(lineage), "RENEWED_DOMAINS": lineage_name(0)}
    subprocess.run([hook.hook_path(config_dir)], env=env, check=True, stdout=subprocess.DEVNULL)


def config_process_memory(dovecot: DovecotInstance) -> str:
    """Peak virtual size and resident size of Dovecot's config process, e.g. ``1390/1350``."""
    served_certificate(LOCALHOST, dovecot.ports["imaps"], "tls", None, 60.0)  # starts it if idle
    master = dovecot.master_pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "config":
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            peak, rss = (int(fields[k].split()[0]) // 1024 for k in ("VmPeak", "VmRSS"))
            return f"{peak}/{rss}"
    return "-"


def served_count(port: int, mode: str, expected: Dict[str, str]) -> int:
    """How many names get their own leaf on ``port`` (8 handshakes at a time)."""

    def check(item: Tuple[str, str]) -> bool:
        name, want = item
        try:
            der = served_certificate(LOCALHOST, port, mode, name, 30.0)
        except ProbeError:
            return False
        return hashlib.sha256(der).hexdigest() == want

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(check, expected.items()))


def leaf_fingerprint(fullchain: Path) -> str:
    cert = x509.load_pem_x509_certificate(fullchain.read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class Host:
    """A mail host of ``size`` names: its own certbot config dir with symlinks into the pool, and its
    own Postfix and Dovecot on 127.0.0.1, running from start() to stop()."""

    def __init__(self, size: int, pool: Path, map_type: str, include: str = "relative") -> None:
        self.size, self.pool, self.map_type = size, pool, map_type
        self.tmp = tempfile.TemporaryDirectory(prefix="mailstack-bench-")
        base = Path(self.tmp.name)
        self.config_dir = str(base / "letsencrypt")
        self.live = base / "letsencrypt" / "live"
        self.postfix = PostfixInstance(base / "pf")
        self.dovecot = DovecotInstance(base / "dc", include=include)
        self.renewed = self.live / "d0"  # renewed in place: a real directory, not the pool's
        self.times: Dict[str, List[float]] = {
            key: [] for key in ("deploy", "deploy reload", "renew", "renew reload", "hook")
        }
        self.bulk = self.bulk_reload = 0.0

    def start(self) -> None:
        """Start the daemons and import every lineage (timed), then reload."""
        self.live.mkdir(parents=True)
        for i in range(self.size):
            (self.live / f"d{i}").symlink_to(self.pool / f"d{i}", target_is_directory=True)
        self.renewed.unlink()
        shutil.copytree(self.pool / "d0", self.renewed)
        self.postfix.start()
        self.dovecot.start()
        options: Dict[str, Optional[str]] = {
            "postfix-dir": str(self.postfix.config_dir),
            "dovecot-dir": str(self.dovecot.config_dir),
            "service-manager": "native",
            "postfix-map-type": self.map_type,
        }
        self.pipeline = Pipeline(self.config_dir, options)
        dirs = [str(self.live / f"d{i}") for i in range(self.size)]
        imported = []
        self.bulk = timed(lambda: imported.append(self.pipeline.import_lineages(dirs)))
        if imported[0].failed:
            raise RuntimeError(f"bulk import failed: {imported[0].failed[:3]}")
        self.bulk_reload = timed(self.pipeline.reload_pending)
        hook.install_hooks(self.config_dir)

    def deploy(self, k: int, issuer: Issuer) -> None:
        """Deploy the new lineage x{k} (certbot has just made its directory), then reload."""
        (self.live / f"x{k}").symlink_to(self.pool / f"x{k}", target_is_directory=True)
        where = self.live / f"x{k}"
        files = CertFiles(str(where / "privkey.pem"), str(where / "fullchain.pem"))
        request = Request(files, (f"mail.x{k}.test",))
        self.times["deploy"].append(timed(lambda: self.pipeline.deploy([request])))
        self.times["deploy reload"].append(timed(self.pipeline.reload_pending))

    def renew(self, k: int, issuer: Issuer) -> None:
        """Renew d0 and redeploy it, as certbot's renew_deploy does in a renew run, then reload."""
        issuer.issue(self.renewed, lineage_name(0))
        self.times["renew"].append(timed(lambda: self.pipeline.refresh(str(self.renewed))))
        self.times["renew reload"].append(timed(self.pipeline.reload_pending))

    def hook(self, k: int, issuer: Issuer) -> None:
        """Run the installed deploy hook for d0 renewed, as certbot runs it, then reload."""
        issuer.issue(self.renewed, lineage_name(0))
        self.times["hook"].append(timed(lambda: run_deploy_hook(self.config_dir, self.renewed)))
        self.pipeline.reload_pending()

    def expected(self) -> Dict[str, str]:
        """The leaf fingerprint each name must be served, by name."""
        expected = {
            lineage_name(i): leaf_fingerprint(self.pool / f"d{i}" / "fullchain.pem") for i in range(self.size)
        }
        expected[lineage_name(0)] = leaf_fingerprint(self.renewed / "fullchain.pem")
        return expected

    def row(self) -> Dict[str, str]:
        """The table row: the times, and what the daemons serve now (by handshakes)."""
        expected = self.expected()
        memory = config_process_memory(self.dovecot)
        smtps = served_count(self.postfix.ports["smtps"], SERVICES["smtps"][1], expected)
        imaps = served_count(self.dovecot.ports["imaps"], SERVICES["imaps"][1], expected)
        limit = own_limit_mb((self.dovecot.conf_d / "99-mailstack-sni.conf").read_bytes())
        median = {key: statistics.median(values) for key, values in self.times.items()}
        return {
            "names": f"{self.size:,}",
            "bulk import": f"{self.bulk:.2f}",
            "+ reload": f"{self.bulk_reload:.2f}",
            "deploy 1": f"{median['deploy']:.3f}",
            "+ reload ": f"{median['deploy reload']:.2f}",
            "renew 1": f"{median['renew']:.3f}",
            "+ reload  ": f"{median['renew reload']:.2f}",
            "hook 1": f"{median['hook']:.3f}",
            "config MB peak/rss": memory,
            "vsz_limit": f"{limit}M" if limit else "default",
            "smtps served": f"{smtps}/{self.size}",
            "imaps served": f"{imaps}/{self.size}",
        }

    def stop(self) -> None:
        try:
            self.dovecot.stop()
        finally:
            try:
                self.postfix.stop()
            finally:
                self.tmp.cleanup()


def print_table(rows: List[Dict[str, str]]) -> None:
    headers = list(rows[0])
    widths = [max(len(h.strip()), *(len(r[h]) for r in rows)) for h in headers]
    print("  ".join(h.strip().rjust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(row[h].rjust(w) for h, w in zip(headers, widths)))


def include_styles(sizes: List[int], styles: List[str], pool: Path, map_type: str) -> List[Dict[str, str]]:
    """The bulk import (installer time + its reload) at each size, for each way dovecot.conf
    includes the drop-in; a host at a time. A cell is marked with the count of names Dovecot
    (imaps) serves with their own certificate when that is not all of them."""
    rows = []
    for size in sizes:
        row = {"names": f"{size:,}"}
        for style in styles:
            print(f"N = {size:,}, {style} include: importing ...", file=sys.stderr)
            host = Host(size, pool, map_type, include=style)
            try:
                host.start()
                imaps = served_count(host.dovecot.ports["imaps"], SERVICES["imaps"][1], host.expected())
            finally:
                host.stop()
            cell = f"{host.bulk:.1f} + {host.bulk_reload:.1f}"
            row[style] = cell if imaps == size else f"{cell} ({imaps} served!)"
        rows.append(row)
    return rows


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the daemons' finally clauses run
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000,10000", help="comma list of N (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="one-lineage runs per size (default: 5)")
    parser.add_argument("--map-type", default="hash", help="Postfix map type (default: %(default)s)")
    parser.add_argument(
        "--pool", default="/var/tmp/mailstack-benchmark-pool", help="where lineages are kept between runs"
    )
    parser.add_argument(
        "--booted",
        action="store_true",
        help="Dovecot 2.3 and 2.4 side by side on booted Debian 12 and 13 hosts (tests/hosts/benchmark.py)",
    )
    parser.add_argument(
        "--include-styles",
        metavar="LIST",
        help="only the bulk import, per way dovecot.conf includes the drop-in: a comma list of "
        f"{', '.join(INCLUDES)}, or all",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.include_styles:
        styles = list(INCLUDES) if args.include_styles == "all" else args.include_styles.split(",")
        fill_pool(Path(args.pool), max(sizes), args.repeat)
        print_table(include_styles(sizes, styles, Path(args.pool), args.map_type))
        print()
        print("seconds: the bulk import of every lineage (installer time) + the reload after it, "
              "with its confirmation by handshakes")  # fmt: skip
        return 0
    if args.booted:
        from tests.hosts import benchmark as booted

        rows = booted.run(sizes, args.repeat)
        print_table(rows)
        print()
        print("times in seconds (wall, as an admin sees them); reload/TLS back/dark: medians of "
              f"{args.repeat} `systemctl reload dovecot`; deploy 1: median of {args.repeat}; "
              "config MB = Dovecot's config process, peak virtual / resident")  # fmt: skip
        return 0
    pool = Path(args.pool)
    print(f"making lineages in {pool} (once) ...", file=sys.stderr)
    fill_pool(pool, max(sizes), args.repeat)
    # Every host runs side by side and the one-lineage runs take turns (one of each size per round,
    # the order reversed every other round): the ratio between sizes compares runs made under the
    # same machine conditions, not minutes apart.
    hosts: List[Host] = []
    try:
        for size in sizes:
            print(f"N = {size:,}: importing ...", file=sys.stderr)
            hosts.append(Host(size, pool, args.map_type))
            hosts[-1].start()
        issuer = Issuer()
        for phase in (Host.deploy, Host.renew, Host.hook):
            print(f"one-lineage runs: {phase.__name__} ...", file=sys.stderr)
            for k in range(args.repeat):
                for host in hosts if k % 2 == 0 else reversed(hosts):
                    phase(host, k, issuer)
        rows = [host.row() for host in hosts]
    finally:
        for host in hosts:
            host.stop()
    print_table(rows)
    print()
    print(f"times in seconds (medians of {args.repeat} for the one-lineage columns); "
          f"config MB = Dovecot's config process, peak virtual / resident")  # fmt: skip
    first, last = rows[0], rows[-1]
    for column in ("deploy 1", "renew 1", "hook 1"):
        ratio = float(last[column]) / float(first[column])
        print(f"{column}: {ratio:.2f}x from N = {first['names']} to N = {last['names']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
