"""cli.ProgressBar: drawn on a terminal, silent in cron and pipes."""

from __future__ import annotations

import io

from mailstack_installer.cli import ProgressBar


class Terminal(io.StringIO):
    """A stream that says it is a terminal (a build chroot has no pseudo-terminal to open)."""

    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_drawn_on_a_terminal_and_cleared_at_the_end() -> None:
    terminal = Terminal()
    bar = ProgressBar(terminal)
    bar.update("checking", 5, 10)
    bar.update("deploying", 10, 10)
    bar.clear()
    drawn = terminal.getvalue()
    assert drawn == (
        f"\rchecking  [{'#' * 15}{'.' * 15}] 5/10" + f"\rdeploying [{'#' * 30}] 10/10" + "\r\x1b[K"
    )


def test_the_progress_bar_writes_nothing_where_no_one_watches() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar.update("checking", 1, 2)
    bar.clear()
    assert stream.getvalue() == ""
