"""Each worker's thread pool: many threads, few of them running requests at once.

gunicorn's gthread worker runs each request on a thread of its pool. A proxy needs many
threads, since a request waiting on a slow origin, or on another request's fetch, holds its
thread all that time; but every thread that runs contends for the GIL, and with 24 running
at once a cache hit's tail latency was two to three times a bare app's with 4
(docs/performance.md, server settings). This pool keeps both: up to ``limit`` threads, of
which at most ``active`` run requests at once. A request inside ``waiting()`` (the
origin's answer, another request's fetch) does not count, nor one that has run longer than
``long_run`` without waiting (a slow client reading a large body, most likely), so the next
queued request starts in its place: Java's ForkJoinPool compensates a blocked thread the same way.

Invariants:
- Requests start in the order they were submitted.
- A request starts when fewer than ``active`` requests run that are neither waiting nor
  long-running, and a thread is idle or may be started (at most ``limit``). One coming back
  from a wait goes on at once: ``active`` bounds the starts, and more may run for a moment
  (fifty origin answers arriving together), until they finish or wait again.
- A request's stint counts from its start or from the end of its last wait; the watchdog
  marks stints older than ``long_run`` every ``TICK``, so a stint counts as long after 50
  to 70 ms. That is wall-clock time: a request starved of the GIL on an overloaded machine
  can be taken for a blocked one, and another starts.
- ``waiting()`` outside a pool's thread (a background refresh, a test) does nothing.
- What the pool does is counted (``PoolStats``): a request adds an integer or two under
  the lock it takes anyway; the watchdog hands the counts to ``reporter`` (the metrics)
  every ``REPORT_EVERY`` ticks when they changed, outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from wsgi_proxy.core.threads import PoolStats, enter_pool_thread

LONG_RUN = 0.05  # seconds: a hit takes about a millisecond, a stint this long is blocked
TICK = 0.02  # seconds between the watchdog's looks at the running requests
REPORT_EVERY = 5  # ticks between two reports of the counts, when they changed

log = logging.getLogger(__name__)


class _Task:
    __slots__ = ("args", "fn", "future")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]):
        self.future = future
        self.fn = fn
        self.args = args

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the future, as the stdlib does
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class _Runner:
    """One thread of the pool, and its current request's state."""

    __slots__ = ("depth", "long", "since", "task", "wait", "wake")

    def __init__(self, pool: ElasticPool, task: _Task) -> None:
        self.task: _Task | None = task
        self.wake = threading.Lock()  # held while idle; released to hand a task over
        self.wake.acquire()
        self.since = time.monotonic()  # start of the current stint
        self.long = False  # counted in the pool's long-running requests
        self.depth = 0  # nested waiting() blocks
        self.wait = _Wait(pool, self)


class _Wait:
    """``waiting()`` for one runner: the outermost block stops its stint."""

    __slots__ = ("pool", "runner")

    def __init__(self, pool: ElasticPool, runner: _Runner) -> None:
        self.pool = pool
        self.runner = runner

    def __enter__(self) -> None:
        self.runner.depth += 1
        if self.runner.depth == 1:
            self.pool.begin_wait(self.runner)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.runner.depth -= 1
        if self.runner.depth == 0:
            self.pool.end_wait(self.runner)


class ElasticPool:
    """An executor for gunicorn's gthread worker (``submit``, ``shutdown``)."""

    def __init__(self, active: int, limit: int, long_run: float = LONG_RUN) -> None:
        if not 1 <= active <= limit:
            raise ValueError(f"need 1 <= active ({active}) <= limit ({limit})")
        self.active = active
        self.limit = limit
        self.long_run = long_run
        self.threads = 0
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._idle: list[_Runner] = []  # a stack: the thread that ran last runs next
        self._running: set[_Runner] = set()  # running a request, not waiting
        self._long = 0  # of those, the ones marked long-running
        self._waiting = 0  # requests inside waiting()
        self._queued_total = 0
        self._limited_total = 0
        self._long_total = 0
        self._closed = False
        # Called by the watchdog with the counts; it must not block for long.
        self.reporter: Callable[[PoolStats], None] | None = None
        self._reporter_failed = False  # the last report failed (the watchdog's own)
        watchdog = threading.Thread(target=self._watch, name="pool-watchdog", daemon=True)
        watchdog.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append(_Task(future, fn, args))
            self._dispatch()
            if self._queue:  # this request, the last in line, found no turn
                self._queued_total += 1
                if len(self._running) - self._long < self.active:
                    # A turn, but every thread is taken (or the system refused one more).
                    self._limited_total += 1
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Queued requests still run (unless ``cancel_futures``); idle threads end. gunicorn
        calls this from its SIGQUIT handler too, maybe while its own thread holds the lock
        (in ``submit``): then only the flag is set, and the process exits anyway."""
        if not self._lock.acquire(timeout=1.0):
            self._closed = True
            return
        try:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft().future.cancel()
            for runner in self._idle:
                runner.task = None
                runner.wake.release()
            self._idle.clear()
        finally:
            self._lock.release()
        while wait and self.threads:
            time.sleep(TICK)

    def begin_wait(self, runner: _Runner) -> None:
        with self._lock:
            self._stop_stint(runner)
            self._waiting += 1
            self._dispatch()

    def end_wait(self, runner: _Runner) -> None:
        with self._lock:
            self._waiting -= 1
            runner.since = time.monotonic()
            self._running.add(runner)

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                threads=self.threads,
                running=len(self._running),
                waiting=self._waiting,
                queued=len(self._queue),
                queued_total=self._queued_total,
                limited_total=self._limited_total,
                long_total=self._long_total,
            )

    def counts(self) -> tuple[int, int, int]:
        """(threads, requests running and not waiting, requests queued): for tests."""
        stats = self.stats()
        return stats.threads, stats.running, stats.queued

    # ---- holding the lock -----------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued requests while the running ones that count leave room."""
        while self._queue and len(self._running) - self._long < self.active:
            if self._idle:
                runner = self._idle.pop()
                runner.task = self._queue.popleft()
                runner.since = time.monotonic()
                self._running.add(runner)
                runner.wake.release()
            elif self.threads < self.limit:
                runner = _Runner(self, self._queue[0])
                try:
                    threading.Thread(target=self._run, args=(runner,), daemon=True).start()
                except RuntimeError:  # the system's thread limit: wait for a running one
                    return
                self._queue.popleft()
                self.threads += 1
                self._running.add(runner)
            else:
                return

    def _stop_stint(self, runner: _Runner) -> None:
        self._running.discard(runner)
        if runner.long:
            runner.long = False
            self._long -= 1

    # ---- threads --------------------------------------------------------------------------

    def _run(self, runner: _Runner) -> None:
        enter_pool_thread(runner.wait)
        while (task := runner.task) is not None:
            runner.task = None
            task.run()
            del task  # its arguments (a connection) are not kept while idle
            with self._lock:
                self._stop_stint(runner)
                self._idle.append(runner)
                self._dispatch()  # the runner just appended is the first handed a request
                if runner.task is None and self._closed:
                    self._idle.remove(runner)
                    break
            runner.wake.acquire()
        with self._lock:
            self.threads -= 1

    def _watch(self) -> None:
        ticks = 0
        reported: PoolStats | None = None
        while True:
            time.sleep(TICK)
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                for runner in self._running:
                    if not runner.long and now - runner.since > self.long_run:
                        runner.long = True
                        self._long += 1
                        self._long_total += 1
                self._dispatch()
            ticks += 1
            if self.reporter is not None and ticks % REPORT_EVERY == 0:
                reported = self._report(self.reporter, reported)

    def _report(
        self, reporter: Callable[[PoolStats], None], last: PoolStats | None
    ) -> PoolStats | None:
        """Hand the counts to ``reporter`` if they changed since ``last``; what was
        reported. A failing reporter is tried again at the next report; its first failure
        in a row is logged as an error, the others at debug level."""
        stats = self.stats()
        if stats == last:
            return last
        try:
            reporter(stats)
        except Exception:
            level = logging.DEBUG if self._reporter_failed else logging.ERROR
            log.log(level, "reporting the thread pool's counts failed", exc_info=True)
            self._reporter_failed = True
            return last
        self._reporter_failed = False
        return stats
