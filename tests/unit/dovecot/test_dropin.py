"""The Dovecot drop-in against each version's rules.

2.4 (docs/core/config/ssl.md, config-parser.c): ``ssl_server_cert_file``/``ssl_server_key_file``
take plain paths (a ``<`` would put PEM where a path belongs); one name per ``local_name``
("Multiple names no longer supported"); the last matching block wins, so wildcards come first.
2.3: ``ssl_cert = <file`` reads the file; one block may list several names; the first match wins,
so exact names come first."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import pytest

from mailstack_installer.dovecot import Dovecot
from mailstack_installer.dovecot.dropin import block_count, parse_dropin, render_dropin, required_limit_mb
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.postfix.mapfile import render_map
from mailstack_installer.settings import resolve


def files(name: str) -> CertFiles:
    return CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")


PLAN = Plan().with_lineages(
    [
        Lineage(files("a"), ("a.test", "mail.a.test", "*.a.test")),
        Lineage(files("w"), ("*.b.test",)),
        Lineage(files("b"), ("x.b.test", "imap.b.test")),
    ]
)


_BLOCK = re.compile(r'^local_name "([^"]*)" \{\n((?:  .*\n)*)\}\n', re.M)


def blocks(text: str) -> List[Tuple[str, List[str]]]:
    """(quoted name, setting lines) for every local_name block, in file order."""
    return [(name, [line.strip() for line in body.splitlines()]) for name, body in _BLOCK.findall(text)]


def test_24_uses_the_renamed_settings_with_plain_paths():
    text = render_dropin(PLAN, "2.4")
    assert "<" not in text
    assert "ssl_cert" not in text and "ssl_key" not in text
    for name, settings in blocks(text):
        lineage = "a" if name.endswith("a.test") else ("w" if name == "*.b.test" else "b")
        assert settings == [
            f"ssl_server_cert_file = /le/live/{lineage}/fullchain.pem",
            f"ssl_server_key_file = /le/live/{lineage}/privkey.pem",
        ], name


def test_24_has_exactly_one_name_per_block():
    found = blocks(render_dropin(PLAN, "2.4"))
    names = [name for name, _ in found]
    assert all(" " not in name and name for name in names)
    assert sorted(names) == sorted(PLAN.names())
    assert block_count(PLAN, "2.4") == len(names) == 6
    assert render_dropin(PLAN, "2.4").count("local_name") == 6


def test_24_puts_every_wildcard_before_every_exact_name_because_the_last_match_wins():
    names = [name for name, _ in blocks(render_dropin(PLAN, "2.4"))]
    kinds = [name.startswith("*.") for name in names]
    assert kinds == sorted(kinds, reverse=True), names
    assert names.index("*.a.test") < names.index("mail.a.test")
    assert names.index("*.b.test") < names.index("x.b.test")


def test_24_sizes_the_config_process_limit_from_its_own_per_block_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on Debian 13: 10,002 blocks peak at 215 MB under the default 256 MB limit; 20,006
    blocks fail under it and serve under 2 GB (measured on Debian 13)."""
    assert "vsz_limit" not in render_dropin(PLAN, "2.4")
    settings = resolve({"dovecot-dir": str(tmp_path), "dovecot-syntax": "2.4"})
    dovecot = Dovecot(settings)
    monkeypatch.setattr(Dovecot, "base_limit_mb", lambda self: 256)  # Debian's default
    assert dovecot._limit_for("2.4", 2_000, None) is None
    assert dovecot._limit_for("2.4", 5_000, None) == 1024
    assert dovecot._limit_for("2.4", 20_006, None) == 2048
    assert "vsz_limit = 2048M" in render_dropin(PLAN, "2.4", 2048)
    assert required_limit_mb(10_002, "2.4") < required_limit_mb(10_002, "2.3")


def test_24_drop_in_is_only_blocks_and_comments():
    text = render_dropin(PLAN, "2.4")
    outside = _BLOCK.sub("", text)
    assert all(line.startswith("#") for line in outside.splitlines() if line.strip()), outside


def test_23_reads_the_files_with_less_than():
    for _name, settings in blocks(render_dropin(PLAN, "2.3")):
        assert len(settings) == 2
        assert settings[0].startswith("ssl_cert = </le/live/") and settings[0].endswith("/fullchain.pem")
        assert settings[1].startswith("ssl_key = </le/live/") and settings[1].endswith("/privkey.pem")


def test_23_lists_a_lineages_names_in_one_block_exact_before_wildcard():
    names = [name for name, _ in blocks(render_dropin(PLAN, "2.3"))]
    assert names == ["a.test mail.a.test", "imap.b.test x.b.test", "*.a.test", "*.b.test"]
    assert block_count(PLAN, "2.3") == 4


def plan_of(*lineages: Lineage) -> Plan:
    plan = Plan()
    for lineage in lineages:
        plan = plan.with_lineage(lineage)
    return plan


def test_dovecot_block_per_lineage_with_exact_names_before_any_wildcard():
    plan = plan_of(
        Lineage(files("w"), ("*.b.test",)),
        Lineage(files("a"), ("a.test", "mail.a.test", "*.a.test")),
        Lineage(files("b"), ("x.b.test",)),
    )
    text = render_dropin(plan)
    heads = [line for line in text.splitlines() if line.startswith("local_name")]
    assert heads == [
        'local_name "a.test mail.a.test" {',
        'local_name "x.b.test" {',
        'local_name "*.a.test" {',
        'local_name "*.b.test" {',
    ]
    assert "  ssl_cert = </le/live/a/fullchain.pem\n  ssl_key = </le/live/a/privkey.pem\n" in text
    assert "cert.pem" not in text.replace("fullchain.pem", "")


def test_empty_plan_renders_only_headers():
    assert [line for line in render_map(Plan()).splitlines() if not line.startswith("#")] == []
    assert "local_name" not in render_dropin(Plan())


DUAL_PLAN = Plan().with_lineages(
    [
        Lineage(files("a"), ("a.test", "mail.a.test", "*.a.test")),
        Lineage(files("d-ec"), ("mail.d.test",), key_type="ec"),
        Lineage(files("d-rsa"), ("mail.d.test",), key_type="rsa"),
    ]
)


@pytest.mark.parametrize("syntax", ["2.3", "2.4"])
def test_the_drop_in_reads_back_as_written_in_either_syntax(syntax: str) -> None:
    text = render_dropin(DUAL_PLAN, syntax, default=files("a"))
    read = parse_dropin(text)
    assert read["mail.a.test"] == ["/le/live/a/fullchain.pem"]
    assert read["*.a.test"] == ["/le/live/a/fullchain.pem"]
    assert read["mail.d.test"] == ["/le/live/d-ec/fullchain.pem", "/le/live/d-rsa/fullchain.pem"]
    assert set(read) == {"a.test", "mail.a.test", "*.a.test", "mail.d.test"}


def test_an_emptied_alternative_is_not_read_as_a_file() -> None:
    """Under a dual default a one-lineage block clears the alternative pair (``name =``)."""
    dual_default = (files("d-ec"), files("d-rsa"))
    text = render_dropin(DUAL_PLAN, "2.4", default=dual_default)
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
