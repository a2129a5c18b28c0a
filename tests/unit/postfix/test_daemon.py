"""Choosing the Postfix table type, against a stand-in ``postconf`` on PATH that answers like one
built with or without Berkeley DB, lmdb and cdb: a type that Postfix cannot build is refused with one
line saying why, where an ``auto`` type came from, and which type to use instead."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

from mailstack_installer.errors import MisconfiguredError
from mailstack_installer.postfix import Postfix
from mailstack_installer.settings import resolve

WITHOUT_BDB = ("cdb", "cidr", "lmdb", "regexp")  # as on RHEL 10 with postfix-lmdb and postfix-cdb
DEBIAN_PLAIN = ("btree", "cidr", "hash", "regexp")  # Debian without postfix-lmdb and postfix-cdb

# postconf -c DIR -m | -h NAME... | -n NAME...: the types and built-in defaults come from
# postfix.json beside the script, explicit settings from DIR/main.cf ("name = value" lines).
STANDIN = """\
#!{python}
import json, os, sys
fake = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "postfix.json")))
assert sys.argv[1] == "-c", sys.argv
config_dir, mode, names = sys.argv[2], sys.argv[3], sys.argv[4:]
if mode == "-m":
    print("\\n".join(fake["types"]))
    sys.exit(0)
explicit = dict(
    (k.strip(), v.strip())
    for k, _, v in (line.partition("=") for line in open(os.path.join(config_dir, "main.cf")))
    if v
)
for name in names:
    if mode == "-n" and name in explicit:
        print(name + " = " + explicit[name])
    elif mode == "-h":
        print(explicit.get(name, fake["defaults"].get(name, "")))
"""


@pytest.fixture
def fake_postfix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Make a Postfix for ``postconf -m`` types, built-in default type and main.cf settings."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "postconf"
    script.write_text(STANDIN.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    config_dir = tmp_path / "pf"
    config_dir.mkdir()

    def make(
        types: Sequence[str],
        map_type: str,
        builtin_default: str = "hash",
        main_cf: Optional[Dict[str, str]] = None,
    ) -> Postfix:
        fake = {"types": list(types), "defaults": {"default_database_type": builtin_default}}
        (bindir / "postfix.json").write_text(json.dumps(fake))
        lines = [f"{name} = {value}\n" for name, value in (main_cf or {}).items()]
        (config_dir / "main.cf").write_text("".join(lines))
        return Postfix(resolve({"postfix-dir": str(config_dir), "postfix-map-type": map_type}))

    return make


def refusal(postfix: Postfix) -> str:
    with pytest.raises(MisconfiguredError) as info:
        postfix.map_type()
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def test_hash_on_a_postfix_without_berkeley_db_says_so_and_offers_lmdb(fake_postfix) -> None:
    message = refusal(fake_postfix(WITHOUT_BDB, "hash"))
    assert message == (
        "this Postfix is built without Berkeley DB, so map type hash is unavailable: "
        "use --postfix-map-type lmdb (postconf -m lists: cdb, cidr, lmdb, regexp)"
    )


def test_btree_without_berkeley_db_offers_cdb_when_cdb_is_the_only_one_built(fake_postfix) -> None:
    message = refusal(fake_postfix(("cdb", "regexp"), "btree"))
    assert message.startswith("this Postfix is built without Berkeley DB, so map type btree is unavailable")
    assert "use --postfix-map-type cdb (postconf -m lists: cdb, regexp)" in message


def test_hash_without_berkeley_db_lmdb_or_cdb_says_what_to_install(fake_postfix) -> None:
    message = refusal(fake_postfix(("cidr", "regexp"), "hash"))
    assert "built without Berkeley DB" in message
    assert "postconf -m lists none of hash, btree, lmdb, cdb" in message
    assert "install Postfix's lmdb or cdb support" in message


def test_missing_lmdb_names_its_package_and_offers_a_type_that_is_built(fake_postfix) -> None:
    message = refusal(fake_postfix(DEBIAN_PLAIN, "lmdb"))
    assert message == (
        "this Postfix does not support map type lmdb (is its postfix-lmdb package installed?): "
        "use --postfix-map-type hash (postconf -m lists: btree, cidr, hash, regexp)"
    )


def test_auto_names_default_database_type_in_main_cf_when_that_type_is_missing(fake_postfix) -> None:
    postfix = fake_postfix(DEBIAN_PLAIN, "auto", main_cf={"default_database_type": "lmdb"})
    message = refusal(postfix)
    assert message.startswith(
        "this Postfix does not support map type lmdb (--postfix-map-type auto took it from "
        f"default_database_type in {postfix.main_cf}) (is its postfix-lmdb package installed?): "
    )
    assert "use --postfix-map-type hash" in message


def test_auto_names_the_built_in_default_when_main_cf_does_not_set_it(fake_postfix) -> None:
    message = refusal(fake_postfix(WITHOUT_BDB, "auto", builtin_default="hash"))
    assert message.startswith(
        "this Postfix is built without Berkeley DB, so map type hash (--postfix-map-type auto took it "
        "from Postfix's built-in default_database_type) is unavailable: use --postfix-map-type lmdb"
    )


def test_auto_names_the_sni_map_already_in_use_when_its_type_is_missing(fake_postfix, tmp_path) -> None:
    in_use = {"tls_server_sni_maps": f"cdb:{tmp_path / 'pf' / 'tls_server_sni_maps'}"}
    postfix = fake_postfix(("btree", "hash", "lmdb"), "auto", main_cf=in_use)
    message = refusal(postfix)
    origin = f"took it from tls_server_sni_maps in {postfix.main_cf}"
    assert f"map type cdb (--postfix-map-type auto {origin})" in message
    assert "use --postfix-map-type lmdb" in message


def test_auto_default_type_that_cannot_hold_an_sni_map_is_refused_naming_it(fake_postfix) -> None:
    postfix = fake_postfix(WITHOUT_BDB, "auto", main_cf={"default_database_type": "texthash"})
    message = refusal(postfix)
    assert message.startswith(
        "Postfix map type 'texthash' (--postfix-map-type auto took it from default_database_type in "
        f"{postfix.main_cf}) cannot hold an SNI map: use --postfix-map-type lmdb"
    )


@pytest.mark.parametrize(
    ("types", "map_type", "main_cf", "expected"),
    [
        (WITHOUT_BDB, "cdb", {}, "cdb"),
        (DEBIAN_PLAIN, "btree", {}, "btree"),
        (DEBIAN_PLAIN, "auto", {}, "hash"),
        (WITHOUT_BDB, "auto", {"default_database_type": "lmdb"}, "lmdb"),
        (("cdb", "hash", "lmdb"), "auto", {"tls_server_sni_maps": "cdb:{map}"}, "cdb"),
    ],
    ids=["given-cdb", "given-btree", "auto-built-in-hash", "auto-main-cf-lmdb", "auto-in-use-cdb"],
)
def test_a_type_this_postfix_builds_is_used(
    fake_postfix, tmp_path, types, map_type, main_cf, expected
) -> None:
    main_cf = {k: v.format(map=tmp_path / "pf" / "tls_server_sni_maps") for k, v in main_cf.items()}
    postfix = fake_postfix(types, map_type, main_cf=main_cf)
    assert postfix.map_type() == expected
    assert postfix.table_of(postfix.settings.postfix_map).endswith(
        {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}[expected]
    )
