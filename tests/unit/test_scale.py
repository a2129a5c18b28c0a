"""The pieces that keep one lineage cheap on a host of 10,000 names, and the deferred reload."""

from __future__ import annotations

import io
import os
from typing import Optional

import pytest

from mailstack_installer import cli, hook
from mailstack_installer.dovecot import Dovecot
from mailstack_installer.dovecot import dropin as dovecot
from mailstack_installer.model import CertFiles, Lineage, Plan
from mailstack_installer.postfix.mapfile import entry_changes
from mailstack_installer.settings import resolve


def lineage(name: str, *names: str, digest: str = "d") -> Lineage:
    files = CertFiles(f"/le/live/{name}/privkey.pem", f"/le/live/{name}/fullchain.pem")
    return Lineage(files, names or (name,), digest)


def test_with_lineages_moves_claimed_names_and_drops_emptied_lineages() -> None:
    plan = Plan({lin.id: lin for lin in [lineage("a", "a.test", "x.test"), lineage("b", "b.test")]})
    after = plan.with_lineages([lineage("c", "x.test", "b.test")])
    assert {lid.split("/")[-1]: lin.names for lid, lin in after.lineages.items()} == {
        "a": ("a.test",),
        "c": ("x.test", "b.test"),
    }


def test_with_lineages_gives_a_name_two_incoming_lineages_claim_to_the_later() -> None:
    after = Plan().with_lineages([lineage("a", "a.test", "x.test"), lineage("b", "x.test")])
    assert after.lineages["/le/live/a"].names == ("a.test",)
    assert after.lineages["/le/live/b"].names == ("x.test",)


def test_map_edits_touch_only_what_changed() -> None:
    a, b = lineage("a", "a.test", "*.w.test"), lineage("b", "b.test", "old.test")
    before = Plan({a.id: a, b.id: b})
    b2 = lineage("b", "b.test", "new.test")
    written, removed = entry_changes(before, before.with_lineage(b2), [b2.id])
    assert sorted(written) == ["b.test", "new.test"]  # b renewed: all its entries rewritten
    assert removed == ["old.test"]
    written, removed = entry_changes(before, before.without([a.id]), [])
    assert (written, sorted(removed)) == ({}, [".w.test", "a.test"])


def test_config_limit_sizes() -> None:
    assert dovecot.required_limit_mb(500) < dovecot.DEFAULT_LIMIT_MB < dovecot.required_limit_mb(1000)
    assert dovecot.parse_size_mb("256 M") == 256
    assert dovecot.parse_size_mb("1 G") == 1024
    assert dovecot.parse_size_mb("0") is None  # unlimited
    assert dovecot.parse_size_mb("18446744073709551615 B") is None
    assert dovecot.own_limit_mb(b"# x\nservice config {\n  vsz_limit = 4096M\n}\n") == 4096
    assert dovecot.own_limit_mb(b"local_name a {\n}\n") is None


def big_plan(count: int) -> Plan:
    return Plan({f"/le/live/d{i}": lineage(f"d{i}", f"mail.d{i}.test") for i in range(count)})


class FakeDovecot(Dovecot):
    def __init__(self, current: Optional[bytes], base: Optional[int]) -> None:
        super().__init__(resolve({"dovecot-syntax": "2.3"}))
        self._current, self._base = current, base

    def current(self) -> Optional[bytes]:
        return self._current

    def base_limit_mb(self) -> Optional[int]:
        return self._base


@pytest.mark.parametrize(
    ("blocks", "current", "base", "expected"),
    [
        (100, None, 256, None),  # small: nothing written
        (10_000, None, 256, 8192),  # 10,000 blocks need ~3.1 GB: twice that, a power of two
        (10_000, None, None, None),  # the administrator already made it unlimited
        (10_000, None, 16384, None),  # or large enough
        (10_000, b"vsz_limit = 8192M\n", 256, 8192),  # ours is enough: kept, not recomputed
        (2_000, None, 256, 2048),
    ],
)
def test_config_limit_is_raised_only_when_needed(
    blocks: int, current: Optional[bytes], base: Optional[int], expected: Optional[int]
) -> None:
    assert FakeDovecot(current, base).config_limit(big_plan(blocks), "2.3") == expected


def test_dovecot_24_gets_a_limit_sized_for_its_smaller_blocks() -> None:
    assert FakeDovecot(None, 256).config_limit(big_plan(2_000), "2.4") is None
    assert FakeDovecot(None, 256).config_limit(big_plan(20_000), "2.4") == 2048


def test_limit_block_comes_before_the_local_name_blocks() -> None:
    text = dovecot.render_dropin(big_plan(2), "2.3", 1024)
    assert text.index("vsz_limit = 1024M") < text.index('local_name "')


def test_progress_bar_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    bar.update("checking", 5, 10)
    bar.clear()
    assert stream.getvalue() == ""


def test_post_hook_carries_its_config_dir_and_deploy_hook_defers(tmp_path) -> None:
    assert hook.install_hooks(str(tmp_path)) is True
    post = (tmp_path / "renewal-hooks" / "post" / "mailstack").read_text()
    deploy = (tmp_path / "renewal-hooks" / "deploy" / "mailstack").read_text()
    assert repr(["post-hook", "--config-dir", str(tmp_path)]) in post
    assert "'--defer-reload'" in deploy
    assert hook.post_hook_installed(str(tmp_path))
    os.chmod(tmp_path / "renewal-hooks" / "post" / "mailstack", 0o644)  # certbot skips it now
    assert not hook.post_hook_installed(str(tmp_path))


def test_post_hook_without_any_deployment_does_nothing(tmp_path, capsys) -> None:
    assert cli.main(["post-hook", "--config-dir", str(tmp_path)]) == 0
    assert capsys.readouterr() == ("", "")
    assert not (tmp_path / "mailstack").exists()


def test_deploy_needs_all_or_cert_name(tmp_path, capsys) -> None:
    assert cli.main(["deploy", "--config-dir", str(tmp_path)]) == 2
    assert "--all or --cert-name" in capsys.readouterr().err
