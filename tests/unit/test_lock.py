"""Two runs at once are serialised by the state lock: the second waits, or fails with one line."""

import subprocess
import sys
import textwrap
import time

import pytest

from mailstack_installer.errors import MisconfiguredError
from mailstack_installer.state import StateStore

HOLDER = textwrap.dedent(
    """
    import sys, time
    from mailstack_installer.state import StateStore
    with StateStore(sys.argv[1]).locked():
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
        open(sys.argv[1] + "/done", "w").close()  # written before the lock is released
    """
)


def _hold(config_dir, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(config_dir), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _stop(proc):
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_second_run_fails_clearly_when_the_first_holds_the_lock_too_long(tmp_path):
    holder = _hold(tmp_path, 5)
    try:
        lock = StateStore(str(tmp_path)).locked(timeout=0.5)
        with pytest.raises(MisconfiguredError, match="another certbot-mailstack run holds") as info, lock:
            pass
        assert "\n" not in str(info.value)
    finally:
        _stop(holder)


def test_second_run_waits_for_the_first_and_never_interleaves(tmp_path):
    holder = _hold(tmp_path, 1.0)
    try:
        start = time.monotonic()
        with StateStore(str(tmp_path)).locked(timeout=30):
            waited = time.monotonic() - start
            assert (tmp_path / "done").exists(), "got the lock while the first run still held it"
        assert waited > 0.5
    finally:
        _stop(holder)
