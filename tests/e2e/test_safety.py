"""Issue 4's proof: a daemon that does not take a change is noticed by handshake and the previous
configuration comes back; a run killed at any step leaves the old or the new configuration served,
never a broken one, and the next run completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailstack_installer.errors import MisconfiguredError
from mailstack_installer.model import CertFiles
from mailstack_installer.pipeline import Pipeline, Request
from tests.unit.helpers import make_lineage

from .conftest import Stack, pem_fingerprint

pytestmark = pytest.mark.e2e


def lineage(tmp_path: Path, name: str, names: list) -> Request:
    key, chain = make_lineage(tmp_path / "le" / "live" / name, names)
    return Request(CertFiles(str(key), str(chain)), tuple(names))


def pipeline_for(tmp_path: Path, stack: Stack) -> Pipeline:
    return Pipeline(
        str(tmp_path / "le"),
        {"postfix-dir": str(stack.postfix.config_dir), "dovecot-dir": str(stack.dovecot.config_dir)},
    )


def served_everywhere(stack: Stack, name: str) -> set:
    return set(stack.served(name).values())


def test_dovecot_keeping_its_old_config_is_caught_and_the_previous_config_restored(
    tmp_path: Path, stack: Stack
) -> None:
    pipeline = pipeline_for(tmp_path, stack)
    a = lineage(tmp_path, "a.test", ["mail.a.test"])
    pipeline.deploy([a])
    pipeline.reload_pending()
    fp_a = pem_fingerprint(Path(a.files.fullchain))
    assert served_everywhere(stack, "mail.a.test") == {fp_a}

    b = lineage(tmp_path, "b.test", ["mail.b.test"])
    pipeline.deploy([b])
    os.unlink(b.files.key)  # Dovecot's reload now fails to read it, yet doveadm reload exits 0

    with pytest.raises(MisconfiguredError) as info:
        pipeline.reload_pending()

    message = str(info.value)
    assert "\n" not in message
    assert "dovecot did not take the new configuration" in message and "restored" in message
    assert served_everywhere(stack, "mail.a.test") == {fp_a}
    assert stack.served("mail.b.test") == stack.defaults()
    assert "mail.b.test" not in (stack.postfix.config_dir / "tls_server_sni_maps").read_text()
    assert list(pipeline.store.load().plan.lineages) == [str(Path(a.files.fullchain).parent)]


# A driver that runs one deployment and kills itself (SIGKILL: no clean-up of any kind) at a step.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from mailstack_installer import pipeline, service_managers
    from mailstack_installer.postfix import daemon as postfix
    from mailstack_installer.model import CertFiles
    from mailstack_installer.pipeline import Pipeline, Request

    config_dir, postfix_dir, dovecot_dir, key, chain, names, step = sys.argv[1:8]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def after(cls, method):
        original = getattr(cls, method)
        def wrapper(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            die()
            return result
        setattr(cls, method, wrapper)

    if step == "after-candidate":
        after(postfix.Postfix, "build_candidate")
    elif step == "after-swap":
        after(postfix.Postfix, "commit")
    elif step == "during-reload":
        original = service_managers.Native.reload
        calls = []
        def reload(self, service):
            calls.append(service)
            if len(calls) == 2:
                die()
            original(self, service)
        service_managers.Native.reload = reload
    elif step == "after-reload":
        after(pipeline.Pipeline, "_reload")

    p = Pipeline(config_dir, {"postfix-dir": postfix_dir, "dovecot-dir": dovecot_dir})
    p.deploy([Request(CertFiles(key, chain), tuple(names.split(",")))])
    p.reload_pending()
    """
)


@pytest.mark.parametrize("step", ["after-candidate", "after-swap", "during-reload", "after-reload"])
def test_killed_run_leaves_old_or_new_served_and_the_next_run_completes(
    tmp_path: Path, stack: Stack, step: str
) -> None:
    pipeline = pipeline_for(tmp_path, stack)
    old = lineage(tmp_path, "old.test", ["mail.x.test"])
    pipeline.deploy([old])
    pipeline.reload_pending()
    fp_old = pem_fingerprint(Path(old.files.fullchain))
    new = lineage(tmp_path, "new.test", ["mail.x.test", "mail.y.test"])
    fp_new = pem_fingerprint(Path(new.files.fullchain))

    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "le"), str(stack.postfix.config_dir),
         str(stack.dovecot.config_dir), new.files.key, new.files.fullchain, ",".join(new.names), step],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    # Meanwhile every port serves mail.x.test a complete certificate: the old one or the new one.
    for service, fp in stack.served("mail.x.test").items():
        assert fp in (fp_old, fp_new), f"{step}: {service} serves neither the old nor the new certificate"
    # No stray temp files beside the live ones are visible to the daemons' globs.
    assert not list((stack.dovecot.config_dir / "conf.d").glob("*.conf.*"))

    # The next run (e.g. the next certbot renew, or the admin re-running) completes the change.
    pipeline.deploy([new])
    pipeline.reload_pending()
    assert served_everywhere(stack, "mail.x.test") == {fp_new}
    assert served_everywhere(stack, "mail.y.test") == {fp_new}
    dirs = (stack.postfix.config_dir, stack.dovecot.config_dir / "conf.d", tmp_path / "le" / "mailstack")
    leftovers = [p for d in dirs for p in d.iterdir() if "mailstack-tmp" in p.name]
    assert not leftovers, f"temp files left behind: {leftovers}"


def test_loosened_map_files_are_made_private_again_with_a_warning(tmp_path: Path, stack: Stack) -> None:
    pipeline = pipeline_for(tmp_path, stack)
    a = lineage(tmp_path, "a.test", ["mail.a.test"])
    pipeline.deploy([a])
    pipeline.reload_pending()
    tables = sorted(stack.postfix.config_dir.glob("tls_server_sni_maps*"))
    for path in tables:
        path.chmod(0o644)

    outcome = pipeline.refresh(str(Path(a.files.fullchain).parent))  # nothing else to do

    assert outcome is not None and outcome.changed == []
    assert any("exposed" in w for w in outcome.warnings)
    assert {oct(p.stat().st_mode & 0o777) for p in tables} == {oct(0o600)}


def test_wildcard_only_lineage_is_confirmed_with_a_concrete_name(tmp_path: Path, stack: Stack) -> None:
    pipeline = pipeline_for(tmp_path, stack)
    w = lineage(tmp_path, "w.test", ["*.w.test"])
    pipeline.deploy([w])
    pipeline.reload_pending()  # would roll back if it probed with the literal "*.w.test"
    assert served_everywhere(stack, "imap.w.test") == {pem_fingerprint(Path(w.files.fullchain))}
