import pytest

from mailstack_installer.errors import InputError
from mailstack_installer.names import check_path, normalize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mail.Example.COM", "mail.example.com"),
        ("mail.example.com.", "mail.example.com"),
        ("*.example.com", "*.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.example", "a-b.example"),
    ],
)
def test_valid_names_are_lower_cased(raw, expected):
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "mail example.com",
        'mail"x.com',
        "mail{x}.com",
        "mail#x.com",
        "mail.x.com\nssl_key = </etc/shadow",
        "mail'x.com",
        "bücher.example",
        "",
        "-bad.example",
        "bad-.example",
        "a..example",
        "foo.*.example",
        "*.com",
        "**.example.com",
        "under_score.example",
        "x" * 64 + ".example",
    ],
)
def test_names_that_could_inject_or_never_match_are_refused(raw):
    with pytest.raises(InputError) as info:
        normalize_name(raw)
    assert "\n" not in str(info.value)


def test_non_ascii_name_error_names_the_fix():
    with pytest.raises(InputError, match="A-label"):
        normalize_name("bücher.example")


@pytest.mark.parametrize("path", ["/etc/a b/key.pem", "/etc/a,b", "relative/key.pem", "/x/{y}", "/x\n/y"])
def test_paths_that_break_map_or_dovecot_syntax_are_refused(path):
    with pytest.raises(InputError):
        check_path(path)


def test_plain_path_is_accepted():
    assert check_path("/etc/letsencrypt/live/a.test-0001/privkey.pem").endswith("privkey.pem")
