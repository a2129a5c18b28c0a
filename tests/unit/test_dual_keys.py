"""Dual keys: an RSA and an ECDSA lineage for the same names are served side by side, and only
such a pair shares a name (plan rules, rendering, state, the map content check's digests)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailstack_installer import certfiles
from mailstack_installer.dovecot.dropin import block_count, parse_dropin, render_dropin
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.pipeline import _typed, default_files
from mailstack_installer.postfix.mapfile import chain_value, entry_changes, parse_source, render_map
from mailstack_installer.state import State
from mailstack_installer.verify import select
from tests.lab.certs import make_self_signed


def files(name: str) -> CertFiles:
    return CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")


def lineage(name: str, names: tuple[str, ...], key_type: str) -> Lineage:
    return Lineage(files(name), names, f"digest-{name}", key_type)


RSA = lineage("a-rsa", ("mail.a.test", "a.test", "*.a.test"), "rsa")
EC = lineage("a-ec", ("mail.a.test", "a.test", "*.a.test"), "ec")


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


# -- who serves a name -------------------------------------------------------------------------------


def test_an_rsa_and_an_ecdsa_lineage_both_keep_their_names_and_ecdsa_is_primary():
    plan = Plan().with_lineages([RSA]).with_lineage(EC)
    assert plan.lineages["/le/live/a-rsa"].names == RSA.names
    assert plan.lineages["/le/live/a-ec"].names == EC.names
    assert dict(plan.files_by_name())["mail.a.test"] == (EC.files, RSA.files)
    assert plan.names() == ["a.test", "mail.a.test", "*.a.test"]  # each name once
    assert plan.dual_names() == {"a.test", "mail.a.test", "*.a.test"}


def test_a_lineage_takes_a_name_only_from_one_of_the_same_key_type():
    newer_rsa = lineage("b-rsa", ("mail.a.test",), "rsa")
    plan = Plan().with_lineages([RSA, EC]).with_lineage(newer_rsa)
    assert plan.lineages["/le/live/a-rsa"].names == ("a.test", "*.a.test")
    assert plan.lineages["/le/live/a-ec"].names == EC.names
    assert dict(plan.files_by_name())["mail.a.test"] == (EC.files, newer_rsa.files)
    assert dict(plan.files_by_name())["a.test"] == (EC.files, RSA.files)


def test_in_one_batch_the_later_of_the_same_type_wins_and_the_other_type_stays():
    first, second = lineage("x1", ("m.x.test",), "ec"), lineage("x2", ("m.x.test",), "ec")
    rsa = lineage("x3", ("m.x.test",), "rsa")
    plan = Plan().with_lineages([first, rsa, second])
    assert sorted(plan.lineages) == ["/le/live/x2", "/le/live/x3"]
    assert dict(plan.files_by_name())["m.x.test"] == (second.files, rsa.files)


def test_other_key_types_and_unknown_types_serve_a_name_alone():
    ed = lineage("ed", ("mail.a.test",), "ed25519")
    plan = Plan().with_lineages([RSA, EC, ed])
    assert dict(plan.files_by_name())["mail.a.test"] == (ed.files,)
    back = plan.with_lineage(lineage("c-rsa", ("mail.a.test",), "rsa"))  # takes it from the Ed25519 one
    assert dict(back.files_by_name())["mail.a.test"] == (files("c-rsa"),)
    unknown = Lineage(files("old"), ("mail.a.test",), "d")  # "" = state from before key types
    assert dict(Plan().with_lineages([RSA, EC, unknown]).files_by_name())["mail.a.test"] == (unknown.files,)
    assert dict(Plan().with_lineages([unknown, EC]).files_by_name())["mail.a.test"] == (EC.files,)


def test_an_unknown_type_is_read_from_the_key_file_only_when_it_shares_a_name(tmp_path: Path):
    key, cert = make_self_signed(tmp_path / "old", "mail.a.test")  # RSA
    old = Lineage(CertFiles(str(key), str(cert)), ("mail.a.test",), "d")
    elsewhere = Lineage(CertFiles(str(tmp_path / "missing.key"), "/x/fullchain.pem"), ("b.test",), "d")
    plan = Plan({old.id: old, elsewhere.id: elsewhere})
    typed = _typed(plan, [EC])
    assert typed.lineages[old.id].key_type == "rsa"
    assert typed.lineages[elsewhere.id].key_type == ""  # not asked: its key is never read
    assert dict(typed.with_lineage(EC).files_by_name())["mail.a.test"] == (EC.files, old.files)
    assert dict(plan.with_lineage(EC).files_by_name())["mail.a.test"] == (EC.files,)  # untyped: taken


# -- rendering ---------------------------------------------------------------------------------------


def test_postfix_line_lists_the_ecdsa_pair_then_the_rsa_pair():
    plan = Plan().with_lineages([RSA, EC, lineage("b", ("b.test",), "rsa")])
    assert body(render_map(plan)) == [
        "a.test /le/live/a-ec/privkey.pem /le/live/a-ec/fullchain.pem "
        "/le/live/a-rsa/privkey.pem /le/live/a-rsa/fullchain.pem",
        "b.test /le/live/b/privkey.pem /le/live/b/fullchain.pem",
        "mail.a.test /le/live/a-ec/privkey.pem /le/live/a-ec/fullchain.pem "
        "/le/live/a-rsa/privkey.pem /le/live/a-rsa/fullchain.pem",
        ".a.test /le/live/a-ec/privkey.pem /le/live/a-ec/fullchain.pem "
        "/le/live/a-rsa/privkey.pem /le/live/a-rsa/fullchain.pem",
    ]
    assert parse_source(render_map(plan))["a.test"] == [
        ("/le/live/a-ec/privkey.pem", "/le/live/a-ec/fullchain.pem"),
        ("/le/live/a-rsa/privkey.pem", "/le/live/a-rsa/fullchain.pem"),
    ]


def test_dovecot_23_one_block_per_set_of_files_with_the_rsa_pair_as_alternative():
    only_ec = lineage("a-ec", ("mail.a.test", "a.test", "*.a.test", "imap.a.test"), "ec")
    plan = Plan().with_lineages([RSA, only_ec])
    text = render_dropin(plan)
    assert [line for line in text.splitlines() if line.startswith("local_name")] == [
        'local_name "imap.a.test" {',
        'local_name "a.test mail.a.test" {',
        'local_name "*.a.test" {',
    ]
    assert (
        'local_name "a.test mail.a.test" {\n'
        "  ssl_cert = </le/live/a-ec/fullchain.pem\n"
        "  ssl_key = </le/live/a-ec/privkey.pem\n"
        "  ssl_alt_cert = </le/live/a-rsa/fullchain.pem\n"
        "  ssl_alt_key = </le/live/a-rsa/privkey.pem\n"
        "}\n"
    ) in text
    assert 'local_name "imap.a.test" {\n  ssl_cert = </le/live/a-ec/fullchain.pem\n  ssl_key = ' in text
    assert block_count(plan) == 3
    assert parse_dropin(text)["mail.a.test"] == [
        "/le/live/a-ec/fullchain.pem",
        "/le/live/a-rsa/fullchain.pem",
    ]


def test_dovecot_24_one_name_per_block_wildcards_first_with_alt_files():
    text = render_dropin(Plan().with_lineages([RSA, EC]), "2.4")
    assert [line for line in text.splitlines() if line.startswith("local_name")] == [
        'local_name "*.a.test" {',
        'local_name "a.test" {',
        'local_name "mail.a.test" {',
    ]
    assert (
        'local_name "a.test" {\n'
        "  ssl_server_cert_file = /le/live/a-ec/fullchain.pem\n"
        "  ssl_server_key_file = /le/live/a-ec/privkey.pem\n"
        "  ssl_server_alt_cert_file = /le/live/a-rsa/fullchain.pem\n"
        "  ssl_server_alt_key_file = /le/live/a-rsa/privkey.pem\n"
        "}\n"
    ) in text
    assert "<" not in text


def test_a_dual_default_serves_both_and_one_lineage_blocks_do_not_inherit_its_alternative():
    single = lineage("b", ("b.test",), "rsa")
    plan = Plan().with_lineages([RSA, EC, single])
    default = default_files(plan, "mail.a.test")
    assert default == (EC.files, RSA.files) and default_files(plan, "mail.a.test")[0] == EC.files
    assert default_files(plan, "imap.a.test") == (EC.files, RSA.files)  # through the wildcard
    assert chain_value(default) == (
        "/le/live/a-ec/privkey.pem, /le/live/a-ec/fullchain.pem, "
        "/le/live/a-rsa/privkey.pem, /le/live/a-rsa/fullchain.pem"
    )
    text = render_dropin(plan, default=default)
    head = text[: text.index("local_name")]
    assert "ssl_cert = </le/live/a-ec/fullchain.pem\n" in head
    assert "ssl_alt_cert = </le/live/a-rsa/fullchain.pem\nssl_alt_key = </le/live/a-rsa/privkey.pem\n" in head
    assert (
        'local_name "b.test" {\n  ssl_cert = </le/live/b/fullchain.pem\n  ssl_key = </le/live/b/privkey.pem\n'
        "  ssl_alt_cert =\n  ssl_alt_key =\n}\n"
    ) in text
    # A one-lineage default changes nothing in the blocks (byte-identical to before dual keys).
    assert "ssl_alt" not in render_dropin(plan.without([RSA.id]), default=EC.files)


def test_a_renewal_of_either_lineage_rewrites_the_shared_entries():
    before = Plan().with_lineages([RSA, EC, lineage("b", ("b.test",), "ec")])
    written, removed = entry_changes(before, before, [RSA.id])
    assert sorted(written) == [".a.test", "a.test", "mail.a.test"] and removed == []
    after = before.without([RSA.id])
    written, removed = entry_changes(before, after, [])
    assert sorted(written) == [".a.test", "a.test", "mail.a.test"]
    assert all(serving == (EC.files,) for serving in written.values()) and removed == []


def test_verify_checks_a_dual_name_once_per_lineage():
    plan = Plan().with_lineages([RSA, EC])
    assert select(plan, ["MAIL.a.test"]) == [("mail.a.test", EC.files), ("mail.a.test", RSA.files)]
    assert len(select(plan, [])) == 6


# -- state and files ---------------------------------------------------------------------------------


def test_state_keeps_the_key_type_and_an_older_state_without_it_loads_as_unknown():
    state = State(plan=Plan().with_lineages([RSA, EC]))
    text = state.to_json()
    rows = {row[1]: row for row in json.loads(text)["lineages"]}
    assert rows["/le/live/a-rsa/fullchain.pem"][3] == "rsa"
    assert State.from_json(text, "state.json").plan == state.plan
    # A version 1 file (an object per lineage) from before key types were kept.
    doc = json.loads(text)
    doc["version"] = 1
    doc["lineages"] = {
        lin.id: {"key": lin.files.key, "fullchain": lin.files.fullchain, "names": list(lin.names),
                 "digest": lin.digest}
        for lin in (RSA, EC)
    }  # fmt: skip
    old = State.from_json(json.dumps(doc), "state.json").plan
    assert {lin.key_type for lin in old.lineages.values()} == {""}
    assert old.lineages["/le/live/a-ec"].names == EC.names


def test_key_type_comes_from_the_private_key(tmp_path: Path):
    rsa_key, rsa_cert = make_self_signed(tmp_path / "r", "r.test")
    ec_key, ec_cert = make_self_signed(tmp_path / "e", "e.test", ec=True)
    assert certfiles.check_files(CertFiles(str(rsa_key), str(rsa_cert))).key_type == "rsa"
    assert certfiles.check_files(CertFiles(str(ec_key), str(ec_cert))).key_type == "ec"
    assert certfiles.key_type(ed25519.Ed25519PrivateKey.generate()) == "ed25519"
    assert certfiles.key_type_of_file(str(tmp_path / "missing.pem")) == ""
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ed.pem").write_bytes(ed)
    assert certfiles.key_type_of_file(str(tmp_path / "ed.pem")) == "ed25519"


def test_pair_digests_split_a_decoded_dual_entry_into_each_lineage_digest(tmp_path: Path):
    pairs = [make_self_signed(tmp_path, "e.test", ec=True), make_self_signed(tmp_path, "r.test")]
    data = [key.read_bytes() + b"\n" + cert.read_bytes() for key, cert in pairs]
    joined = b"\n".join(data)  # what postmap -Fq prints for a two-pair entry
    assert certfiles.pair_digests(joined) == [certfiles.pem_digest(d) for d in data]
    assert certfiles.pair_digests(data[0]) == [certfiles.pem_digest(data[0])]
