"""What the layers below the server know of a worker's thread pool (server/thread_pool.py).

- ``waiting()`` wraps a blocking wait on a request's path (the origin's answer, another
  request's fetch), so the pool may start another request meanwhile. Outside a pool's
  thread (a background refresh, a test) it does nothing.
- ``PoolStats`` are the counts a pool reports, and ``ReportingPool`` the one attribute the
  metrics set on a pool to receive them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

_local = threading.local()
_NOTHING = nullcontext()


@dataclass(frozen=True)
class PoolStats:
    """A pool's state now, and what it did since it started."""

    threads: int  # threads alive, idle or not (at most ``limit``)
    running: int  # requests running and not waiting: what ``active`` bounds
    waiting: int  # requests inside ``waiting()``: the origin, another request's fetch
    queued: int  # requests waiting for a turn
    queued_total: int  # requests (gunicorn's tasks) that found no turn free when they came
    limited_total: int  # of those, the ones that found a turn but no thread
    long_total: int  # stints marked long-running


class ReportingPool(Protocol):
    """A pool whose counts go to ``reporter`` (its watchdog calls it)."""

    reporter: Callable[[PoolStats], None] | None


def waiting() -> AbstractContextManager[None]:
    """Around a blocking wait on the current request's path: the pool may start another
    request meanwhile. Does nothing outside a pool thread."""
    wait: AbstractContextManager[None] | None = getattr(_local, "wait", None)
    return _NOTHING if wait is None else wait


def enter_pool_thread(wait: AbstractContextManager[None]) -> None:
    """Called by a pool's thread when it starts: ``waiting()`` on it is ``wait``."""
    _local.wait = wait


_process_pool: list[ReportingPool] = []  # this process's worker pool, once made


def set_process_pool(pool: ReportingPool) -> None:
    """The worker's pool is ``pool`` (server/worker.py, in the worker after the fork)."""
    _process_pool[:] = [pool]


def process_pool() -> ReportingPool | None:
    """This process's worker pool, if the worker made one of the proxy's."""
    return _process_pool[0] if _process_pool else None
