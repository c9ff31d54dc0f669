"""Warnings that could come once a request, logged once a minute: a cache disk turned read
only fails every miss's fetch lock and write, and a line each (2,000 a second at 1,000
misses a second) would hit journald's rate limit or fill the log disk, and drown the
lines that matter.

A ``RareLog`` takes a warning with a key that names its kind (``"lock"``, ``"write"``):
the first is logged at once, with its cause (the caller's message and arguments); those
that follow within ``interval`` of that line are counted, not logged; the first one after
it is logged with the count: ``... (and 5,321 more in the last 60 s)``. The caller may say
the trouble is over (``recovered``, where success is cheap to see): that is logged once
after each warning line, with the count not told yet.

Invariants:
- At most one warning line per key per ``interval``, and one recovery line per warning
  line: a failure that comes and goes (no file descriptors left at each peak of load)
  makes two lines a minute, not two a flip. So a failure soon after a recovery line is
  counted, and told with the next line, like any other within the interval.
- Every failure is counted: each line tells how many were left out since the one before
  (the metrics count them all too: ``wsgi_proxy_cache_errors_total``).
- No thread and no timer: a count left out is told with the next failure of its kind
  after the interval, or with the recovery. The clock is an argument (``time.monotonic``
  by default).
- Thread-safe: one lock around the counts, held for no logging; ``recovered`` for a kind
  that is not failing (every request's case) only reads a set, without the lock.
- A fork starts the child afresh (a new lock, nothing failed yet): each process logs its
  own first failures, and a lock held in the parent at the fork cannot hang the child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 60.0


@dataclass(slots=True)
class _Kind:
    warned_at: float  # the clock at its last warning line
    logged_at: float  # the clock at its last line, warning or recovery
    left_out: int = 0  # failures since its last line, not logged
    recovery_told: bool = False  # a recovery line since its last warning line


class RareLog:
    """``logger``'s warnings, each kind at most once per ``interval`` seconds of
    ``clock``."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.reset()
        _made.add(self)

    def warning(self, key: str, msg: str, *args: object) -> None:
        """A failure of kind ``key``: ``msg % args`` logged now if it is the first of its
        kind, or the first ``interval`` or more after its last warning line, with the
        count of those left out since its last line."""
        now = self.clock()
        with self._lock:
            self._failing.add(key)
            kind = self._kinds.get(key)
            if kind is None:
                self._kinds[key] = _Kind(now, now)
                left_out, since = 0, 0.0
            elif now - kind.warned_at < self.interval:
                kind.left_out += 1
                return
            else:
                left_out, since = kind.left_out, now - kind.logged_at
                kind.warned_at = kind.logged_at = now
                kind.left_out, kind.recovery_told = 0, False
        if left_out:
            msg += " (and %s more in the last %d s)"
            args = (*args, f"{left_out:,}", round(since))
        self.logger.warning(msg, *args)

    def recovered(self, key: str, msg: str, *args: object) -> None:
        """Kind ``key`` works again: ``msg % args`` logged, with the count of failures
        not told yet, if it failed since the last line and its last line was a warning;
        nothing otherwise. At the warnings' level: who reads them learns that they
        ended."""
        if key not in self._failing:  # the common case: no lock taken
            return
        now = self.clock()
        with self._lock:
            if key not in self._failing:
                return  # another thread saw it first
            self._failing.discard(key)
            kind = self._kinds[key]
            if kind.recovery_told:
                return  # its failures since are told with its next warning line
            left_out, since = kind.left_out, now - kind.logged_at
            kind.logged_at, kind.left_out, kind.recovery_told = now, 0, True
        if left_out:
            msg += " (%s more failed in the last %d s)"
            args = (*args, f"{left_out:,}", round(since))
        self.logger.warning(msg, *args)

    def reset(self) -> None:
        """Nothing failed yet, and a new lock (a child process after a fork)."""
        self._lock = threading.Lock()
        self._kinds: dict[str, _Kind] = {}
        self._failing: set[str] = set()  # kinds failed since their last success


# Every RareLog, weakly (a test's dropped is not kept): each starts afresh after a fork.
_made: weakref.WeakSet[RareLog] = weakref.WeakSet()


def _reset_all() -> None:
    for rare in list(_made):
        rare.reset()


os.register_at_fork(after_in_child=_reset_all)
