"""Verify step: which certificate each mapped name gets on each mail port, judged against its lineage.

For every (name, port) one TLS handshake with SNI (two if the chain does not verify) answers: is the
served leaf the leaf of the name's lineage, does the chain verify, does the certificate cover the
name, how long until it expires. Each port is first probed once without SNI: that shows what clients
without SNI get, and settles a closed or silent port once instead of once per name (10,000 names on a
port that never answers would otherwise cost 10,000 timeouts).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import ssl
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, TypeVar, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import probe
from .certfiles import dns_names_of, fingerprint, load_chain, not_after
from .errors import InputError
from .listeners import Listener
from .model import CertFiles, Plan
from .names import WILDCARD_PROBE_LABEL, covered_by, normalize_name, probe_name

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 10.0
DEFAULT_EXPIRY_DAYS = 14
DEFAULT_CONCURRENCY = 32
#: Put in place of ``*`` to probe a wildcard name: ``*.a.test`` is probed as ``mailstack-verify.a.test``.
WILDCARD_LABEL = WILDCARD_PROBE_LABEL
#: Version of the ``--json`` document; bumped only when a field changes meaning or disappears.
SCHEMA_VERSION = 1

#: Result of one check (and of a port's probe without SNI, which is never "problem").
OK, PROBLEM, ERROR, SKIPPED = "ok", "problem", "error", "skipped"
#: Problem codes, part of the JSON schema.
WRONG_CERTIFICATE = "wrong_certificate"
CHAIN_NOT_VERIFIED = "chain_not_verified"
HOSTNAME_MISMATCH = "hostname_mismatch"
EXPIRING = "expiring"

T = TypeVar("T")
R = TypeVar("R")


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """One mail port to probe: the service decides how TLS starts (STARTTLS or at once)."""

    service: str
    port: int

    @property
    def mode(self) -> str:
        return probe.SERVICES[self.service][1]


DEFAULT_PORTS: Tuple[Port, ...] = tuple(Port(service, port) for service, (port, _) in probe.SERVICES.items())

_PORT_ITEM = re.compile(r"^([a-z0-9]+)(?:=([0-9]{1,5}))?$")


def parse_ports(text: Optional[str]) -> Tuple[Port, ...]:
    """``--ports``: a comma list of ``service=port`` (a bare service means its usual port)."""
    if text is None:
        return DEFAULT_PORTS
    usage = f"give a comma list of service=port with service one of {', '.join(probe.SERVICES)}"
    chosen: Dict[str, Port] = {}
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        match = _PORT_ITEM.match(item)
        service = match.group(1) if match else ""
        if match is None or service not in probe.SERVICES:
            raise InputError(f"--ports {text!r}: {raw.strip()!r} is not service=port; {usage}")
        number = int(match.group(2)) if match.group(2) else probe.SERVICES[service][0]
        if not 0 < number < 65536:
            raise InputError(f"--ports {text!r}: port {number} of {service} is not between 1 and 65535")
        if service in chosen:
            raise InputError(f"--ports {text!r}: {service} is given twice")
        chosen[service] = Port(service, number)
    if not chosen:
        raise InputError(f"--ports {text!r}: {usage}")
    return tuple(chosen[service] for service in probe.SERVICES if service in chosen)


@dataclass(frozen=True)
class Options:
    host: str = DEFAULT_HOST
    ports: Tuple[Port, ...] = DEFAULT_PORTS
    ca_file: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT
    expiry_days: int = DEFAULT_EXPIRY_DAYS
    concurrency: int = DEFAULT_CONCURRENCY


def select(plan: Plan, names: Sequence[str]) -> List[Tuple[str, CertFiles]]:
    """(name, files) to check: every mapped name, or those given (each must be mapped). A name an
    ECDSA and an RSA lineage serve comes once per lineage, the primary first."""
    entries = [(name, files) for name, serving in plan.files_by_name() for files in serving]
    if not names:
        return entries
    chosen: Dict[str, None] = {}
    for raw in names:
        name = normalize_name(raw)
        chosen[name] = None
    mapped = {name for name, _ in entries}
    for name in chosen:
        if name not in mapped:
            raise InputError(f"{name} is not mapped (certbot-mailstack status lists the mapped names)")
    order = {name: index for index, name in enumerate(chosen)}
    return sorted((entry for entry in entries if entry[0] in order), key=lambda entry: order[entry[0]])


# -- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    """What verify reports about one certificate (the served leaf or a lineage's leaf)."""

    fingerprint: str  # SHA-256 of the DER, lower-case hex
    subject: str  # RFC 4514, e.g. "CN=mail.a.test"
    dns_names: Tuple[str, ...]
    not_after: datetime.datetime  # UTC

    def days_left(self, now: datetime.datetime) -> int:
        """Whole days until expiry, rounded down (negative once expired)."""
        return math.floor((self.not_after - now).total_seconds() / 86400)


def cert_info(der: bytes) -> CertInfo:
    """Parse a DER certificate; raises ValueError if it does not parse."""
    cert = x509.load_der_x509_certificate(der)
    return CertInfo(fingerprint(der), cert.subject.rfc4514_string(), dns_names_of(cert), not_after(cert))


def lineage_leaf(files: CertFiles) -> CertInfo:
    """The leaf the name should get: the first certificate of the lineage's full chain on disk."""
    try:
        with open(files.fullchain, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InputError(f"cannot read {files.fullchain}: {exc.strerror or exc}") from None
    leaf = load_chain(data, files.fullchain)[0]
    return cert_info(leaf.public_bytes(serialization.Encoding.DER))


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What a handshake got: the leaf, the TLS version, and why the chain did not verify (if not)."""

    cert: CertInfo
    protocol: str
    chain_error: Optional[str]


@dataclass(frozen=True)
class Check:
    """One mapped name on one port."""

    name: str
    sni: str
    lineage: str
    port: Port
    status: str  # OK, PROBLEM, ERROR, SKIPPED
    problems: Tuple[str, ...] = ()
    detail: str = ""
    expected: Optional[CertInfo] = None  # None: the lineage's leaf could not be read
    served: Optional[Served] = None
    hostname_ok: Optional[bool] = None
    #: The only key type the probing client accepted ("ec", "rsa"), for a name an ECDSA and an
    #: RSA lineage serve side by side; None: any client.
    client: Optional[str] = None

    @property
    def match(self) -> Optional[bool]:
        if self.served is None or self.expected is None:
            return None
        return self.served.cert.fingerprint == self.expected.fingerprint


@dataclass(frozen=True)
class Default:
    """What a client sending no SNI gets on a port (reported, never judged)."""

    port: Port
    status: str  # OK, ERROR, SKIPPED
    served: Optional[Served] = None
    detail: str = ""


@dataclass(frozen=True)
class Report:
    host: str
    expiry_days: int
    now: datetime.datetime
    defaults: Tuple[Default, ...]
    checks: Tuple[Check, ...]

    def counts(self) -> Dict[str, int]:
        counts = {OK: 0, PROBLEM: 0, ERROR: 0, SKIPPED: 0}
        for check in self.checks:
            counts[check.status] += 1
        return counts

    def exit_code(self) -> int:
        """1 if any check found a problem (even if others could not run), else 2 if a check could not
        run or every port was closed (nothing was checked), else 0."""
        counts = self.counts()
        if counts[PROBLEM]:
            return 1
        if counts[ERROR] or (self.checks and not counts[OK]):
            return 2
        return 0


# -- running --------------------------------------------------------------------------------------


class Prober(Protocol):
    """(port, SNI name or None[, the only key type the client accepts]) -> handshake; raises
    probe.PortClosedError, probe.PortError, probe.ProbeError. The key type is passed only for
    names an ECDSA and an RSA lineage serve side by side."""

    def __call__(
        self, port: Port, server_name: Optional[str], key_type: Optional[str] = None
    ) -> probe.Handshake: ...


def make_prober(options: Options) -> Prober:
    """Real TLS handshakes against ``options.host``, the trust store loaded once for each kind of
    client (any, ECDSA-only, RSA-only)."""
    trusts: Dict[Optional[str], ssl.SSLContext] = {}
    for key_type in (None, *probe.CLIENT_CIPHERS):
        try:
            trusts[key_type] = probe.trust_context(options.ca_file, key_type)
        except (OSError, ssl.SSLError) as exc:
            where = f"--ca-file {options.ca_file}" if options.ca_file else "the system trust store"
            reason = exc.strerror if isinstance(exc.strerror, str) else str(exc)
            raise InputError(f"cannot load {where}: {reason}") from None

    def prober(port: Port, server_name: Optional[str], key_type: Optional[str] = None) -> probe.Handshake:
        trust = trusts[key_type]
        return probe.inspect(
            options.host, port.port, port.mode, server_name, trust, options.timeout, key_type
        )

    return prober


def bounded_map(func: Callable[[T], R], items: Sequence[T], concurrency: int) -> List[R]:
    """``[func(item) for item in items]`` on ``concurrency`` threads, in order.

    At most a few times ``concurrency`` items are queued at once, so 70,000 checks never hold
    70,000 futures; on an interrupt, queued items are cancelled and running ones finish.
    """
    results: Dict[int, R] = {}
    window = max(1, concurrency) * 4
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="mailstack-verify")
    pending: Dict[Future[R], int] = {}
    try:
        for index, item in enumerate(items):
            if len(pending) >= window:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results[pending.pop(future)] = future.result()
            pending[pool.submit(func, item)] = index
        for future in wait(pending).done:
            results[pending[future]] = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[index] for index in range(len(items))]


class _Run:
    """The state shared by the checks of one run: the judge's clock and a cache of parsed leaves."""

    def __init__(self, prober: Prober, expiry_days: int, now: datetime.datetime) -> None:
        self.prober = prober
        self.expiry_days = expiry_days
        self.now = now
        self.certs: Dict[str, CertInfo] = {}

    def served(self, handshake: probe.Handshake) -> Served:
        """Parse each distinct served leaf once (10,000 names usually get a few dozen leaves)."""
        leaf = fingerprint(handshake.leaf)
        info = self.certs.get(leaf)
        if info is None:
            info = self.certs.setdefault(leaf, cert_info(handshake.leaf))
        return Served(info, handshake.protocol, handshake.chain_error)

    def default(self, port: Port) -> Tuple[Default, Optional[Tuple[str, str]]]:
        """Probe without SNI; second: (status, detail) for every name on a closed or silent port."""
        try:
            return Default(port, OK, self.served(self.prober(port, None))), None
        except probe.PortClosedError:
            return Default(port, SKIPPED, detail="closed (connection refused)"), (SKIPPED, "port closed")
        except probe.PortError as exc:
            return Default(port, ERROR, detail=str(exc)), (ERROR, f"port not checked: {exc}")
        except probe.ProbeError as exc:  # a TLS failure without SNI: names may still work
            return Default(port, ERROR, detail=str(exc)), None
        except ValueError:
            return Default(port, ERROR, detail="the served certificate does not parse"), None

    def check(
        self,
        name: str,
        files: CertFiles,
        port: Port,
        expected: Union[CertInfo, str],
        client: Optional[str] = None,
    ) -> Check:
        sni = probe_name(name)
        known = expected if isinstance(expected, CertInfo) else None
        base: Dict[str, Any] = {"name": name, "sni": sni, "lineage": files.lineage_id, "port": port}
        if client is not None:
            base["client"] = client
        try:
            handshake = self.prober(port, sni) if client is None else self.prober(port, sni, client)
            served = self.served(handshake)
        except probe.PortClosedError:
            return Check(**base, status=SKIPPED, detail="port closed", expected=known)
        except probe.ProbeError as exc:
            return Check(**base, status=ERROR, detail=str(exc), expected=known)
        except ValueError:
            return Check(**base, status=ERROR, detail="the served certificate does not parse", expected=known)
        problems: List[str] = []
        notes: List[str] = []
        cert = served.cert
        if known is None:
            notes.append(f"cannot compare: {expected}")
        elif cert.fingerprint != known.fingerprint:
            problems.append(WRONG_CERTIFICATE)
            notes.append(
                f"serves {cert.subject or 'a certificate'} [{cert.fingerprint[:12]}], "
                f"not the leaf of {files.lineage_id} [{known.fingerprint[:12]}]"
            )
        if served.chain_error is not None:
            problems.append(CHAIN_NOT_VERIFIED)
            notes.append(f"chain does not verify: {served.chain_error}")
        hostname_ok = covered_by(sni, cert.dns_names)
        if not hostname_ok:
            problems.append(HOSTNAME_MISMATCH)
            shown = ", ".join(cert.dns_names[:3]) + (", ..." if len(cert.dns_names) > 3 else "")
            notes.append(f"certificate is not valid for {sni} (names: {shown or 'none'})")
        if cert.not_after - self.now < datetime.timedelta(days=self.expiry_days):
            problems.append(EXPIRING)
            notes.append(expiry_note(cert, self.now))
        status = PROBLEM if problems else (OK if known is not None else ERROR)
        return Check(
            **base,
            status=status,
            problems=tuple(problems),
            detail="; ".join(notes),
            expected=known,
            served=served,
            hostname_ok=hostname_ok,
        )


def expiry_note(cert: CertInfo, now: datetime.datetime) -> str:
    days = cert.days_left(now)
    when = f"{cert.not_after:%Y-%m-%d}"
    return f"expired on {when}" if cert.not_after <= now else f"expires in {days} days ({when})"


def run(
    plan: Plan,
    names: Sequence[str],
    options: Options,
    prober: Optional[Prober] = None,
    now: Optional[datetime.datetime] = None,
) -> Report:
    """Check ``names`` (default: every mapped name) on every port of ``options``."""
    chosen = select(plan, names)
    prober = prober or make_prober(options)
    context = _Run(prober, options.expiry_days, now or datetime.datetime.now(datetime.timezone.utc))
    expected: Dict[str, Union[CertInfo, str]] = {}
    for _, files in chosen:
        if files.fullchain not in expected:
            try:
                expected[files.fullchain] = lineage_leaf(files)
            except (InputError, ValueError) as exc:
                expected[files.fullchain] = str(exc)
    probed = bounded_map(context.default, options.ports, options.concurrency)
    blocked = {port: verdict for port, (_, verdict) in zip(options.ports, probed) if verdict is not None}

    work = [(name, files, port) for name, files in chosen for port in options.ports]
    dual = plan.dual_names()

    def one(item: Tuple[str, CertFiles, Port]) -> Check:
        name, files, port = item
        lineage = plan.lineages.get(files.lineage_id)
        client = lineage.key_type if lineage is not None and name in dual else None
        verdict = blocked.get(port)
        if verdict is not None:
            known = expected[files.fullchain]
            return Check(
                name,
                probe_name(name),
                files.lineage_id,
                port,
                status=verdict[0],
                detail=verdict[1],
                expected=known if isinstance(known, CertInfo) else None,
                client=client,
            )
        return context.check(name, files, port, expected[files.fullchain], client)

    checks = bounded_map(one, work, options.concurrency)
    return Report(options.host, options.expiry_days, context.now, tuple(d for d, _ in probed), tuple(checks))


# -- rendering ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max([len(headers[i])] + [len(row[i]) for row in rows]) for i in range(len(headers) - 1)]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines


def _flag(value: Optional[bool], bad: str) -> str:
    return "-" if value is None else ("ok" if value else bad)


_SHOWN = {OK: "ok", PROBLEM: "PROBLEM", ERROR: "ERROR", SKIPPED: "skipped"}


def render_table(report: Report) -> str:
    rows = []
    for check in report.checks:
        served = check.served
        rows.append(
            [
                check.name if check.client is None else f"{check.name} ({check.client} client)",
                check.port.service,
                str(check.port.port),
                _SHOWN[check.status],
                "?" if served is not None and check.match is None else _flag(check.match, "WRONG"),
                _flag(None if served is None else served.chain_error is None, "FAIL"),
                _flag(check.hostname_ok, "NO"),
                "-" if served is None else str(served.cert.days_left(report.now)),
                "-" if served is None else served.protocol,
                check.detail,
            ]
        )
    headers = ["NAME", "SERVICE", "PORT", "RESULT", "CERT", "CHAIN", "HOSTNAME", "DAYS", "TLS", "DETAIL"]
    lines = table(headers, rows) if rows else ["no names are mapped"]
    defaults = []
    for default in report.defaults:
        served = default.served
        defaults.append(
            [
                default.port.service,
                str(default.port.port),
                _SHOWN[default.status],
                "-" if served is None else served.cert.subject or "-",
                "-" if served is None else served.cert.fingerprint[:12],
                _flag(None if served is None else served.chain_error is None, "FAIL"),
                "-" if served is None else str(served.cert.days_left(report.now)),
                "-" if served is None else served.protocol,
                default.detail,
            ]
        )
    lines += ["", "Without SNI (clients that send no server name get):"]
    lines += table(
        ["SERVICE", "PORT", "RESULT", "SUBJECT", "SHA-256", "CHAIN", "DAYS", "TLS", "DETAIL"], defaults
    )
    counts = report.counts()
    lines += [
        "",
        f"{len(report.checks)} checks on {report.host}: {counts[OK]} ok, {counts[PROBLEM]} with problems, "
        f"{counts[ERROR]} could not be checked, {counts[SKIPPED]} skipped (closed ports)",
    ]
    return "\n".join(lines) + "\n"


def _time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _served_fields(served: Optional[Served]) -> Dict[str, Any]:
    return {
        "served": None if served is None else served.cert.fingerprint,
        "protocol": None if served is None else served.protocol,
        "chain_verified": None if served is None else served.chain_error is None,
        "chain_error": None if served is None else served.chain_error,
    }


def render_json(report: Report) -> str:
    """The ``--json`` document (schema in docs/verify.md)."""
    certs: Dict[str, CertInfo] = {}
    for check in report.checks:
        for info in (check.expected, check.served.cert if check.served else None):
            if info is not None:
                certs.setdefault(info.fingerprint, info)
    for default in report.defaults:
        if default.served is not None:
            certs.setdefault(default.served.cert.fingerprint, default.served.cert)
    doc = {
        "schema": "certbot-mailstack/verify",
        "version": SCHEMA_VERSION,
        "host": report.host,
        "checked_at": _time(report.now),
        "expiry_days": report.expiry_days,
        "exit_code": report.exit_code(),
        "summary": report.counts(),
        "ports": [
            {
                "service": d.port.service,
                "port": d.port.port,
                "status": d.status,
                "detail": d.detail,
                **_served_fields(d.served),
            }
            for d in report.defaults
        ],
        "checks": [
            {
                "name": c.name,
                "sni": c.sni,
                "lineage": c.lineage,
                "service": c.port.service,
                "port": c.port.port,
                "status": c.status,
                "problems": list(c.problems),
                "detail": c.detail,
                "expected": None if c.expected is None else c.expected.fingerprint,
                **_served_fields(c.served),
                "match": c.match,
                "hostname_match": c.hostname_ok,
                "days_left": None if c.served is None else c.served.cert.days_left(report.now),
                # only for a name an ECDSA and an RSA lineage serve: the probing client's one key type
                **({"client_key_type": c.client} if c.client is not None else {}),
            }
            for c in report.checks
        ],
        "certificates": {
            fp: {
                "subject": info.subject,
                "dns_names": list(info.dns_names),
                "not_after": _time(info.not_after),
                "days_left": info.days_left(report.now),
            }
            for fp, info in sorted(certs.items())
        },
    }
    return json.dumps(doc, indent=1) + "\n"


# -- after a deployment (the plugin's --mailstack-verify) ------------------------------------------


def ports_from_listeners(listeners: Sequence[Listener]) -> Tuple[str, Tuple[Port, ...]]:
    """The host and the ports to check, from the listeners the daemons' own configuration names."""
    names = {
        ("postfix", "smtp"): ["smtp", "submission"],
        ("postfix", "tls"): ["smtps"],
        ("dovecot", "imap"): ["imap"],
        ("dovecot", "pop3"): ["pop3"],
        ("dovecot", "tls"): ["imaps", "pop3s"],
    }
    ports: List[Port] = []
    for listener in listeners:
        free = names.get((listener.daemon, listener.mode), [])
        if free:
            ports.append(Port(free.pop(0), listener.port))
    host = listeners[0].host if listeners else DEFAULT_HOST
    return host, tuple(ports)


def problems_after_deploy(plan: Plan, names: Sequence[str], listeners: Sequence[Listener]) -> List[str]:
    """One line per name and port not served correctly (for the plugin to report)."""
    host, ports = ports_from_listeners(listeners)
    if not ports or not names:
        return []
    report = run(plan, names, Options(host=host, ports=ports))
    return [
        f"{check.name} on {check.port.service} {host}:{check.port.port}: {check.status}"
        + (f" ({check.detail})" if check.detail else "")
        for check in report.checks
        if check.status not in (OK, SKIPPED)
    ]
