"""Request durations as the client saw them, by cache status: the histogram
``wsgi_proxy_request_duration_seconds``, recorded on the request path without a lock.

A request's duration is gunicorn's own ``request_time``, handed to the logger's
``access()`` (a supported hook: gunicorn's ``logger_class``) after the last byte was
written to the client, ``sendfile`` included; it counts from the moment gunicorn had the
request's head. Its cache status is the one ``Metrics.count_request`` counted for it, in
the same thread: gunicorn's gthread worker runs the application and ``access()`` in the
thread that handles the request.

Invariants:
- Recording takes no lock and makes no object but Python's integers: each thread adds to
  a list of counts only it writes (its ``tally``); a thread's first request registers its
  tally under a lock, once.
- The worker's tallies reach the other workers through a file per process in the metrics
  folder (``durations_<pid>.json``, replaced whole), written by a background thread every
  ``FLUSH_INTERVAL``, at a scrape in the worker that serves it, and at exit; the scrape sums
  the files of every process, dead ones included, as prometheus_client does with counters.
  A scrape is therefore at most ``FLUSH_INTERVAL`` behind for the other workers.
- A request without a counted cache status (the admin interface, a crash) is not recorded:
  the histogram's count per status equals ``wsgi_proxy_requests_total`` for it, once
  flushed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NAME = "wsgi_proxy_request_duration_seconds"
HELP = "Time from the request's head to the last byte written to the client, by cache status"
# Upper bounds in seconds: a small hit on loopback to a slow origin's large body.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)  # fmt: skip
# The cache statuses ``Metrics.count_request`` counts (README, Metrics).
STATUSES = ("hit", "miss", "pass", "revalidated", "stale", "method", "error", "peer")
FLUSH_INTERVAL = 1.0
FILE_PREFIX = "durations_"

_BOUNDS_US = tuple(round(bound * 1_000_000) for bound in BUCKETS)
# A tally per status: a count per bucket and one for +Inf (not cumulative), then the sum in
# microseconds; after every status's, the index of the status of the thread's request.
_WIDTH = len(BUCKETS) + 2
_SUM = len(BUCKETS) + 1
_PENDING = len(STATUSES) * _WIDTH
_INDEX = {status: i * _WIDTH for i, status in enumerate(STATUSES)}
# This worker's, once started (``Durations.start``): gunicorn's logger has no way to the app.
_active: Durations | None = None


def record_request(request_time: Any) -> None:
    """The request the calling thread ran is over (gunicorn's logger ``access()``): record
    its duration in this process's ``Durations``, if it has started one."""
    active = _active
    if active is not None:
        active.record(request_time)


class Durations:
    """One worker's request durations. ``note`` and ``record`` run on the request path."""

    def __init__(self, folder: Path, pid: int) -> None:
        self.path = folder / f"{FILE_PREFIX}{pid}.json"
        self._local = threading.local()
        self._tallies: list[tuple[threading.Thread, list[int]]] = []
        self._retired = [0] * _PENDING  # the tallies of threads that ended
        self._lock = threading.Lock()  # a thread's first request, and the sums
        self._flush_lock = threading.Lock()  # never taken on the request path
        self._written: list[int] | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Record this process's requests from now on (``record_request``), flushed every
        ``FLUSH_INTERVAL`` from a background thread, and at exit."""
        global _active  # noqa: PLW0603 - one per worker process, set once after the fork
        _active = self
        threading.Thread(target=self._run, name="wsgi_proxy-durations", daemon=True).start()
        atexit.register(self.flush)

    def stop(self) -> None:
        self._stop.set()

    def note(self, status: str) -> None:
        """The cache status of the request this thread runs (``STATUSES``)."""
        start = _INDEX.get(status)
        if start is not None:
            self._tally()[_PENDING] = start

    def record(self, request_time: Any) -> None:
        """The request this thread ran is over: ``request_time`` is gunicorn's timedelta.
        Nothing is recorded for a request without a noted status."""
        tally = getattr(self._local, "tally", None)
        if tally is None:
            return
        start = tally[_PENDING]
        if start < 0:
            return
        tally[_PENDING] = -1
        micros = request_time.seconds * 1_000_000 + request_time.microseconds
        tally[start + bisect_left(_BOUNDS_US, micros)] += 1
        tally[start + _SUM] += micros

    def _tally(self) -> list[int]:
        tally: list[int] | None = getattr(self._local, "tally", None)
        if tally is None:
            tally = [0] * _PENDING + [-1]
            self._local.tally = tally
            with self._lock:
                self._tallies.append((threading.current_thread(), tally))
        return tally

    def totals(self) -> list[int]:
        """The sums of every thread's tallies (the ``_PENDING`` slots left out). A thread
        that has ended is folded into the retired totals, so the list does not grow."""
        with self._lock:
            live = []
            for thread, tally in self._tallies:
                if thread.is_alive():
                    live.append((thread, tally))
                else:
                    _add(self._retired, tally)
            self._tallies = live
            sums = list(self._retired)
            for _, tally in live:
                _add(sums, tally)
        return sums

    def flush(self) -> None:
        """Write this worker's totals to its file, if they changed since the last write.
        One flush at a time (the background thread's, a scrape's, the one at exit): they
        share the temporary file."""
        with self._flush_lock:
            totals = self.totals()
            if totals == self._written:
                return
            by_status = {
                s: totals[i : i + _WIDTH] for s, i in _INDEX.items() if any(totals[i : i + _WIDTH])
            }
            tmp = self.path.with_name(f".tmp.{self.path.name}")
            try:
                tmp.write_text(json.dumps(by_status))
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("cannot write request durations to %s: %s", self.path, exc)
                return
            self._written = totals

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            try:
                self.flush()
            except Exception:  # the thread must outlive any one failure
                log.exception("flushing request durations failed")


def _add(into: list[int], tally: list[int]) -> None:
    for i in range(_PENDING):
        into[i] += tally[i]


def read_all(folder: Path) -> dict[str, list[int]]:
    """Every process's totals in ``folder``, summed: by status, the counts per bucket
    (not cumulative, +Inf last) and the sum in microseconds."""
    summed: dict[str, list[int]] = {}
    for counts in _files(folder):
        for status, tally in counts.items():
            if status not in _INDEX or len(tally) != _WIDTH:
                continue
            into = summed.setdefault(status, [0] * _WIDTH)
            for i, value in enumerate(tally):
                into[i] += int(value)
    return summed


def _files(folder: Path) -> Iterator[dict[str, list[int]]]:
    with contextlib.suppress(OSError):
        for item in os.scandir(folder):
            if item.name.startswith(FILE_PREFIX) and item.name.endswith(".json"):
                with contextlib.suppress(OSError, ValueError):
                    counts = json.loads(Path(item.path).read_text())
                    if isinstance(counts, dict):
                        yield counts


def families(folder: Path) -> Iterable[Any]:
    """The histogram, for a collector: cumulative buckets, the count, the sum."""
    from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415

    family = HistogramMetricFamily(NAME, HELP, labels=["cache"])
    for status, tally in sorted(read_all(folder).items()):
        buckets, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), tally[:_SUM], strict=True):
            running += count
            buckets.append((_bound_text(bound), float(running)))
        family.add_metric([status], buckets, tally[_SUM] / 1_000_000)
    yield family


def _bound_text(bound: float) -> str:
    """The ``le`` value as prometheus_client writes it (``floatToGoString``)."""
    if bound == float("inf"):
        return "+Inf"
    return repr(bound)
