"""runner.py: the one door to external commands: argv only, a timeout, and one error line."""

from __future__ import annotations

import time

import pytest

from mailstack_installer import runner
from mailstack_installer.errors import CommandError, NotInstalledError


def test_output_and_exit_status_are_returned() -> None:
    result = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_a_failure_is_one_line_naming_the_command_and_its_last_error_line() -> None:
    with pytest.raises(CommandError) as raised:
        runner.run(["sh", "-c", "echo noise >&2; echo 'postmap: fatal: bad table' >&2; exit 1"])
    assert str(raised.value).endswith("failed (exit 1): postmap: fatal: bad table")
    assert "\n" not in str(raised.value)


def test_a_missing_program_says_where_it_was_looked_for() -> None:
    with pytest.raises(NotInstalledError, match="no-such-tool not found .*/usr/sbin.*is it installed"):
        runner.run(["no-such-tool"])


def test_cron_s_path_still_finds_the_sbin_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert runner.search_path().split(":")[:2] == ["/usr/bin", "/bin"]
    assert "/usr/sbin" in runner.search_path().split(":")


def test_a_command_that_runs_too_long_is_stopped_with_one_line() -> None:
    with pytest.raises(CommandError, match="did not finish within 1 s"):
        runner.run(["sleep", "5"], timeout=1)


def test_input_is_given_and_secret_output_discarded() -> None:
    assert runner.run(["cat"], input_text="key\n").stdout == "key\n"
    assert runner.run(["cat"], input_text="key\n", discard_stdout=True).stdout == ""


def test_a_command_that_leaves_a_daemon_behind_returns_when_it_exits() -> None:
    """The daemon keeps its inherited output open: read through a pipe, the run would wait for it."""
    started = time.monotonic()
    result = runner.run(["sh", "-c", "sleep 3 & echo started"], daemonizes=True, timeout=2)
    assert result.stdout == "started\n"
    assert time.monotonic() - started < 2
    with pytest.raises(CommandError, match="did not finish"):
        runner.run(["sh", "-c", "sleep 3 & echo started"], timeout=1)
