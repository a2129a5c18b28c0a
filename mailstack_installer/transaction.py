"""Apply step: a change made of several steps, each registering how to undo itself.

As certbot's reverter does for its installers: when a later step fails (or the run is interrupted),
the steps already taken are undone in reverse order, and the error that stopped the change is the
one raised. An undo that fails itself is logged and the others still run: what they put back is
more than nothing.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Callable, List, Optional, Tuple, Type

logger = logging.getLogger(__name__)


class Transaction:
    """``with Transaction() as undo:`` then ``undo.on_failure(step, *args)`` after each step taken,
    and ``undo.commit()`` once every step is taken. Only commit() keeps the steps: leaving the block
    without it (an exception, or a return) undoes them."""

    def __init__(self) -> None:
        self._undo: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = []
        self._kept: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = []

    def on_failure(self, undo: Callable[..., Any], *args: Any) -> None:
        """Register ``undo(*args)`` to run if the transaction does not commit."""
        self._undo.append((undo, args))

    def on_commit(self, action: Callable[..., Any], *args: Any) -> None:
        """Register ``action(*args)`` to run when it commits: to remove what an undo would have
        used (a file set aside), or what the change leaves behind (the tables of an old layout)."""
        self._kept.append((action, args))

    def commit(self) -> None:
        self._undo.clear()
        kept, self._kept = self._kept, []
        _run_all(kept)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        undo, self._undo, self._kept = self._undo, [], []
        _run_all(list(reversed(undo)))


def _run_all(actions: List[Tuple[Callable[..., Any], Tuple[Any, ...]]]) -> None:
    """Run each action in turn; one that fails is logged and the others still run (an undo
    that fails must not hide the error that stopped the change, nor stop the other undos)."""
    for action, args in actions:
        try:
            action(*args)
        except Exception as exc:
            logger.error("%s failed: %s", getattr(action, "__qualname__", action), exc)
