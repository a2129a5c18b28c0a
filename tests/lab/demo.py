"""The demo: certbot-mailstack on loopback, end to end, with real software.

Starts Pebble (an ACME test CA), a private Postfix and a private Dovecot on 127.0.0.1 with free
high ports; issues certificates for three domains with certbot; deploys two with ``certbot run
-i mailstack`` and one the classic way (``certonly``, then ``certbot install -i mailstack``);
prints which certificate every name gets on every mail port; runs ``certbot renew
--force-renewal`` as cron would; prints the table again. Everything it starts is stopped on exit.

Run: ``python -m tests.lab.demo [--workdir DIR] [--keep]`` (scripts/demo.sh does the setup).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from mailstack_installer.probe import SERVICES, ProbeError, served_certificate

from .certbot import Certbot
from .dovecot import DovecotInstance
from .pebble import Pebble
from .ports import LOCALHOST
from .postfix import PostfixInstance

DOMAINS = ("domain1.test", "domain2.test", "domain3.test")
NO_SNI = "(no SNI)"


def _fp(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:10]


def _leaf_fp(pem_path: Path) -> str:
    text = pem_path.read_text()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return _fp(ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----") : end]))


def _say(certbot: Certbot, *args: str) -> None:
    print(f"  $ certbot {' '.join(shlex.quote(a) for a in args)}")
    certbot.run(*args)


def _table(title: str, ports: Dict[str, int], expected: Dict[str, Dict[str, str]]) -> int:
    """Print one row per SNI name with the served leaf per port; return the number of wrong cells.

    ``expected`` maps a row label to the fingerprint each port should serve.
    """
    services = sorted(ports, key=list(SERVICES).index)
    heads = [f"{s}:{ports[s]}" for s in services]
    widths = [max(12, len(h) + 2) for h in heads]
    print(f"\n{title}")
    print(f"  {'SNI name':<20}" + "".join(f"{h:<{w}}" for h, w in zip(heads, widths)) + "result")
    wrong = 0
    for label, want in expected.items():
        name = None if label == NO_SNI else label
        cells = []
        for service in services:
            try:
                got = _fp(served_certificate(LOCALHOST, ports[service], SERVICES[service][1], name))
            except ProbeError:
                got = "error"
            cells.append(got if got == want[service] else f"{got}!")
        bad = sum(cell.endswith("!") for cell in cells)
        wrong += bad
        result = "right certificate on every port" if not bad else f"WRONG on {bad} port(s) (marked !)"
        print(f"  {label:<20}" + "".join(f"{c:<{w}}" for c, w in zip(cells, widths)) + result)
    return wrong


def run_demo(workdir: Path) -> int:
    pebble = Pebble(workdir / "pebble")
    postfix = PostfixInstance(workdir / "postfix")
    dovecot = DovecotInstance(workdir / "dovecot")
    try:
        pebble.start()
        postfix.start()
        dovecot.start()
        ports = {**postfix.ports, **dovecot.ports}
        print(f"Pebble ACME server: {pebble.directory_url}")
        print(f"Postfix ({postfix.config_dir}): " + ", ".join(f"{s} {p}" for s, p in postfix.ports.items()))
        print(f"Dovecot ({dovecot.config_file}): " + ", ".join(f"{s} {p}" for s, p in dovecot.ports.items()))

        certbot = Certbot(pebble, workdir / "certbot", command=[os.path.join(sys.prefix, "bin", "certbot")])
        options = [
            "--mailstack-postfix-dir", str(postfix.config_dir),
            "--mailstack-dovecot-dir", str(dovecot.config_dir),
        ]  # fmt: skip
        print("\nIssuing and deploying (certbot's ACME server, webroot and directory flags not shown):")
        for domain in DOMAINS[:2]:
            _say(certbot, "run", *certbot.webroot_args(), "-i", "mailstack",
                 "-d", f"{domain},mail.{domain}", "--cert-name", domain, *options)  # fmt: skip
        third = DOMAINS[2]
        _say(
            certbot, "certonly", *certbot.webroot_args(), "-d", f"{third},mail.{third}", "--cert-name", third
        )
        _say(certbot, "install", "--cert-name", third, "-i", "mailstack")

        assert postfix.default_cert is not None and dovecot.default_cert is not None
        defaults = {s: _leaf_fp(postfix.default_cert) for s in postfix.ports}
        defaults.update({s: _leaf_fp(dovecot.default_cert) for s in dovecot.ports})

        def expected() -> Dict[str, Dict[str, str]]:
            rows = {
                f"mail.{d}": dict.fromkeys(ports, _leaf_fp(certbot.live_dir(d) / "cert.pem")) for d in DOMAINS
            }
            rows[NO_SNI] = defaults  # a client without SNI gets the daemon's default certificate
            return rows

        before = expected()
        legend = ", ".join(f"mail.{d} = {before[f'mail.{d}']['smtp']}" for d in DOMAINS)
        wrong = _table(f"Served before renewal (leaf fingerprints; lineages: {legend}):", ports, before)

        print("\nRenewing as cron would:")
        _say(certbot, "renew", "--force-renewal")
        after = expected()
        wrong += _table("Served after renewal:", ports, after)
        renewed = all(after[f"mail.{d}"] != before[f"mail.{d}"] for d in DOMAINS)
        print(f"\nThe old certificates are served nowhere: {'yes' if not wrong else 'NO'}")
        print(f"\nAll three certificates renewed: {'yes' if renewed else 'NO'}; wrong cells: {wrong}")
        print(f"Map source: {postfix.config_dir}/tls_server_sni_maps; Dovecot drop-in: "
              f"{dovecot.config_dir}/conf.d/99-mailstack-sni.conf")  # fmt: skip
        return 0 if wrong == 0 and renewed else 1
    finally:
        dovecot.stop()
        postfix.stop()
        pebble.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, help="where to put everything (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir to inspect the files")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailstack-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run_demo(workdir)
    except RuntimeError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep or args.workdir:
            print(f"Files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
