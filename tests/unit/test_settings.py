"""settings.py: the options in force, merged from the command line and the state, and checked."""

import pytest

from mailstack_installer.errors import InputError
from mailstack_installer.settings import merge_options, resolve


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
