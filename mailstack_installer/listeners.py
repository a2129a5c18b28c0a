"""Verify step, part 1: where the daemons listen for TLS, read from their own configuration.

Used to confirm after a reload that a daemon really serves the new certificates (``doveadm
reload`` exits 0 even when Dovecot keeps its old configuration), on whatever ports this host uses.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Dict, List, Optional

from . import runner
from .dovecot import Dovecot, doveconf_values
from .settings import Settings

_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Listener:
    """One TLS-capable port: ``mode`` is how TLS starts (probe.py: smtp, imap, pop3, tls)."""

    daemon: str
    host: str
    port: int
    mode: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.mode})"


def _connect_host(address: str) -> str:
    address = address.strip().strip("[]")
    if address in ("", "*", "0.0.0.0", "all", "loopback-only", "localhost", "::"):
        return _LOOPBACK
    return address


def _port(value: str) -> Optional[int]:
    if value.isdigit():
        return int(value)
    try:
        return socket.getservbyname(value, "tcp")
    except OSError:
        return None


def postfix_listeners(postfix_dir: str) -> List[Listener]:
    """smtpd services of type inet in master.cf; wrapper mode (SMTPS) from their ``-o`` overrides."""
    masters = runner.run(["postconf", "-c", postfix_dir, "-M"]).stdout
    overrides: Dict[str, str] = {}
    for line in runner.run(["postconf", "-c", postfix_dir, "-P"]).stdout.splitlines():
        key, _, value = line.partition(" = ")
        overrides[key.strip()] = value.strip()
    interfaces = runner.run(["postconf", "-c", postfix_dir, "-h", "inet_interfaces"]).stdout
    default_host = _connect_host(first_address(interfaces))
    found = []
    for line in masters.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[1] != "inet" or fields[7] != "smtpd":
            continue
        name = fields[0]
        host, _, service = name.rpartition(":")
        port = _port(service)
        if port is None:
            continue
        wrapper = overrides.get(f"{name}/inet/smtpd_tls_wrappermode", "no") == "yes"
        found.append(Listener("postfix", _connect_host(host) if host else default_host, port,
                              "tls" if wrapper else "smtp"))  # fmt: skip
    return found


def first_address(listen: str) -> str:
    """The first address of an address list: Dovecot 2.3 prints ``listen`` as ``*, ::``, 2.4 as
    ``* ::``; Postfix's ``inet_interfaces`` takes either separator."""
    parts = [part for part in re.split(r"[\s,]+", listen.strip()) if part]
    return parts[0] if parts else ""


def dovecot_listeners(conf: str) -> List[Listener]:
    """inet_listeners of the imap-login and pop3-login services (``doveconf service`` shows defaults)."""
    out = runner.run(["doveconf", "-c", conf, "service"]).stdout
    listen = first_address(doveconf_values(conf, ["listen"])["listen"])
    found = []
    stack: List[str] = []  # open sections, e.g. ["service imap-login", "inet_listener imaps"]
    settings: Dict[str, str] = {}
    for raw in out.splitlines():
        line = raw.strip()
        if line.endswith("{"):
            stack.append(line[:-1].strip())
            settings = {}
        elif line == "}":
            section = stack.pop() if stack else ""
            outer = stack[-1] if stack else ""
            protocol = {"service imap-login": "imap", "service pop3-login": "pop3"}.get(outer)
            port = int(settings.get("port", "0") or 0)
            if section.startswith("inet_listener ") and protocol and port:
                mode = "tls" if settings.get("ssl") == "yes" else protocol
                found.append(
                    Listener(
                        "dovecot",
                        _connect_host(first_address(settings.get("address", "")) or listen),
                        port,
                        mode,
                    )
                )
        elif " = " in line:
            key, _, value = line.partition(" = ")
            settings[key] = value
    return found


def for_daemon(settings: Settings, daemon: str) -> List[Listener]:
    """The TLS listeners of ``daemon`` ("postfix" or "dovecot") as its configuration names them."""
    if daemon == "postfix":
        return postfix_listeners(settings.postfix_dir)
    with Dovecot(settings).settings_conf() as conf:  # without our blocks: fast at any size
        return dovecot_listeners(conf)
