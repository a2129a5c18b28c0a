"""However dovecot.conf includes the drop-in, deployments are validated without the live blocks.

Debian includes ``conf.d/*.conf`` relatively; admins also write the absolute path, use
``!include_try``, or include the drop-in alone from ``local.conf``. At 10,000 blocks every doveconf
run that reads the live drop-in costs ~10 s and over 1 GB, so none may (the candidate and
Dovecot's own settings are read from a private copy of the tree); and every style must serve.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Sequence

import pytest

from mailstack_installer import runner
from mailstack_installer.model import CertFiles
from mailstack_installer.pipeline import Pipeline, Request
from mailstack_installer.probe import SERVICES, served_certificate
from tests.lab.dovecot import INCLUDES, DovecotInstance
from tests.lab.ports import LOCALHOST
from tests.unit.helpers import make_lineage

from .conftest import fingerprint, pem_fingerprint

pytestmark = pytest.mark.e2e


@pytest.fixture(params=sorted(INCLUDES))
def dovecot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DovecotInstance]:
    instance = DovecotInstance(tmp_path / "dc", include=request.param)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _served(dovecot: DovecotInstance, name: str) -> str:
    port = dovecot.ports["imaps"]
    return fingerprint(served_certificate(LOCALHOST, port, SERVICES["imaps"][1], name))


def test_every_include_style_serves_and_no_doveconf_run_reads_the_live_tree(
    dovecot: DovecotInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"dovecot-dir": str(dovecot.config_dir), "services": "dovecot", "service-manager": "native"}
    pipeline = Pipeline(str(tmp_path / "le"), options)
    confs: List[str] = []
    real_run = runner.run

    def spy(argv: Sequence[str], *args: object, **kwargs: object) -> runner.Result:
        if argv[0] == "doveconf":
            confs.append(argv[list(argv).index("-c") + 1] if "-c" in argv else "(default)")
        return real_run(argv, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run", spy)
    for name in ("a.test", "b.test"):
        key, chain = make_lineage(tmp_path / "le" / "live" / name, [f"mail.{name}"])
        pipeline.deploy([Request(CertFiles(str(key), str(chain)), (f"mail.{name}",))])
        assert pipeline.reload_pending().reloaded == ["dovecot"]
        assert _served(dovecot, f"mail.{name}") == pem_fingerprint(chain)

    live = os.path.realpath(dovecot.config_file)
    assert confs, "no doveconf run was seen: the spy is not on the path the pipeline takes"
    assert [conf for conf in confs if os.path.realpath(conf) == live] == []
