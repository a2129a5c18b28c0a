"""The default certificate: which lineage covers the default name, how it is rendered for Dovecot
and what happens to Postfix's smtpd_tls_chain_files (set, kept, put back, left alone)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pytest

from mailstack_installer.dovecot import Dovecot
from mailstack_installer.dovecot.dropin import render_dropin
from mailstack_installer.errors import InputError
from mailstack_installer.model import CertFiles, Lineage, Plan, as_serving
from mailstack_installer.pipeline import default_files, default_name
from mailstack_installer.postfix import Postfix
from mailstack_installer.postfix.daemon import PostfixRecord
from mailstack_installer.postfix.mapfile import DefaultChain, chain_value, decide_default, same_chain
from mailstack_installer.settings import OPTION_HELP, OPTION_NAMES, resolve
from mailstack_installer.state import State


def files(name: str) -> CertFiles:
    return CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")


def plan_of(*lineages: Lineage) -> Plan:
    return Plan().with_lineages(lineages)


HOST = Lineage(files("host"), ("mail.example.test", "example.test"))
WILD = Lineage(files("wild"), ("*.example.test",))
OTHER = Lineage(files("other"), ("other.test",))


# -- which lineage ----------------------------------------------------------------------------------


def test_the_lineage_mapping_the_name_itself_is_chosen_over_a_covering_wildcard():
    plan = plan_of(WILD, HOST, OTHER)
    assert default_files(plan, "mail.example.test") == (HOST.files,)
    assert default_files(plan, "imap.example.test") == (WILD.files,)


def test_a_wildcard_covers_one_label_only_and_not_its_parent():
    plan = plan_of(WILD, OTHER)
    assert default_files(plan, "a.b.example.test") == ()
    assert default_files(plan, "example.test") == ()


def test_no_name_or_an_unmapped_name_gives_no_default():
    plan = plan_of(HOST, OTHER)
    assert default_files(plan, "") == ()
    assert default_files(plan, "mail.elsewhere.test") == ()
    assert default_files(Plan(), "mail.example.test") == ()


def test_the_default_follows_the_name_when_another_lineage_takes_it():
    newer = Lineage(files("newer"), ("mail.example.test",))
    plan = plan_of(HOST, newer)
    assert default_files(plan, "mail.example.test") == (newer.files,)
    assert default_files(plan, "example.test") == (HOST.files,)


# -- rendering --------------------------------------------------------------------------------------


def top_level(text: str) -> List[str]:
    """Settings outside any block, in file order."""
    lines, depth = [], 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("{"):
            depth += 1
        elif stripped == "}":
            depth -= 1
        elif depth == 0 and stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def test_dovecot_23_default_is_a_top_level_ssl_cert_before_every_block():
    text = render_dropin(plan_of(HOST, WILD), "2.3", 1024, default=HOST.files)
    assert top_level(text) == [
        "ssl_cert = </le/live/host/fullchain.pem",
        "ssl_key = </le/live/host/privkey.pem",
    ]
    first_block = min(text.index("service config"), text.index("local_name"))
    assert text.index("ssl_cert = </le/live/host/fullchain.pem") < first_block


def test_dovecot_24_default_uses_plain_paths():
    text = render_dropin(plan_of(HOST), "2.4", default=HOST.files)
    assert top_level(text) == [
        "ssl_server_cert_file = /le/live/host/fullchain.pem",
        "ssl_server_key_file = /le/live/host/privkey.pem",
    ]
    assert "<" not in text


def test_without_a_default_nothing_is_set_at_top_level():
    for syntax in ("2.3", "2.4"):
        assert top_level(render_dropin(plan_of(HOST, WILD), syntax)) == []


def test_dovecot_render_validates_only_the_changes_and_the_default_when_the_live_dropin_is_ours(
    tmp_path: Path,
) -> None:
    settings = resolve({"dovecot-dir": str(tmp_path), "dovecot-syntax": "2.3"})
    dropin = Path(settings.dovecot_config)
    dropin.parent.mkdir(parents=True)
    before = plan_of(HOST, WILD)
    dropin.write_text(render_dropin(before, "2.3", default=HOST.files))
    after = before.with_lineage(OTHER)

    rendered = Dovecot(settings).render(after, before, [OTHER.id], HOST.files, HOST.files)

    assert rendered.text == render_dropin(after, "2.3", default=HOST.files)
    assert rendered.check_text == render_dropin(plan_of(OTHER), "2.3", default=HOST.files)
    # The live drop-in written with another default is not ours for ``before``: validate it all.
    rendered = Dovecot(settings).render(after, before, [OTHER.id], HOST.files, None)
    assert rendered.check_text == rendered.text


# -- Postfix's smtpd_tls_chain_files ----------------------------------------------------------------


def test_chain_value_lists_the_key_first_and_comparison_ignores_separators():
    assert chain_value(HOST.files) == "/le/live/host/privkey.pem, /le/live/host/fullchain.pem"
    assert same_chain("/a.key,/a.pem", "/a.key, /a.pem")
    assert same_chain("/a.key /a.pem", " /a.key ,  /a.pem ")
    assert not same_chain("/a.pem, /a.key", "/a.key, /a.pem")
    assert same_chain("", "")


def decide(current: str, before: Optional[str], plan: Plan, default: Optional[CertFiles]) -> DefaultChain:
    return decide_default(current, before, as_serving(default), plan)


ADMIN = "/etc/ssl/private/mail.key, /etc/ssl/certs/mail.pem"


def test_first_default_records_what_was_there_and_sets_the_lineage():
    chain = decide(ADMIN, None, plan_of(HOST), HOST.files)
    assert (chain.value, chain.before) == (chain_value(HOST.files), ADMIN)
    chain = decide("", None, plan_of(HOST), HOST.files)  # unset before: recorded as ""
    assert (chain.value, chain.before) == (chain_value(HOST.files), "")


def test_a_default_already_in_place_changes_nothing_and_keeps_the_record():
    chain = decide(chain_value(HOST.files), ADMIN, plan_of(HOST), HOST.files)
    assert (chain.value, chain.before) == (None, ADMIN)
    chain = decide(chain_value(HOST.files), None, plan_of(HOST), HOST.files)  # set by the admin
    assert (chain.value, chain.before) == (None, None)


def test_another_lineage_taking_the_name_moves_the_default_and_keeps_the_first_record():
    newer = Lineage(files("newer"), ("mail.example.test",))
    chain = decide(chain_value(HOST.files), ADMIN, plan_of(HOST), newer.files)
    assert (chain.current, chain.value, chain.before) == (
        chain_value(HOST.files),
        chain_value(newer.files),
        ADMIN,
    )


def test_when_no_lineage_covers_the_name_any_more_the_earlier_value_comes_back():
    chain = decide(chain_value(HOST.files), ADMIN, plan_of(HOST), None)
    assert (chain.value, chain.before) == (ADMIN, None)
    chain = decide(chain_value(HOST.files), "", plan_of(HOST), None)  # "" = remove the parameter
    assert (chain.value, chain.before) == ("", None)


def test_a_value_changed_by_hand_since_is_left_alone_and_forgotten():
    chain = decide("/elsewhere.key, /elsewhere.pem", ADMIN, plan_of(HOST), None)
    assert (chain.value, chain.before) == (None, None)


def test_nothing_recorded_and_nothing_covering_changes_nothing():
    chain = decide(ADMIN, None, plan_of(OTHER), None)
    assert (chain.value, chain.before) == (None, None)


# -- the option -------------------------------------------------------------------------------------


def test_default_name_is_an_option_of_both_front_doors_with_help():
    assert "default-name" in OPTION_NAMES and "myhostname" in OPTION_HELP["default-name"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, ""), ("auto", ""), ("none", "none"), ("Mail.Example.Test.", "mail.example.test")],
)
def test_default_name_values(given: Optional[str], expected: str) -> None:
    options = {} if given is None else {"default-name": given}
    assert resolve(options).default_name == expected


@pytest.mark.parametrize("given", ["*.example.test", "bad name", "-x.test"])
def test_bad_default_names_are_refused_with_the_option_named(given: str) -> None:
    with pytest.raises(InputError, match="--default-name"):
        resolve({"default-name": given})


def test_myhostname_is_the_default_name_unless_one_is_given_or_none():
    class Host(Postfix):
        def myhostname(self) -> str:
            return "Mail.Example.Test"

    host = [Host(resolve({}))]
    assert default_name(resolve({}), host) == "mail.example.test"
    assert default_name(resolve({"default-name": "imap.example.test"}), host) == "imap.example.test"
    assert default_name(resolve({"default-name": "none"}), host) == ""
    assert default_name(resolve({}), []) == ""  # Dovecot alone: no myhostname to ask


def test_state_keeps_the_value_recorded_before_the_first_default(tmp_path: Path) -> None:
    for before in (None, "", ADMIN):
        state = State(postfix=PostfixRecord(default_chain_before=before))
        assert State.from_json(state.to_json(), "x").postfix.default_chain_before == before
    written = State(postfix=PostfixRecord(default_chain_before=ADMIN)).to_json()
    legacy = written.replace(f'"default_chain_before":"{ADMIN}",', "")  # a state from before 0.2
    assert legacy != written
    assert State.from_json(legacy, "x").postfix.default_chain_before is None
