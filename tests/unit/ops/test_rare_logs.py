"""A ``RareLog`` logs each kind of failure at once, then at most once an interval with
the count left out since its last line, and its recovery once; kinds are independent.
Tables of (the clock, what happened) -> the lines logged, on a real logger."""

from __future__ import annotations

import logging
import threading

import pytest

from wsgi_proxy.ops.rare_logs import RareLog

LOCK = "lock failed (%s): going on without it"
WRITE = "cannot write to the cache (%s): passing through"
MESSAGES = {"lock": LOCK, "write": WRITE}
RECOVERED = {"lock": "lock files work again", "write": "cache writes work again"}

# (the clock, "warn" or "ok", the kind, the cause of a failure)
Event = tuple[float, str, str, str]


def warn(at: float, key: str = "lock", cause: str = "EROFS") -> Event:
    return (at, "warn", key, cause)


def ok(at: float, key: str = "lock") -> Event:
    return (at, "ok", key, "")


CASES: list[tuple[str, list[Event], list[str]]] = [
    ("the first failure is logged at once, with its cause",
     [warn(0)],
     ["WARNING lock failed (EROFS): going on without it"]),
    ("failures within the interval are counted, not logged",
     [warn(0), warn(1), warn(30), warn(59.9)],
     ["WARNING lock failed (EROFS): going on without it"]),
    ("the first failure after the interval tells how many were left out",
     [warn(0), warn(1), warn(30), warn(60)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock failed (EROFS): going on without it (and 2 more in the last 60 s)"]),
    ("the interval and the count start again at each line",
     [warn(0), warn(1), warn(60), warn(61), warn(62), warn(120)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock failed (EROFS): going on without it (and 1 more in the last 60 s)",
      "WARNING lock failed (EROFS): going on without it (and 2 more in the last 60 s)"]),
    ("a line gives the latest cause",
     [warn(0), warn(10, cause="EMFILE"), warn(70, cause="EMFILE")],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock failed (EMFILE): going on without it (and 1 more in the last 70 s)"]),
    ("a failure after a quiet interval is logged alone",
     [warn(0), warn(500)],
     ["WARNING lock failed (EROFS): going on without it"] * 2),
    ("thousands are grouped",
     [warn(0), *[warn(1)] * 1500, warn(61)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock failed (EROFS): going on without it (and 1,500 more in the last 61 s)"]),
    ("kinds are counted apart",
     [warn(0), warn(1, "write"), warn(2), warn(3, "write"), warn(61, "write")],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING cannot write to the cache (EROFS): passing through",
      "WARNING cannot write to the cache (EROFS): passing through "
      "(and 1 more in the last 60 s)"]),
    ("a recovery is logged once, with the count not told yet",
     [warn(0), warn(5), warn(9), ok(10), ok(11)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock files work again (2 more failed in the last 10 s)"]),
    ("a recovery with nothing left out",
     [warn(0), ok(3)],
     ["WARNING lock failed (EROFS): going on without it", "WARNING lock files work again"]),
    ("a kind that never failed logs no recovery",
     [ok(0), warn(1, "write"), ok(2)],
     ["WARNING cannot write to the cache (EROFS): passing through"]),
    ("a failure soon after a recovery is counted for the next warning",
     [warn(0), warn(1), ok(2), warn(3), warn(60)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock files work again (1 more failed in the last 2 s)",
      "WARNING lock failed (EROFS): going on without it (and 1 more in the last 58 s)"]),
    ("a failure an interval after the last warning is logged at once, recovered or not",
     [warn(0), ok(2), warn(100)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock files work again",
      "WARNING lock failed (EROFS): going on without it"]),
    ("a failure that comes and goes: a warning and a recovery an interval",
     [warn(0), ok(1), warn(2), ok(3), warn(4), ok(5), warn(61), ok(62), warn(63), ok(64)],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING lock files work again",
      "WARNING lock failed (EROFS): going on without it (and 2 more in the last 60 s)",
      "WARNING lock files work again"]),
    ("a recovery of one kind leaves the other failing",
     [warn(0), warn(1, "write"), ok(2), warn(3, "write"), warn(61, "write")],
     ["WARNING lock failed (EROFS): going on without it",
      "WARNING cannot write to the cache (EROFS): passing through",
      "WARNING lock files work again",
      "WARNING cannot write to the cache (EROFS): passing through "
      "(and 1 more in the last 60 s)"]),
]  # fmt: skip


class Lines(logging.Handler):
    """The lines logged, as ``LEVEL message``."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rare_log(clock: Clock) -> tuple[RareLog, Lines]:
    logger = logging.Logger("rare", logging.INFO)  # not registered: nothing shared
    lines = Lines()
    logger.addHandler(lines)
    return RareLog(logger, interval=60.0, clock=clock), lines


@pytest.mark.parametrize(("case", "events", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rare_log(case: str, events: list[Event], expected: list[str]) -> None:
    clock = Clock()
    rare, logged = rare_log(clock)
    for at, what, key, cause in events:
        clock.now = at
        if what == "warn":
            rare.warning(key, MESSAGES[key], cause)
        else:
            rare.recovered(key, RECOVERED[key])
    assert logged.lines == expected, case


def test_failures_from_many_threads_are_each_counted_once() -> None:
    clock = Clock()
    rare, logged = rare_log(clock)
    threads, each = 8, 2000
    start = threading.Barrier(threads)

    def fail() -> None:
        start.wait()
        for _ in range(each):
            rare.warning("lock", LOCK, "EROFS")

    workers = [threading.Thread(target=fail) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    clock.now = 60.0
    rare.warning("lock", LOCK, "EROFS")
    assert logged.lines == [
        "WARNING lock failed (EROFS): going on without it",
        "WARNING lock failed (EROFS): going on without it (and 15,999 more in the last 60 s)",
    ]
