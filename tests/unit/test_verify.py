"""verify and status without daemons: parsing, judging, rendering, the concurrency bound and timeouts,
against tiny in-process servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstack_installer import cli, probe, status, verify
from mailstack_installer.certfiles import check_files
from mailstack_installer.dovecot.dropin import render_dropin
from mailstack_installer.errors import InputError
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.names import covered_by
from mailstack_installer.postfix.mapfile import render_map
from mailstack_installer.settings import resolve
from mailstack_installer.state import State, StateStore

UTC = datetime.timezone.utc
NOW = datetime.datetime(2030, 1, 1, tzinfo=UTC)


# -- certificates: a private CA and lineages it signs ----------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CA:
    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Unit Test Root"))
            .issuer_name(_name("Unit Test Root"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem_path = directory / "root.pem"
        directory.mkdir(parents=True, exist_ok=True)
        self.pem_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def lineage(self, live: Path, names: Sequence[str], days: int = 90) -> CertFiles:
        """``live/privkey.pem`` and ``live/fullchain.pem`` (the leaf, then its issuer: this root)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        live.mkdir(parents=True, exist_ok=True)
        (live / "privkey.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (live / "fullchain.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(serialization.Encoding.PEM)
        )
        return CertFiles(str(live / "privkey.pem"), str(live / "fullchain.pem"))


def server_context(files: CertFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.fullchain, files.key)
    return context


def plan_of(*pairs: Tuple[CertFiles, Sequence[str]]) -> Plan:
    return Plan({files.lineage_id: Lineage(files, tuple(names)) for files, names in pairs})


# -- tiny servers ---------------------------------------------------------------------------------


class Server:
    """A listener on 127.0.0.1 whose connections are handled by ``handle`` on their own threads."""

    def __init__(self, handle) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.handle = handle
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            self.handle(conn, self.stopping)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


@contextlib.contextmanager
def serving(handle) -> Iterator[Server]:
    server = Server(handle)
    try:
        yield server
    finally:
        server.close()


def tls_handler(by_name: Dict[str, ssl.SSLContext], default: ssl.SSLContext):
    def choose(sslobj, server_name, _context):
        if server_name in by_name:
            sslobj.context = by_name[server_name]

    default.sni_callback = choose

    def handle(conn: socket.socket, _stopping) -> None:
        with default.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # until the client closes

    return handle


def silent(conn: socket.socket, stopping: threading.Event) -> None:
    """Accept and never answer."""
    stopping.wait(30)


def trickle(conn: socket.socket, stopping: threading.Event) -> None:
    """An SMTP greeting one byte at a time, never finished: a per-read timeout would never fire."""
    while not stopping.wait(0.05):
        conn.sendall(b"2")


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound, never listened: connecting is refused
    return port


# -- parsing --------------------------------------------------------------------------------------


def test_ports_default_to_all_seven_usual_ports():
    assert [(p.service, p.port, p.mode) for p in verify.parse_ports(None)] == [
        ("smtp", 25, "smtp"),
        ("submission", 587, "smtp"),
        ("smtps", 465, "tls"),
        ("imap", 143, "imap"),
        ("imaps", 993, "tls"),
        ("pop3", 110, "pop3"),
        ("pop3s", 995, "tls"),
    ]


def test_ports_probe_only_those_listed_in_service_order():
    assert verify.parse_ports(" imaps=10993, SMTP=10025 ,pop3") == (
        verify.Port("smtp", 10025),
        verify.Port("imaps", 10993),
        verify.Port("pop3", 110),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imap4=143", "not service=port"),
        ("smtp:25", "not service=port"),
        ("smtp=", "not service=port"),
        ("smtp=x25", "not service=port"),
        ("smtp=-1", "not service=port"),
        ("smtp=0", "not between 1 and 65535"),
        ("smtp=65536", "not between 1 and 65535"),
        ("smtp=25,smtp=2525", "given twice"),
        (",", "give a comma list"),
    ],
)
def test_bad_ports_are_one_line_naming_the_option(text, message):
    with pytest.raises(InputError, match=message) as caught:
        verify.parse_ports(text)
    assert str(caught.value).startswith("--ports ") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "sans", "matches"),
    [
        ("mail.a.test", ["mail.a.test"], True),
        ("mail.a.test", ["MAIL.A.Test"], True),
        ("mail.a.test", ["a.test"], False),
        ("mail.a.test", ["*.a.test"], True),
        ("deep.mail.a.test", ["*.a.test"], False),  # one label only
        ("a.test", ["*.a.test"], False),  # not the parent itself
        ("mail.a.test", ["m*.a.test"], False),  # no partial-label wildcards
        ("mail.a.test", ["*.*.test"], False),
        ("mail.a.test", [], False),
        ("mail.a.test.", ["mail.a.test"], True),
        ("*.a.test", ["*.a.test"], True),
    ],
)
def test_hostname_matching_follows_rfc_6125(name, sans, matches):
    assert covered_by(name, sans) is matches


def test_wildcards_are_probed_with_one_concrete_label():
    assert verify.probe_name("*.a.test") == "mailstack-verify.a.test"
    assert verify.probe_name("mail.a.test") == "mail.a.test"


def test_names_given_must_be_mapped(tmp_path):
    ca = CA(tmp_path)
    a = ca.lineage(tmp_path / "live" / "a.test", ["a.test", "mail.a.test"])
    plan = plan_of((a, ["a.test", "mail.a.test"]))
    assert verify.select(plan, ["MAIL.a.test"]) == [("mail.a.test", a)]
    with pytest.raises(InputError, match="b.test is not mapped"):
        verify.select(plan, ["b.test"])


# -- judging against a real TLS server --------------------------------------------------------------


@pytest.fixture
def lab(tmp_path):
    """Lineages a.test and b.test from a private CA; the server gives b.test a.test's certificate."""
    ca = CA(tmp_path / "ca")
    a = ca.lineage(tmp_path / "live" / "a.test", ["a.test", "mail.a.test"])
    b = ca.lineage(tmp_path / "live" / "b.test", ["b.test"])
    stranger = CA(tmp_path / "other-ca").lineage(tmp_path / "live" / "c.test", ["c.test"])
    contexts = {"a.test": server_context(a), "mail.a.test": server_context(a), "b.test": server_context(a)}
    contexts["c.test"] = server_context(stranger)
    plan = plan_of((a, ["a.test", "mail.a.test"]), (b, ["b.test"]), (stranger, ["c.test"]))
    with serving(tls_handler(contexts, server_context(a))) as server:
        yield ca, plan, server, (a, b, stranger)


def by_name(report: verify.Report) -> Dict[str, verify.Check]:
    return {check.name: check for check in report.checks}


def test_each_name_is_judged_on_leaf_chain_hostname_and_expiry(lab):
    ca, plan, server, (a, _, _) = lab
    options = verify.Options(ports=(verify.Port("imaps", server.port),), ca_file=str(ca.pem_path), timeout=5)
    report = verify.run(plan, [], options)
    checks = by_name(report)
    assert checks["a.test"].status == checks["mail.a.test"].status == verify.OK
    assert checks["a.test"].served.protocol.startswith("TLSv1")
    assert checks["b.test"].problems == (verify.WRONG_CERTIFICATE, verify.HOSTNAME_MISMATCH)
    assert "not the leaf of" in checks["b.test"].detail and str(a.lineage_id) not in checks["b.test"].detail
    assert checks["c.test"].problems == (verify.CHAIN_NOT_VERIFIED,)
    assert checks["c.test"].match is True and checks["c.test"].served.chain_error
    assert report.exit_code() == 1
    assert report.defaults[0].status == verify.OK
    assert report.defaults[0].served.cert.fingerprint == checks["a.test"].served.cert.fingerprint

    expiring = verify.run(plan, ["a.test"], verify.Options(**{**options.__dict__, "expiry_days": 100}))
    assert expiring.checks[0].problems == (verify.EXPIRING,)
    assert "expires in 8" in expiring.checks[0].detail and expiring.exit_code() == 1


def test_a_clean_run_exits_0_and_the_system_trust_store_does_not_know_a_private_ca(lab):
    ca, plan, server, _ = lab
    ports = (verify.Port("imaps", server.port),)
    clean = verify.run(plan, ["a.test", "mail.a.test"], verify.Options(ports=ports, ca_file=str(ca.pem_path)))
    assert clean.exit_code() == 0
    system = verify.run(plan, ["a.test"], verify.Options(ports=ports))
    assert system.checks[0].problems == (verify.CHAIN_NOT_VERIFIED,)


def test_unreadable_lineage_is_an_error_for_its_cells(lab, tmp_path):
    ca, plan, server, (a, _, _) = lab
    Path(a.fullchain).unlink()
    report = verify.run(
        plan, ["a.test"], verify.Options(ports=(verify.Port("imaps", server.port),), ca_file=str(ca.pem_path))
    )
    assert report.checks[0].status == verify.ERROR and "cannot compare" in report.checks[0].detail
    assert report.exit_code() == 2


def test_bad_ca_file_is_one_line(tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for path in [tmp_path / "junk.pem", tmp_path / "missing.pem"]:
        with pytest.raises(InputError, match="cannot load --ca-file") as caught:
            verify.make_prober(verify.Options(ca_file=str(path)))
        assert "\n" not in str(caught.value)


# -- closed, silent and slow ports ----------------------------------------------------------------


def test_closed_port_is_skipped_and_a_run_where_every_port_is_closed_exits_2(lab):
    ca, plan, server, _ = lab
    ports = (verify.Port("imaps", server.port), verify.Port("pop3s", closed_port()))
    report = verify.run(plan, ["a.test"], verify.Options(ports=ports, ca_file=str(ca.pem_path)))
    assert [c.status for c in report.checks] == [verify.OK, verify.SKIPPED]
    assert report.defaults[1].status == verify.SKIPPED and report.exit_code() == 0
    only_closed = verify.run(plan, ["a.test"], verify.Options(ports=ports[1:], ca_file=str(ca.pem_path)))
    assert only_closed.exit_code() == 2


def test_port_that_accepts_and_never_answers_times_out_once_not_once_per_name(tmp_path):
    ca = CA(tmp_path)
    files = ca.lineage(tmp_path / "live" / "a.test", ["a.test"])
    names = [f"n{i}.a.test" for i in range(40)]
    plan = plan_of((files, names))
    with serving(silent) as server:
        started = time.monotonic()
        report = verify.run(
            plan,
            [],
            verify.Options(
                ports=(verify.Port("smtp", server.port), verify.Port("imaps", server.port)),
                timeout=0.5,
                concurrency=2,
            ),
        )
        elapsed = time.monotonic() - started
    assert elapsed < 2.0  # one timeout per port, in parallel; 80 sequential ones would take 20 s
    assert {c.status for c in report.checks} == {verify.ERROR}
    assert "timed out" in report.checks[0].detail and report.exit_code() == 2
    assert [d.status for d in report.defaults] == [verify.ERROR, verify.ERROR]


def test_the_timeout_bounds_the_whole_check_even_when_bytes_trickle_in(tmp_path):
    with serving(trickle) as server:
        started = time.monotonic()
        with pytest.raises(probe.PortError, match="timed out before TLS"):
            probe.inspect("127.0.0.1", server.port, "smtp", "a.test", probe.trust_context(), timeout=0.6)
        assert time.monotonic() - started < 1.5


def test_silent_implicit_tls_port_times_out_in_the_handshake(tmp_path):
    with serving(silent) as server:
        started = time.monotonic()
        with pytest.raises(probe.PortError, match="timed out in the TLS handshake"):
            probe.inspect("127.0.0.1", server.port, "tls", "a.test", probe.trust_context(), timeout=0.5)
        assert time.monotonic() - started < 1.5


def test_handshakes_run_concurrently_but_never_more_than_the_bound(tmp_path):
    ca = CA(tmp_path)
    files = ca.lineage(tmp_path / "live" / "a.test", ["a.test"])
    plan = plan_of((files, [f"n{i}.a.test" for i in range(60)]))
    der = x509.load_pem_x509_certificate(Path(files.fullchain).read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    lock = threading.Lock()
    running: List[int] = [0, 0]  # now, most at once

    def fake(port: verify.Port, server_name: Optional[str]) -> probe.Handshake:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return probe.Handshake(der, "TLSv1.3", None)

    report = verify.run(plan, [], verify.Options(ports=verify.DEFAULT_PORTS[:2], concurrency=5), prober=fake)
    assert running[1] == 5
    assert len(report.checks) == 120 and [c.name for c in report.checks[:2]] == ["n0.a.test"] * 2
    assert {c.problems for c in report.checks} == {(verify.HOSTNAME_MISMATCH,)}


# -- rendering ------------------------------------------------------------------------------------


def _report() -> verify.Report:
    info = verify.CertInfo("ab" * 32, "CN=a.test", ("a.test",), NOW + datetime.timedelta(days=60, hours=1))
    other = verify.CertInfo("cd" * 32, "CN=b.test", ("b.test",), NOW + datetime.timedelta(days=5))
    smtp, imaps = verify.Port("smtp", 25), verify.Port("imaps", 993)
    good = verify.Served(info, "TLSv1.3", None)
    checks = (
        verify.Check(
            "a.test", "a.test", "/l/a.test", smtp, verify.OK, expected=info, served=good, hostname_ok=True
        ),
        verify.Check(
            "a.test",
            "a.test",
            "/l/a.test",
            imaps,
            verify.PROBLEM,
            (verify.WRONG_CERTIFICATE, verify.HOSTNAME_MISMATCH, verify.EXPIRING),
            "serves CN=b.test",
            info,
            verify.Served(other, "TLSv1.2", None),
            False,
        ),
        verify.Check("*.b.test", "mailstack-verify.b.test", "/l/b", smtp, verify.ERROR, detail="timed out"),
        verify.Check(
            "*.b.test", "mailstack-verify.b.test", "/l/b", imaps, verify.SKIPPED, detail="port closed"
        ),
    )
    defaults = (verify.Default(smtp, verify.OK, good), verify.Default(imaps, verify.SKIPPED, detail="closed"))
    return verify.Report("127.0.0.1", 14, NOW, defaults, checks)


def test_table_columns_line_up_and_problems_stand_out():
    text = verify.render_table(_report())
    lines = text.splitlines()
    header = lines[0]
    for column in ["SERVICE", "PORT", "RESULT", "CERT", "CHAIN", "HOSTNAME", "DAYS", "TLS", "DETAIL"]:
        start = header.index(column)
        for row in lines[1:5]:
            if len(row) > start:  # an empty last column is not padded
                assert row[start - 2 : start] == "  " and row[start] != " ", (column, row)
    assert lines[1].split()[:9] == ["a.test", "smtp", "25", "ok", "ok", "ok", "ok", "60", "TLSv1.3"]
    assert lines[2].split()[3:8] == ["PROBLEM", "WRONG", "ok", "NO", "5"]
    assert lines[3].split()[3:5] == ["ERROR", "-"] and lines[4].split()[3] == "skipped"
    assert "Without SNI" in text and "CN=a.test" in text
    assert (
        lines[-1]
        == "4 checks on 127.0.0.1: 1 ok, 1 with problems, 1 could not be checked, 1 skipped (closed ports)"
    )
    assert not any(line.endswith(" ") for line in lines)


def test_json_document_is_stable_and_complete():
    doc = json.loads(verify.render_json(_report()))
    assert list(doc) == [
        "schema", "version", "host", "checked_at", "expiry_days", "exit_code", "summary", "ports", "checks",
        "certificates",
    ]  # fmt: skip
    assert (doc["schema"], doc["version"], doc["exit_code"]) == ("certbot-mailstack/verify", 1, 1)
    assert doc["checked_at"] == "2030-01-01T00:00:00Z"
    assert doc["summary"] == {"ok": 1, "problem": 1, "error": 1, "skipped": 1}
    wrong = doc["checks"][1]
    assert wrong == {
        "name": "a.test",
        "sni": "a.test",
        "lineage": "/l/a.test",
        "service": "imaps",
        "port": 993,
        "status": "problem",
        "problems": ["wrong_certificate", "hostname_mismatch", "expiring"],
        "detail": "serves CN=b.test",
        "expected": "ab" * 32,
        "served": "cd" * 32,
        "protocol": "TLSv1.2",
        "chain_verified": True,
        "chain_error": None,
        "match": False,
        "hostname_match": False,
        "days_left": 5,
    }
    assert doc["checks"][2]["served"] is None and doc["checks"][2]["match"] is None
    assert doc["certificates"]["cd" * 32] == {
        "subject": "CN=b.test",
        "dns_names": ["b.test"],
        "not_after": "2030-01-06T00:00:00Z",
        "days_left": 5,
    }
    assert doc["ports"][1] == {
        "service": "imaps",
        "port": 993,
        "status": "skipped",
        "detail": "closed",
        "served": None,
        "protocol": None,
        "chain_verified": None,
        "chain_error": None,
    }


# -- the command ----------------------------------------------------------------------------------


def _deploy_state(config_dir: Path, plan: Plan, options: Optional[Dict[str, str]] = None) -> None:
    lineages = {
        lid: Lineage(lin.files, lin.names, check_files(lin.files).digest)
        for lid, lin in plan.lineages.items()
    }
    StateStore(str(config_dir)).save(State(options or {}, Plan(lineages)))


def test_verify_command_prints_json_and_exits_by_the_worst_cell(lab, tmp_path, capsys):
    ca, plan, server, _ = lab
    _deploy_state(tmp_path / "le", plan)
    base = ["verify", "--config-dir", str(tmp_path / "le"), "--ports", f"imaps={server.port}"]
    assert cli.main([*base, "--ca-file", str(ca.pem_path), "--json", "a.test"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in doc["checks"]] == ["ok"]
    assert cli.main([*base, "--ca-file", str(ca.pem_path)]) == 1
    out = capsys.readouterr().out
    assert "WRONG" in out and out.splitlines()[0].startswith("NAME")


@pytest.mark.parametrize(
    "args",
    [
        ["--ports", "imaps=99999"],
        ["--timeout", "0"],
        ["--concurrency", "many"],
        ["--expiry-days", "-1"],
        ["nosuch.test"],
    ],
)
def test_verify_command_refuses_bad_input_with_one_line_and_exit_2(tmp_path, capsys, args):
    _deploy_state(tmp_path, Plan())
    assert cli.main(["verify", "--config-dir", str(tmp_path), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("certbot-mailstack: error: ")


def test_verify_and_status_without_a_deployment_exit_2(tmp_path, capsys):
    for command in ["verify", "status"]:
        assert cli.main([command, "--config-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no deployment recorded" in err


# -- status ---------------------------------------------------------------------------------------


@pytest.fixture
def deployed(tmp_path):
    """State, map source and drop-in as a deployment leaves them, for a.test and *.b.test."""
    ca = CA(tmp_path / "ca")
    a = ca.lineage(tmp_path / "live" / "a.test", ["a.test", "mail.a.test"])
    b = ca.lineage(tmp_path / "live" / "b.test", ["*.b.test"])
    plan = plan_of((a, ["a.test", "mail.a.test"]), (b, ["*.b.test"]))
    options = {"postfix-dir": str(tmp_path / "pf"), "dovecot-dir": str(tmp_path / "dc")}
    settings = resolve(options)
    Path(settings.postfix_map).parent.mkdir(parents=True)
    Path(settings.postfix_map).write_text(render_map(plan))
    Path(settings.dovecot_config).parent.mkdir(parents=True)
    Path(settings.dovecot_config).write_text(render_dropin(plan))
    _deploy_state(tmp_path / "le", plan, options)
    return ca, tmp_path / "le", settings, (a, b)


def _status(config_dir: Path, settings, expiry_days: int = 14) -> status.StatusReport:
    store = StateStore(str(config_dir))
    return status.collect(store.load(), store.path, settings, expiry_days)


def test_status_of_a_fresh_deployment_is_clean(deployed, capsys):
    _, config_dir, settings, (a, _) = deployed
    report = _status(config_dir, settings)
    assert [(n.name, n.postfix, n.dovecot, n.problems) for n in report.names] == [
        ("a.test", "ok", "ok", ()),
        ("mail.a.test", "ok", "ok", ()),
        ("*.b.test", "ok", "ok", ()),
    ]
    assert report.exit_code() == 0
    assert cli.main(["status", "--config-dir", str(config_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["schema"], doc["version"], doc["summary"]) == (
        "certbot-mailstack/status",
        1,
        {"ok": 3, "problem": 0},
    )
    first = doc["names"][0]
    assert first["lineage"] == a.lineage_id and first["key_present"] and 88 <= first["days_left"] <= 89


def test_status_flags_stale_missing_other_and_expiring(deployed, capsys):
    ca, config_dir, settings, (a, b) = deployed
    ca.lineage(Path(a.lineage_id), ["a.test", "mail.a.test"])  # renewed on disk, not redeployed
    dropin = Path(settings.dovecot_config)
    dropin.write_text(dropin.read_text().replace(b.fullchain, a.fullchain))
    report = _status(config_dir, settings, expiry_days=100)
    names = {n.name: n for n in report.names}
    assert names["a.test"].postfix == "stale" and names["a.test"].dovecot == "ok"
    assert set(names["a.test"].problems) == {status.POSTFIX_STALE, status.EXPIRING}
    assert names["*.b.test"].dovecot == "other" and status.DOVECOT_OTHER in names["*.b.test"].problems
    assert report.exit_code() == 1

    Path(a.key).unlink()
    Path(settings.postfix_map).write_text(render_map(plan_of((b, ["*.b.test"]))))
    assert cli.main(["status", "--config-dir", str(config_dir)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("mail.a.test"))
    assert row.split()[2:8] == ["MISSING", "ok", "89", "MISSING", "ok", "PROBLEM"]


def test_status_reports_a_pending_reload(deployed, capsys):
    config_dir = deployed[1]
    store = StateStore(str(config_dir))
    store.save(replace(store.load(), pending_reload=frozenset({"dovecot"})))
    assert cli.main(["status", "--config-dir", str(config_dir)]) == 1
    assert "pending reload: dovecot" in capsys.readouterr().out
