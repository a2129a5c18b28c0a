"""Dovecot 2.4 where it prints or parses differently from 2.3: the listen list, the
drop-in read back by status, the settings doveconf prints, and a reload that leaves TLS dark."""

from __future__ import annotations

import gc
import socket
import threading
import warnings
from typing import Iterator, List

import pytest

from mailstack_installer import confirm as confirm_module
from mailstack_installer.confirm import DarkError, confirm
from mailstack_installer.dovecot import daemon as dovecot_module
from mailstack_installer.dovecot.daemon import doveconf_values
from mailstack_installer.dovecot.dropin import parse_dropin, render_dropin
from mailstack_installer.listeners import Listener, first_address
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.probe import ProbeError, served_certificate
from mailstack_installer.runner import Result


@pytest.mark.parametrize(
    "printed, first",
    [("* ::", "*"), ("*, ::", "*"), ("  127.0.0.1   ::1\n", "127.0.0.1"), ("[::1]", "[::1]"), ("", "")],
)
def test_first_listen_address_of_either_version(printed: str, first: str) -> None:
    assert first_address(printed) == first


def files(name: str) -> CertFiles:
    return CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")


PLAN = Plan().with_lineages(
    [
        Lineage(files("a"), ("a.test", "mail.a.test", "*.a.test")),
        Lineage(files("d-ec"), ("mail.d.test",), key_type="ec"),
        Lineage(files("d-rsa"), ("mail.d.test",), key_type="rsa"),
    ]
)


@pytest.mark.parametrize("syntax", ["2.3", "2.4"])
def test_the_drop_in_reads_back_as_written_in_either_syntax(syntax: str) -> None:
    text = render_dropin(PLAN, syntax, default=files("a"))
    read = parse_dropin(text)
    assert read["mail.a.test"] == ["/le/live/a/fullchain.pem"]
    assert read["*.a.test"] == ["/le/live/a/fullchain.pem"]
    assert read["mail.d.test"] == ["/le/live/d-ec/fullchain.pem", "/le/live/d-rsa/fullchain.pem"]
    assert set(read) == {"a.test", "mail.a.test", "*.a.test", "mail.d.test"}


def test_an_emptied_alternative_is_not_read_as_a_file() -> None:
    """Under a dual default a one-lineage block clears the alternative pair (``name =``)."""
    dual_default = (files("d-ec"), files("d-rsa"))
    text = render_dropin(PLAN, "2.4", default=dual_default)
    assert "ssl_server_alt_cert_file =\n" in text
    assert parse_dropin(text)["a.test"] == ["/le/live/a/fullchain.pem"]


def test_24_serves_a_name_from_the_last_block_2_3_from_the_first() -> None:
    blocks24 = (
        'local_name "x.test" {\n  ssl_server_cert_file = /one\n}\n'
        'local_name "x.test" {\n  ssl_server_cert_file = /two\n}\n'
    )
    blocks23 = 'local_name "x.test" {\n  ssl_cert = </one\n}\nlocal_name "x.test" {\n  ssl_cert = </two\n}\n'
    assert parse_dropin(blocks24)["x.test"] == ["/two"]
    assert parse_dropin(blocks23)["x.test"] == ["/one"]


def test_doveconf_values_of_either_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """2.4 prints nothing for a service limit left unset; 2.3 prints the largest size."""
    printed = {
        "2.4": "default_vsz_limit = 256 M\nlisten = * ::\n",
        "2.3": "service/config/vsz_limit = 18446744073709551615 B\n"
        "default_vsz_limit = 256 M\nlisten = *, ::\n",
    }
    for version, out in printed.items():
        monkeypatch.setattr(dovecot_module.runner, "run", lambda argv, out=out, **kw: Result(0, out, ""))
        values = doveconf_values(
            "/etc/dovecot/dovecot.conf", ["service/config/vsz_limit", "default_vsz_limit", "listen"]
        )
        assert values["default_vsz_limit"] == "256 M", version
        assert first_address(values["listen"]) == "*", version
        assert values["service/config/vsz_limit"] in ("", "18446744073709551615 B"), version


@pytest.fixture
def reset_port() -> Iterator[int]:
    """A port that accepts TCP connections and resets each at once, as Dovecot's login processes
    do when the config process died (seen on Debian 13)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_daemon_that_resets_every_connection_is_dark_not_a_warning(reset_port: int) -> None:
    listeners: List[Listener] = [Listener("dovecot", "127.0.0.1", reset_port, "tls")]
    with pytest.raises(DarkError, match=r"dovecot serves no TLS after the reload: no handshake within 1 s"):
        confirm("dovecot", listeners, {}, timeout=1.0)


def test_a_reset_before_the_handshake_leaks_no_socket(reset_port: int) -> None:
    """Through ``wrap_socket`` about one probe in ten left a socket for the garbage collector
    when the reset came before the handshake (a ResourceWarning: the build's ``-W error`` failed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(300):
            with pytest.raises(ProbeError):
                served_certificate("127.0.0.1", reset_port, "tls", None, 1.0)
        gc.collect()
    assert [str(item.message) for item in caught if item.category is ResourceWarning] == []


def test_a_listener_that_served_before_must_serve_again(reset_port: int) -> None:
    """Dovecot throttles a login service that failed: IMAP may stay dark while POP3 answers."""
    listeners: List[Listener] = [Listener("dovecot", "127.0.0.1", reset_port, "tls")]
    with pytest.raises(DarkError, match=r"serves no TLS on 127.0.0.1:\d+ \(tls\) 1 s after the reload"):
        confirm("dovecot", listeners, {}, timeout=1.0, before=listeners)


def test_a_configuration_without_tls_listeners_is_only_a_warning() -> None:
    assert "no TLS listener found" in (confirm("postfix", [], {}, timeout=0.1) or "")


def test_the_dark_check_retries_until_the_daemon_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot 2.4 serves no TLS for ~10 s after a reload at 10,000 names: not yet dark."""
    calls: List[int] = []

    def served(host: str, port: int, mode: str, name: object, timeout: float, *rest: object) -> bytes:
        calls.append(port)
        if len(calls) < 4:
            raise confirm_module.ProbeError("connection reset")
        return b"leaf"

    monkeypatch.setattr(confirm_module, "served_certificate", served)
    assert confirm("dovecot", [Listener("dovecot", "127.0.0.1", 993, "tls")], {}, timeout=5.0) is None
    assert len(calls) == 4


class _Running(dovecot_module.Dovecot):
    """A Dovecot whose running config process has ``running`` MB and whose live drop-in has
    ``live`` blocks (no daemon: the decision only)."""

    def __init__(self, running: int, live: int, syntax: str) -> None:
        self._running, self._live, self._syntax = running, live, syntax

    def is_running(self) -> bool:
        return True

    def running_limit_mb(self, wait: float) -> int:
        return self._running

    def current(self) -> bytes:
        return b"# head\n" + b'\nlocal_name "x" {\n}\n' * self._live

    def syntax(self) -> str:
        return self._syntax


@pytest.mark.parametrize(
    "running, live, blocks, step",
    [
        (2048, 20_000, 20_002, None),  # the running limit holds a reload of both
        (256, 100, 9_000, "reload"),  # grows past it: raise the limit by reload first
        (256, 10_000, 10_002, "restart"),  # even a reload of the live blocks does not fit
    ],
)
def test_24_limit_step(running: int, live: int, blocks: int, step: object) -> None:
    assert _Running(running, live, "2.4").limit_step(2048, blocks) == step


def test_no_limit_no_step() -> None:
    assert _Running(256, 10_000, "2.4").limit_step(None, 20_000) is None
