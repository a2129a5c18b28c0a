"""Bad input never breaks the mail stack: one clear error line, and the previous config stays put.

The issue's requirement: a missing lineage file, a name Postfix/Dovecot can't accept, an unwritable
config dir, ``tls_server_sni_maps`` owned by someone else, or a Dovecot config that does not include
the drop-in gets one clear error line naming the file or name, a non-zero exit, and the previous
configuration left exactly as it was -- while the daemons keep serving the previous certificates.

Each test drives the real pipeline in-process against a real private Postfix + Dovecot (real
postmap, postconf and doveconf; running daemons judged by TLS handshakes): a good lineage is
deployed and served first, then the bad deployment must be refused without touching a byte.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from mailstack_installer.errors import MailstackError
from mailstack_installer.model import CertFiles
from mailstack_installer.pipeline import Outcome, Pipeline, Request
from tests.lab.dovecot import DovecotInstance
from tests.lab.postfix import PostfixInstance
from tests.unit.helpers import make_issued_lineage, make_lineage

from .conftest import Stack, pem_fingerprint

pytestmark = pytest.mark.e2e

GOOD = "a.test"
GOOD_NAMES = ("a.test", "mail.a.test")
BAD = "b.test"  # the lineage the bad deployments are made with
CLI = Path(sys.prefix) / "bin" / "certbot-mailstack"

Snapshot = Dict[str, Tuple[int, bytes]]


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class Lab:
    """The stack and a certbot-like config dir (``le/``) with ``live/<lineage>/`` and our state."""

    stack: Stack
    config_dir: Path

    @property
    def live(self) -> Path:
        return self.config_dir / "live"

    @property
    def map_source(self) -> Path:
        return self.stack.postfix.config_dir / "tls_server_sni_maps"

    @property
    def dropin(self) -> Path:
        return self.stack.dovecot.config_dir / "conf.d" / "99-mailstack-sni.conf"

    def pipeline(self, **extra: str) -> Pipeline:
        given = {
            "postfix-dir": str(self.stack.postfix.config_dir),
            "dovecot-dir": str(self.stack.dovecot.config_dir),
            **extra,
        }
        return Pipeline(str(self.config_dir), given)

    def lineage(self, name: str, names: Optional[Sequence[str]] = None) -> CertFiles:
        """A self-signed lineage in ``live/<name>/`` covering ``names`` (default: just ``name``)."""
        key, chain = make_lineage(self.live / name, list(names or [name]))
        return CertFiles(str(key), str(chain))

    def snapshot(self) -> Snapshot:
        """Mode and bytes of every file in the Postfix and Dovecot config dirs and our state dir."""
        dirs = (self.stack.postfix.config_dir, self.stack.dovecot.config_dir, self.config_dir / "mailstack")
        return {
            str(path): (path.stat().st_mode, path.read_bytes())
            for directory in dirs
            if directory.is_dir()
            for path in sorted(directory.rglob("*"))
            if path.is_file() and not _volatile(path)
        }


def _volatile(path: Path) -> bool:
    """pid and lock files: touched by the daemons or by merely taking our lock, not configuration."""
    return path.name == "lock" or path.name.endswith((".lock", "-lock", ".pid")) or "pid" in path.parts


def snapshot_diff(before: Snapshot, after: Snapshot) -> List[str]:
    diff = [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    diff += [f"added {p}" for p in sorted(after.keys() - before.keys())]
    for path in sorted(before.keys() & after.keys()):
        (old_mode, old), (new_mode, new) = before[path], after[path]
        if old_mode != new_mode:
            diff.append(f"mode of {path}: {stat.filemode(old_mode)} -> {stat.filemode(new_mode)}")
        if old != new:
            diff.append(f"content of {path} changed:\n--- before\n{old!r}\n--- after\n{new!r}")
    return diff


def served_all(stack: Stack, names: Sequence[str]) -> Dict[str, Dict[str, str]]:
    return {name: stack.served(name) for name in names}


def wait_served(stack: Stack, names: Sequence[str], expected: Dict[str, str], timeout: float = 10.0) -> None:
    """Wait until every port serves ``expected`` (per port) for each name: a reload takes a moment."""
    deadline = time.monotonic() + timeout
    while True:
        wrong = {
            name: {svc: fp[:12] for svc, fp in got.items() if fp != expected[svc]}
            for name, got in served_all(stack, names).items()
        }
        wrong = {name: ports for name, ports in wrong.items() if ports}
        if not wrong:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"ports not serving the expected certificate after reload: {wrong}")
        time.sleep(0.2)


def everywhere(stack: Stack, fingerprint: str) -> Dict[str, str]:
    return dict.fromkeys(stack.ports, fingerprint)


def shown(name: str) -> str:
    """How a name can appear in a one-line message: itself, or escaped as repr() shows it."""
    return repr(name)[1:-1]


def assert_one_line(message: str, *named: str) -> None:
    assert message.strip(), "empty error message"
    assert "\n" not in message and "\r" not in message, f"error is not one line: {message!r}"
    missing = [n for n in named if n not in message]
    assert not missing, f"error {message!r} does not name {missing}"


@dataclass
class Refusal:
    error: MailstackError
    message: str


def assert_refused(
    lab: Lab, deploy: Callable[[], object], *named: str, also_served: Sequence[str] = ()
) -> Refusal:
    """``deploy`` raises one clear line naming ``named``; config bytes and served certificates unchanged."""
    names = (*GOOD_NAMES, BAD, *also_served)
    served_before = served_all(lab.stack, names)
    before = lab.snapshot()
    with pytest.raises(MailstackError) as info:
        deploy()
    message = str(info.value)
    assert_one_line(message, *named)
    diff = snapshot_diff(before, lab.snapshot())
    assert not diff, "the failed deployment changed the configuration:\n" + "\n".join(diff)
    assert served_all(lab.stack, names) == served_before
    return Refusal(info.value, message)


def deploy_good(lab: Lab) -> Dict[str, str]:
    """Deploy ``a.test`` (with ``mail.a.test``), reload, and return what every port then serves."""
    files = lab.lineage(GOOD, GOOD_NAMES)
    pipeline = lab.pipeline()
    outcome = pipeline.deploy([Request(files, GOOD_NAMES)])
    assert sorted(outcome.changed) == ["dovecot", "postfix"], outcome
    assert sorted(pipeline.reload_pending().reloaded) == ["dovecot", "postfix"]
    expected = everywhere(lab.stack, pem_fingerprint(Path(files.fullchain)))
    wait_served(lab.stack, GOOD_NAMES, expected)
    return expected


@dataclass
class Baseline:
    """The shared lab right after the good deployment: what to put back after each test."""

    lab: Lab
    config: Snapshot
    good_files: Dict[Path, bytes]
    expected: Dict[str, str]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baseline]:
    """One Postfix + Dovecot for the module (starting Postfix takes seconds) with ``a.test`` served.

    Built like conftest's ``stack`` fixture; both daemons are stopped in ``finally``.
    """
    base = tmp_path_factory.mktemp("bad-input")
    postfix, dovecot = PostfixInstance(base / "pf"), DovecotInstance(base / "dc")
    try:
        postfix.start()
        dovecot.start()
        lab = Lab(Stack(postfix, dovecot), base / "le")
        expected = deploy_good(lab)
        good_files = {p: p.read_bytes() for p in sorted((lab.live / GOOD).iterdir())}
        yield Baseline(lab, lab.snapshot(), good_files, expected)
    finally:
        try:
            dovecot.stop()
        finally:
            postfix.stop()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def restore(baseline: Baseline) -> None:
    """Put the shared lab back byte for byte (lineages, config, state) and reload if config changed."""
    lab = baseline.lab
    for entry in lab.live.iterdir():
        if entry.name != GOOD:
            _remove(entry)
    for path, data in baseline.good_files.items():
        if not path.is_file() or path.is_symlink() or path.read_bytes() != data:
            _remove(path)
            path.write_bytes(data)
            path.chmod(0o600)
    now = lab.snapshot()
    if not snapshot_diff(baseline.config, now):
        return
    for path in now.keys() - baseline.config.keys():
        os.unlink(path)
    for path, (mode, data) in baseline.config.items():
        if now.get(path) != (mode, data):
            Path(path).write_bytes(data)
            os.chmod(path, stat.S_IMODE(mode))
    lab.stack.postfix.reload()
    lab.stack.dovecot.reload()
    wait_served(lab.stack, GOOD_NAMES, baseline.expected)


@pytest.fixture
def deployed(baseline: Baseline) -> Iterator[Lab]:
    """The shared lab with ``a.test`` deployed and served; restored exactly after each test."""
    diff = snapshot_diff(baseline.config, baseline.lab.snapshot())
    assert not diff, "the shared lab was not restored:\n" + "\n".join(diff)
    try:
        yield baseline.lab
    finally:
        restore(baseline)


@pytest.fixture
def fresh(stack: Stack, tmp_path: Path) -> Lab:
    """A lab of its own where nothing was ever deployed."""
    return Lab(stack, tmp_path / "le")


# -- lineage files ---------------------------------------------------------------------------------


def _missing_key(files: CertFiles) -> str:
    os.unlink(files.key)
    return files.key


def _missing_chain(files: CertFiles) -> str:
    os.unlink(files.fullchain)
    return files.fullchain


def _key_is_directory(files: CertFiles) -> str:
    os.unlink(files.key)
    os.mkdir(files.key)
    return files.key


def _key_dangling_symlink(files: CertFiles) -> str:
    os.unlink(files.key)
    os.symlink(os.path.join(os.path.dirname(files.key), "archive-gone", "privkey1.pem"), files.key)
    return files.key


def _key_of_another_certificate(files: CertFiles) -> str:
    other_key, _ = make_lineage(Path(files.key).parent.parent / "other-key", [BAD])
    Path(files.key).write_bytes(other_key.read_bytes())
    return files.key


def _key_not_pem(files: CertFiles) -> str:
    Path(files.key).write_bytes(b"this is not a private key\n")
    return files.key


def _chain_not_pem(files: CertFiles) -> str:
    Path(files.fullchain).write_bytes(b"<html>502 Bad Gateway</html>\n")
    return files.fullchain


def _chain_pem_block_broken(files: CertFiles) -> str:
    Path(files.fullchain).write_bytes(
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    return files.fullchain


def _leaf_only_chain(files: CertFiles) -> str:
    make_issued_lineage(Path(files.fullchain).parent, [BAD], leaf_only=True)
    return files.fullchain


def _expired_certificate(files: CertFiles) -> str:
    make_issued_lineage(Path(files.fullchain).parent, [BAD], expired=True)
    return files.fullchain


@pytest.mark.parametrize(
    "damage",
    [
        _leaf_only_chain,
        _expired_certificate,
        _missing_key,
        _missing_chain,
        _key_is_directory,
        _key_dangling_symlink,
        _key_of_another_certificate,
        _key_not_pem,
        _chain_not_pem,
        _chain_pem_block_broken,
    ],
    ids=lambda f: f.__name__.strip("_").replace("_", "-"),
)
def test_bad_lineage_file_is_refused_naming_the_file(
    deployed: Lab, damage: Callable[[CertFiles], str]
) -> None:
    files = deployed.lineage(BAD)
    culprit = damage(files)
    assert_refused(deployed, lambda: deployed.pipeline().deploy([Request(files, (BAD,))]), culprit)


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "mail x.test",
        'mail"x.test',
        "mail'x.test",
        "mail{x}.test",
        "mail#x.test",
        "mail.x.test\nssl_key = </etc/shadow",
        "bücher.test",
    ],
    ids=["space", "double-quote", "single-quote", "braces", "hash", "newline-injection", "non-ascii"],
)
def test_name_the_daemons_cannot_take_is_refused_naming_it(deployed: Lab, name: str) -> None:
    files = deployed.lineage(BAD)
    refusal = assert_refused(
        deployed, lambda: deployed.pipeline().deploy([Request(files, (name,))]), shown(name)
    )
    assert "/etc/shadow" not in deployed.dropin.read_text()
    if not name.isascii():  # the fix is the A-label form: the line should say so
        assert "xn--" in refusal.message or "A-label" in refusal.message


def test_name_the_certificate_does_not_cover_is_refused_naming_it(deployed: Lab) -> None:
    files = deployed.lineage(BAD)
    assert_refused(
        deployed,
        lambda: deployed.pipeline().deploy([Request(files, (BAD, "c.test"))]),
        "c.test",
        files.fullchain,
    )


# -- where the configuration goes ------------------------------------------------------------------


def test_postfix_map_in_a_missing_directory_is_refused_naming_it(deployed: Lab, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "tls_server_sni_maps"
    files = deployed.lineage(BAD)
    assert_refused(
        deployed,
        lambda: deployed.pipeline(**{"postfix-map": str(missing)}).deploy([Request(files, (BAD,))]),
        str(missing),
    )


def test_postfix_map_in_a_missing_directory_on_first_deployment(fresh: Lab, tmp_path: Path) -> None:
    lab = fresh
    missing_dir = tmp_path / "no-such-dir"
    files = lab.lineage(GOOD, GOOD_NAMES)
    refusal = assert_refused(
        lab,
        lambda: lab.pipeline(**{"postfix-map": str(missing_dir / "sni")}).deploy(
            [Request(files, GOOD_NAMES)]
        ),
        str(missing_dir),
    )
    assert "does not exist" in refusal.message
    assert not lab.dropin.exists()
    assert lab.stack.served(GOOD) == lab.stack.defaults()


def test_dovecot_dropin_in_a_missing_directory_is_refused_naming_it(deployed: Lab) -> None:
    # conf.d/missing/x.conf: the directory does not exist (and conf.d/*.conf would not include it).
    missing = deployed.stack.dovecot.conf_d / "missing" / "99-mailstack-sni.conf"
    files = deployed.lineage(BAD)
    assert_refused(
        deployed,
        lambda: deployed.pipeline(**{"dovecot-config": str(missing)}).deploy([Request(files, (BAD,))]),
        str(missing),
    )


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only even for root with a read-only bind mount; skip if mounting is refused."""

    def mount(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)

    bound = mount("--bind", str(path), str(path))
    if bound.returncode != 0:
        pytest.skip(f"mount --bind is not permitted in this sandbox: {bound.stderr.strip()}")
    try:
        remounted = mount("-o", "remount,ro,bind", str(path))
        if remounted.returncode != 0:
            pytest.skip(f"mount -o remount,ro,bind is not permitted here: {remounted.stderr.strip()}")
        probe = path / ".write-probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"the read-only bind mount of {path} is still writable for root")
        yield
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=True)


@pytest.mark.parametrize("where", ["postfix-config-dir", "dovecot-conf-d", "certbot-state-dir"])
def test_read_only_config_dir_is_refused_naming_the_file(deployed: Lab, where: str) -> None:
    if where == "postfix-config-dir":
        directory, culprit = deployed.stack.postfix.config_dir, deployed.map_source
    elif where == "dovecot-conf-d":
        directory, culprit = deployed.stack.dovecot.conf_d, deployed.dropin
    else:  # <config-dir>/mailstack: the state file and its lock live there
        directory = culprit = deployed.config_dir / "mailstack"
    files = deployed.lineage(BAD)
    with read_only(directory):
        assert_refused(deployed, lambda: deployed.pipeline().deploy([Request(files, (BAD,))]), str(culprit))


# -- someone else's configuration ------------------------------------------------------------------


def test_sni_map_owned_by_someone_else_is_refused_naming_it(deployed: Lab) -> None:
    deployed.stack.postfix.postconf("-e", "tls_server_sni_maps = hash:/etc/postfix/other")
    files = deployed.lineage(BAD)
    assert_refused(
        deployed,
        lambda: deployed.pipeline().deploy([Request(files, (BAD,))]),
        "tls_server_sni_maps",
        "/etc/postfix/other",
        str(deployed.stack.postfix.config_dir / "main.cf"),
    )


@pytest.mark.parametrize("how", ["include-removed", "dropin-in-a-subdirectory"])
def test_dovecot_config_that_does_not_include_the_dropin_is_refused_naming_it(
    deployed: Lab, how: str
) -> None:
    conf, dropin = deployed.stack.dovecot.config_file, deployed.dropin
    text = conf.read_text()
    assert "!include_try conf.d/*.conf" in text
    extra: Dict[str, str] = {}
    if how == "include-removed":
        conf.write_text("".join(line for line in text.splitlines(True) if "!include" not in line))
    else:
        # Dovecot expands "conf.d/*.conf" with glob(3): '*' never crosses '/', so a drop-in in
        # conf.d/sub/ is never read even though the pattern "matches" it as a plain string.
        dropin = deployed.stack.dovecot.conf_d / "sub" / "99-mailstack-sni.conf"
        dropin.parent.mkdir(exist_ok=True)
        extra = {"dovecot-config": str(dropin)}
    files = deployed.lineage(BAD)
    assert_refused(
        deployed,
        lambda: deployed.pipeline(**extra).deploy([Request(files, (BAD,))]),
        str(conf),
        str(dropin),
    )


def test_sni_map_file_written_by_someone_else_is_not_overwritten(fresh: Lab, tmp_path: Path) -> None:
    """tls_server_sni_maps already names a map at our path, but the admin wrote it: it is not ours."""
    stack = fresh.stack
    key, chain = make_lineage(tmp_path / "admin", ["x.test"])
    fresh.map_source.write_text(f"# the admin's own SNI map\nx.test {key} {chain}\n")
    fresh.map_source.chmod(0o600)
    stack.postfix.postconf("-e", f"tls_server_sni_maps = hash:{fresh.map_source}")
    subprocess.run(
        ["postmap", "-F", "-c", str(stack.postfix.config_dir), f"hash:{fresh.map_source}"],
        check=True,
        timeout=60,
    )
    stack.postfix.reload()
    admin = {**stack.defaults(), **dict.fromkeys(stack.postfix.ports, pem_fingerprint(chain))}
    wait_served(stack, ["x.test"], admin)

    files = fresh.lineage(GOOD, GOOD_NAMES)
    assert_refused(
        fresh,
        lambda: fresh.pipeline().deploy([Request(files, GOOD_NAMES)]),
        str(fresh.map_source),
        also_served=["x.test"],
    )
    assert stack.served("x.test") == admin


def test_lineage_path_the_daemons_cannot_take_is_refused_naming_it(deployed: Lab) -> None:
    files = deployed.lineage("b test")  # a space: a Postfix map line would split there
    assert_refused(deployed, lambda: deployed.pipeline().deploy([Request(files, (BAD,))]), files.key)


# -- a lineage deleted behind our back -------------------------------------------------------------


def test_deleted_lineage_is_unmapped_with_a_warning_and_the_others_still_deploy(deployed: Lab) -> None:
    gone_names = (BAD, f"mail.{BAD}")
    gone = deployed.lineage(BAD, gone_names)
    pipeline = deployed.pipeline()
    pipeline.deploy([Request(gone, gone_names)])
    pipeline.reload_pending()
    wait_served(deployed.stack, gone_names, everywhere(deployed.stack, pem_fingerprint(Path(gone.fullchain))))

    shutil.rmtree(deployed.live / BAD)  # as certbot delete does
    added = deployed.lineage("c.test")
    outcome: Outcome = deployed.pipeline().deploy([Request(added, ("c.test",))])

    warned = [w for w in outcome.warnings if all(n in w for n in gone_names)]
    assert warned, f"no warning names the deleted lineage's names {gone_names}: {outcome.warnings}"
    map_text, dropin_text = deployed.map_source.read_text(), deployed.dropin.read_text()
    for text in (map_text, dropin_text):
        for name in gone_names:
            assert name not in text
        assert str(deployed.live / BAD) not in text
        assert "c.test" in text and GOOD in text

    assert sorted(deployed.pipeline().reload_pending().reloaded) == ["dovecot", "postfix"]
    stack = deployed.stack
    wait_served(stack, ["c.test"], everywhere(stack, pem_fingerprint(Path(added.fullchain))))
    good_chain = deployed.live / GOOD / "fullchain.pem"
    wait_served(stack, GOOD_NAMES, everywhere(stack, pem_fingerprint(good_chain)))
    wait_served(stack, gone_names, stack.defaults())


# -- the deploy hook, as certbot runs it -----------------------------------------------------------


def test_deploy_hook_with_a_garbage_key_exits_2_with_one_line_and_changes_nothing(deployed: Lab) -> None:
    assert CLI.exists(), f"{CLI} not installed"
    lineage = deployed.live / GOOD
    key = lineage / "privkey.pem"
    served_before = served_all(deployed.stack, GOOD_NAMES)
    key.write_bytes(b"garbage, not a key\n")
    before = deployed.snapshot()

    env = {**os.environ, "RENEWED_LINEAGE": str(lineage), "RENEWED_DOMAINS": " ".join(GOOD_NAMES)}
    proc = subprocess.run(
        [str(CLI), "deploy-hook"], env=env, capture_output=True, text=True, timeout=120, check=False
    )

    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {proc.stderr!r}"
    assert lines[0].startswith("certbot-mailstack: error:"), lines[0]
    assert str(key) in lines[0], lines[0]
    diff = snapshot_diff(before, deployed.snapshot())
    assert not diff, "the failed deploy hook changed the configuration:\n" + "\n".join(diff)
    assert served_all(deployed.stack, GOOD_NAMES) == served_before


def test_refused_dovecot_candidate_names_live_paths_and_never_goes_live(fresh: Lab) -> None:
    """The candidate is validated in a private copy: its errors name the live config, not the copy."""
    from mailstack_installer.dovecot import Dovecot

    dovecot = Dovecot(fresh.pipeline().settings())
    bad = (
        'local_name "x.test" {\n'
        "  ssl_cert = </nonexistent/fullchain.pem\n"
        "  ssl_key = </nonexistent/key.pem\n}\n"
    )
    with pytest.raises(MailstackError) as info:
        dovecot.install(bad)
    assert_one_line(str(info.value), "/nonexistent/")
    assert "mailstack-dovecot-check" not in str(info.value)
    assert not Path(dovecot.dropin).exists()


@contextlib.contextmanager
def full_disk(path: Path) -> Iterator[None]:
    """Put ``path`` on a tiny tmpfs holding its current files, then fill it: the next write fails ENOSPC."""
    keep = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted in this sandbox: {mounted.stderr.strip()}")
    try:
        for name, data in keep.items():
            (path / name).write_bytes(data)
        with contextlib.suppress(OSError), open(path / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False, timeout=30)


def test_disk_full_on_write_is_refused_naming_the_file(deployed: Lab) -> None:
    files = deployed.lineage(BAD)
    with full_disk(deployed.dropin.parent):
        refusal = assert_refused(
            deployed, lambda: deployed.pipeline().deploy([Request(files, (BAD,))]), str(deployed.dropin)
        )
    assert "No space left on device" in refusal.message
