import json

import pytest

from mailstack_installer.errors import InputError, MisconfiguredError
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.settings import merge_options, resolve
from mailstack_installer.state import State, StateStore


def test_defaults_follow_their_directory():
    settings = resolve({"postfix-dir": "/srv/pf", "dovecot-dir": "/srv/dc"})
    assert settings.postfix_map == "/srv/pf/tls_server_sni_maps"
    assert settings.dovecot_config == "/srv/dc/conf.d/99-mailstack-sni.conf"
    assert settings.dovecot_conf == "/srv/dc/dovecot.conf"
    assert settings.services == ("postfix", "dovecot")


def test_given_options_override_persisted_ones_and_none_means_unset():
    merged = merge_options(
        {"postfix-dir": "/a", "services": "postfix"}, {"postfix-dir": None, "services": "dovecot"}
    )
    assert merged == {"postfix-dir": "/a", "services": "dovecot"}


@pytest.mark.parametrize(
    "options",
    [
        {"services": "postfix,exim"},
        {"services": ","},
        {"postfix-map-type": "texthash"},
        {"postfix-dir": "etc/x"},
    ],
)
def test_bad_options_are_refused_with_the_option_named(options):
    with pytest.raises(InputError, match="--"):
        resolve(options)


def test_state_round_trips_and_is_private(tmp_path):
    store = StateStore(str(tmp_path))
    lineage = Lineage(CertFiles("/l/a/privkey.pem", "/l/a/fullchain.pem"), ("a.test",), "d1")
    state = State({"postfix-dir": "/x"}, Plan({lineage.id: lineage}), {"dovecot"}, dovecot_dropin="ab12")
    store.save(state)
    loaded = store.load()
    assert loaded.dovecot_dropin == "ab12"
    assert loaded.plan == Plan({lineage.id: lineage})
    assert loaded.options == {"postfix-dir": "/x"}
    assert loaded.pending_reload == {"dovecot"}
    assert (tmp_path / "mailstack" / "state.json").stat().st_mode & 0o077 == 0
    assert (tmp_path / "mailstack").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1, "lineages": {"x": {}}},
        {"version": 2, "lineages": [{"key": "/k"}]},
        {"version": 2, "lineages": [["/k", "/l/a/fullchain.pem", "d", "ec"]]},  # no name
        {"version": 2, "lineages": [["/k", "/l/a/fullchain.pem", "d", "ec", 7]]},
        {"version": 3, "lineages": []},
    ],
)
def test_damaged_state_gives_one_clear_line(tmp_path, doc):
    (tmp_path / "mailstack").mkdir()
    (tmp_path / "mailstack" / "state.json").write_text(json.dumps(doc))
    with pytest.raises(MisconfiguredError, match="state file .* is damaged"):
        StateStore(str(tmp_path)).load()


def test_missing_state_is_empty(tmp_path):
    assert StateStore(str(tmp_path)).load() == State()
