"""transaction.Transaction: steps undone in reverse order unless committed."""

from __future__ import annotations

import logging
from typing import List

import pytest

from mailstack_installer.transaction import Transaction


def test_a_failure_undoes_the_steps_taken_in_reverse_order_and_raises_its_own_error() -> None:
    undone: List[str] = []
    with pytest.raises(ValueError, match="third step"), Transaction() as undo:
        undo.on_failure(undone.append, "first")
        undo.on_failure(undone.append, "second")
        raise ValueError("third step")
    assert undone == ["second", "first"]


def test_a_committed_transaction_undoes_nothing() -> None:
    undone: List[str] = []
    with Transaction() as undo:
        undo.on_failure(undone.append, "first")
        undo.commit()
    assert undone == []


def test_leaving_without_commit_undoes_as_a_failure_does() -> None:
    undone: List[str] = []

    def change() -> None:
        with Transaction() as undo:
            undo.on_failure(undone.append, "first")
            return

    change()
    assert undone == ["first"]


def test_an_undo_that_fails_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    undone: List[str] = []

    def broken() -> None:
        raise OSError("disk full")

    with pytest.raises(KeyboardInterrupt), Transaction() as undo:
        undo.on_failure(undone.append, "first")
        undo.on_failure(broken)
        undo.on_failure(undone.append, "third")
        raise KeyboardInterrupt
    assert undone == ["third", "first"]
    assert any("disk full" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_steps_registered_after_a_commit_belong_to_a_new_change() -> None:
    undone: List[str] = []
    with pytest.raises(RuntimeError), Transaction() as undo:
        undo.on_failure(undone.append, "kept")
        undo.commit()
        undo.on_failure(undone.append, "after")
        raise RuntimeError("later")
    assert undone == ["after"]


def test_actions_for_a_commit_run_only_when_it_commits() -> None:
    done: List[str] = []
    with pytest.raises(RuntimeError), Transaction() as undo:
        undo.on_commit(done.append, "cleanup")
        raise RuntimeError("failed")
    assert done == []
    with Transaction() as undo:
        undo.on_commit(done.append, "cleanup")
        undo.commit()
    assert done == ["cleanup"]
