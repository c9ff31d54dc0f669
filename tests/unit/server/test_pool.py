"""The workers' thread pool: requests start in the order they came while fewer than
``active`` run, not counting those waiting or running long; at most ``limit`` threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from wsgi_proxy.core.threads import PoolStats, waiting
from wsgi_proxy.server.thread_pool import TICK, ElasticPool

SETTLE = 0.2  # seconds for a pool's threads to reach what they block on


@pytest.fixture
def pools() -> Iterator[list[ElasticPool]]:
    made: list[ElasticPool] = []
    yield made
    for pool in made:
        pool.shutdown(wait=False)


def blocker(started: list[str], name: str, release: threading.Event) -> Callable[[], str]:
    def task() -> str:
        started.append(name)
        assert release.wait(5)
        return name

    return task


def test_requests_start_in_order_and_at_most_active_run(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=2, limit=8, long_run=60)
    pools.append(pool)
    started: list[str] = []
    releases = [threading.Event() for _ in range(5)]
    futures = [pool.submit(blocker(started, str(i), releases[i])) for i in range(5)]
    time.sleep(SETTLE)
    assert started == ["0", "1"]
    assert pool.counts() == (2, 2, 3)  # threads, running, queued
    releases[1].set()
    assert futures[1].result(5) == "1"
    time.sleep(SETTLE)
    assert started == ["0", "1", "2"]  # the next in line, on the thread just freed
    assert pool.counts() == (2, 2, 2)
    for release in releases:
        release.set()
    assert [f.result(5) for f in futures] == ["0", "1", "2", "3", "4"]


def test_a_waiting_request_lets_the_next_one_start(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=1, limit=4, long_run=60)
    pools.append(pool)
    started: list[str] = []
    origin = threading.Event()

    def on_origin() -> None:
        started.append("waiting")
        with waiting(), waiting():  # nested: counted once
            assert origin.wait(5)

    first = pool.submit(on_origin)
    time.sleep(SETTLE)
    release = threading.Event()
    second = pool.submit(blocker(started, "next", release))
    time.sleep(SETTLE)
    assert started == ["waiting", "next"]
    assert pool.counts() == (2, 1, 0)  # the waiting one is not counted
    third = pool.submit(blocker(started, "third", release))
    time.sleep(SETTLE)
    assert pool.counts() == (2, 1, 1)  # one runs, which is all that may
    origin.set()
    release.set()
    first.result(5)
    assert (second.result(5), third.result(5)) == ("next", "third")


def test_a_long_running_request_is_not_counted(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=1, limit=4, long_run=0.3)
    pools.append(pool)
    began = threading.Event()
    slow_client = threading.Event()

    def blocked() -> str:
        began.set()
        assert slow_client.wait(5)
        return "long"

    first = pool.submit(blocked)
    assert began.wait(5)
    second = pool.submit(lambda: "next")
    assert pool.counts() == (1, 1, 1)  # not yet long-running: the next one waits its turn
    assert second.result(3) == "next"  # then it starts, while the first still blocks
    assert not first.done()
    slow_client.set()
    assert first.result(5) == "long"


def test_requests_back_from_a_wait_go_on_at_once(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=1, limit=4, long_run=60)
    pools.append(pool)
    origin, done = threading.Event(), threading.Event()

    def on_origin() -> None:
        with waiting():
            assert origin.wait(5)
        assert done.wait(5)

    futures = [pool.submit(on_origin) for _ in range(3)]
    time.sleep(SETTLE)
    assert pool.counts() == (3, 0, 0)
    origin.set()
    time.sleep(SETTLE)
    assert pool.counts() == (3, 3, 0)  # active bounds the starts, not the returns
    done.set()
    for future in futures:
        future.result(5)


def test_no_more_threads_than_the_limit(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=1, limit=2, long_run=60)
    pools.append(pool)
    origin = threading.Event()

    def on_origin() -> None:
        with waiting():
            assert origin.wait(5)

    futures = [pool.submit(on_origin) for _ in range(3)]
    time.sleep(SETTLE)
    assert pool.counts() == (2, 0, 1)  # both threads wait; the third request queues
    origin.set()
    for future in futures:
        future.result(5)
    assert pool.counts() == (2, 0, 0)


def _counts(**changed: int) -> PoolStats:
    zero = dict.fromkeys(("threads", "running", "waiting", "queued", "queued_total"), 0)
    return PoolStats(**{**zero, "limited_total": 0, "long_total": 0, **changed})


def _settles(pool: ElasticPool, expected: PoolStats) -> PoolStats:
    """The pool's counts once they equal ``expected``, or after 5 s."""
    deadline = time.monotonic() + 5
    while (stats := pool.stats()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return stats


def test_the_counts_tell_waiting_queued_and_thread_limited_requests(
    pools: list[ElasticPool],
) -> None:
    """Each step's counts, one turn and two threads: two requests wait on the origin; the
    third has a turn but no thread (queued, limited); once it runs, the fourth has a
    thread but no turn (queued, not limited)."""
    pool = ElasticPool(active=1, limit=2, long_run=60)
    pools.append(pool)
    started: list[str] = []
    origin, release = threading.Event(), threading.Event()

    def on_origin() -> None:
        with waiting():
            assert origin.wait(5)

    futures = [pool.submit(on_origin)]
    assert _settles(pool, _counts(threads=1, waiting=1)) == _counts(threads=1, waiting=1)
    futures.append(pool.submit(on_origin))
    assert _settles(pool, _counts(threads=2, waiting=2)) == _counts(threads=2, waiting=2)
    futures.append(pool.submit(blocker(started, "third", release)))
    limited = _counts(threads=2, waiting=2, queued=1, queued_total=1, limited_total=1)
    assert pool.stats() == limited
    origin.set()  # both waits end; "third" starts on a thread they free
    runs = _counts(threads=2, running=1, queued_total=1, limited_total=1)
    assert _settles(pool, runs) == runs
    futures.append(pool.submit(blocker(started, "fourth", release)))
    no_turn = _counts(threads=2, running=1, queued=1, queued_total=2, limited_total=1)
    assert pool.stats() == no_turn
    release.set()
    assert [f.result(5) for f in futures[2:]] == ["third", "fourth"]
    done = _counts(threads=2, queued_total=2, limited_total=1)
    assert _settles(pool, done) == done
    assert started == ["third", "fourth"]


def test_the_counts_tell_long_runs(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=1, limit=2, long_run=0.1)
    pools.append(pool)
    release = threading.Event()
    future = pool.submit(blocker([], "long", release))
    long_run = _counts(threads=1, running=1, long_total=1)
    assert _settles(pool, long_run) == long_run
    release.set()
    assert future.result(5) == "long"
    assert _settles(pool, _counts(threads=1, long_total=1)) == _counts(threads=1, long_total=1)


def test_the_watchdog_reports_the_counts_when_they_change(
    pools: list[ElasticPool], caplog: pytest.LogCaptureFixture
) -> None:
    pool = ElasticPool(active=1, limit=2, long_run=60)
    pools.append(pool)
    reports: list[PoolStats] = []
    failures = [RuntimeError("again"), RuntimeError("the metrics folder is gone")]

    def reporter(stats: PoolStats) -> None:
        if failures:
            raise failures.pop()  # logged; the next report tries again
        reports.append(stats)

    def reported(condition: Callable[[PoolStats], bool]) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if reports and condition(reports[-1]):
                return True
            time.sleep(TICK)
        return False

    caplog.set_level(logging.DEBUG, logger="wsgi_proxy.server.thread_pool")
    pool.reporter = reporter
    assert pool.submit(lambda: "done").result(5) == "done"
    assert reported(lambda stats: stats.threads == 1)
    assert reports == [pool.stats()]  # after two failed reports, the same counts again
    failed = [r.levelno for r in caplog.records if "reporting" in r.getMessage()]
    assert failed == [logging.ERROR, logging.DEBUG]  # one error for failures in a row
    time.sleep(20 * TICK)
    assert len(reports) == 1  # nothing changed, nothing more reported
    origin = threading.Event()

    def on_origin() -> None:
        with waiting():
            assert origin.wait(5)

    future = pool.submit(on_origin)
    assert reported(lambda stats: stats.waiting == 1)
    origin.set()
    future.result(5)
    assert reported(lambda stats: stats.waiting == 0)
    waits = [stats.waiting for stats in reports]
    assert [w for i, w in enumerate(waits) if i == 0 or w != waits[i - 1]] == [0, 1, 0]


def test_results_and_errors_reach_the_future(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=1, limit=1)
    pools.append(pool)
    assert pool.submit(lambda x: x * 2, 21).result(5) == 42
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    assert pool.submit(lambda: "still serving").result(5) == "still serving"


def test_waiting_outside_a_pool_thread_does_nothing(pools: list[ElasticPool]) -> None:
    """A background refresh or a test thread calls waiting() too: the pool's count of its
    own running requests must not change."""
    pool = ElasticPool(active=1, limit=2, long_run=60)
    pools.append(pool)
    release = threading.Event()
    running = pool.submit(blocker([], "running", release))
    time.sleep(SETTLE)
    with waiting():  # this thread is not the pool's
        assert pool.counts() == (1, 1, 0)
        queued = pool.submit(lambda: "queued")
        assert pool.counts() == (1, 1, 1)  # no room was made for it
    release.set()
    assert (running.result(5), queued.result(5)) == ("running", "queued")


def test_shutdown_ends_idle_threads_and_refuses_more(pools: list[ElasticPool]) -> None:
    pool = ElasticPool(active=2, limit=2)
    for future in [pool.submit(time.sleep, 0.05) for _ in range(2)]:
        future.result(5)
    assert pool.counts()[0] == 2
    pool.shutdown(wait=True)
    assert pool.counts()[0] == 0
    with pytest.raises(RuntimeError):
        pool.submit(print)


@pytest.mark.parametrize(("active", "limit"), [(0, 4), (5, 4)])
def test_active_must_be_between_1_and_the_limit(active: int, limit: int) -> None:
    with pytest.raises(ValueError, match="active"):
        ElasticPool(active, limit)
