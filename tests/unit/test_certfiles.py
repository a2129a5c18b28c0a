import pytest

from mailstack_installer.certfiles import check_files
from mailstack_installer.errors import InputError
from mailstack_installer.model import CertFiles
from mailstack_installer.names import covered_by

from .helpers import make_issued_lineage, make_lineage


def test_good_pair_gives_names_and_a_content_digest(tmp_path):
    key, chain = make_lineage(tmp_path / "a", ["a.test", "mail.a.test"])
    checked = check_files(CertFiles(str(key), str(chain)))
    assert checked.dns_names == ("a.test", "mail.a.test")
    assert len(checked.digest) == 64
    make_lineage(tmp_path / "a", ["a.test", "mail.a.test"])  # "renewal": new key and cert
    assert check_files(CertFiles(str(key), str(chain))).digest != checked.digest


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path):
    key_a, _ = make_lineage(tmp_path / "a", ["a.test"])
    _, chain_b = make_lineage(tmp_path / "b", ["b.test"])
    with pytest.raises(InputError, match="does not match"):
        check_files(CertFiles(str(key_a), str(chain_b)))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing-key", "private key .* does not exist"),
        ("missing-chain", "certificate chain .* does not exist"),
        ("garbage-key", "not an unencrypted PEM private key"),
        ("garbage-chain", "holds no PEM certificate"),
        ("dir-key", "is a directory"),
    ],
)
def test_broken_files_get_one_line_naming_the_file(tmp_path, breakage, message):
    key, chain = make_lineage(tmp_path / "a", ["a.test"])
    if breakage == "missing-key":
        key.unlink()
    elif breakage == "missing-chain":
        chain.unlink()
    elif breakage == "garbage-key":
        key.write_text("hello\n")
    elif breakage == "garbage-chain":
        chain.write_text("hello\n")
    elif breakage == "dir-key":
        key.unlink()
        key.mkdir()
    with pytest.raises(InputError, match=message) as info:
        check_files(CertFiles(str(key), str(chain)))
    assert "\n" not in str(info.value)


def test_wildcard_covers_exactly_one_label():
    sans = ["a.test", "*.a.test"]
    assert covered_by("mail.a.test", sans)
    assert covered_by("a.test", sans)
    assert not covered_by("x.mail.a.test", sans)
    assert not covered_by("b.test", sans)
    assert covered_by("*.a.test", sans)


def test_issued_leaf_with_its_issuer_passes(tmp_path):
    assert check_files(issued(tmp_path)).dns_names == ("a.test",)


def test_leaf_only_chain_is_refused_with_the_fix(tmp_path):
    with pytest.raises(InputError, match="only the leaf.*fullchain.pem"):
        check_files(issued(tmp_path, leaf_only=True))


def test_chain_out_of_order_is_refused(tmp_path):
    with pytest.raises(InputError, match="does not match|out of order"):
        check_files(issued(tmp_path, order_ok=False))


def test_expired_certificate_is_refused(tmp_path):
    with pytest.raises(InputError, match="expired on"):
        check_files(issued(tmp_path, expired=True))


def issued(tmp_path, **faults):
    key, chain = make_issued_lineage(tmp_path / "live", ["a.test"], **faults)
    return CertFiles(str(key), str(chain))
