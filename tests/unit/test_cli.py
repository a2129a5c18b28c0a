"""cli.ProgressBar: drawn on a terminal, silent in cron and pipes."""

from __future__ import annotations

import io
import os

from mailstack_installer.cli import ProgressBar


def test_the_progress_bar_is_drawn_on_a_terminal_and_cleared_at_the_end() -> None:
    master, replica = os.openpty()
    try:
        with open(replica, "w", encoding="utf-8", closefd=False) as terminal:
            bar = ProgressBar(terminal)
            bar.update("checking", 5, 10)
            bar.update("deploying", 10, 10)
            bar.clear()
        drawn = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(replica)
    assert f"\rchecking  [{'#' * 15}{'.' * 15}] 5/10" in drawn
    assert f"\rdeploying [{'#' * 30}] 10/10" in drawn
    assert drawn.endswith("\r\x1b[K")


def test_the_progress_bar_writes_nothing_where_no_one_watches() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar.update("checking", 1, 2)
    bar.clear()
    assert stream.getvalue() == ""
