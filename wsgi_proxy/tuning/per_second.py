"""Texts made from the current second (the ``Date`` field, the access log's time), made again
only when the second changes: formatting a date costs more than the rest of a line.

Invariant: the memo is one tuple, replaced whole, so a thread always reads a second and its
own text; two threads may make the same second's text, no harm.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PerSecond:
    """``make(second)`` for the current second, or for ``now`` when given."""

    def __init__(self, make: Callable[[int], str]) -> None:
        self.make = make
        self.memo: tuple[int | None, str] = (None, "")

    def __call__(self, now: float | None = None) -> str:
        second = int(time.time() if now is None else now)
        memo = self.memo
        if memo[0] != second:
            memo = self.memo = (second, self.make(second))
        return memo[1]
