"""Prometheus metrics, summed across gunicorn workers.

prometheus_client's multiprocess mode keeps each process's values in memory-mapped files in
one folder and adds them up at scrape time, which is what a pre-fork server needs. It
chooses that mode when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``; so this module
imports it only inside ``Metrics()``, after pointing that variable at
``WSGI_PROXY_METRICS_DIR`` (which the master empties at start, see server/settings.py).
The folder is not inside the cache folder: it is not cache content and must not count
against its size.

Invariants: recording never raises into the request path; nothing is created at import.
The master imports prometheus_client too, without the variable, at start, to forget a dead
worker's files (``prepare_master``, ``mark_worker_dead``); the workers it forks still record
in the folder, since ``Metrics()`` sets the value class itself.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from wsgi_proxy.ops import durations
from wsgi_proxy.ops.durations import Durations

if TYPE_CHECKING:
    from wsgi_proxy.core.threads import PoolStats, ReportingPool

# Origin latency buckets, in seconds: loopback to slow backends.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The thread pools' metrics: (name, field of pool.PoolStats, help).
POOL_GAUGES = (
    ("wsgi_proxy_pool_threads", "threads", "Threads of the workers' pools"),
    ("wsgi_proxy_pool_running", "running",
     "Requests running, not waiting (WSGI_PROXY_ACTIVE_THREADS per worker start at once)"),
    ("wsgi_proxy_pool_waiting", "waiting",
     "Requests waiting on the origin or on another's fetch"),
    ("wsgi_proxy_pool_queue_length", "queued", "Requests waiting for a turn to start"),
)  # fmt: skip
POOL_COUNTERS = (
    ("wsgi_proxy_pool_queued_requests", "queued_total", "Requests that waited for a turn"),
    ("wsgi_proxy_pool_thread_limited_requests", "limited_total",
     "Requests that waited because every thread was taken (WSGI_PROXY_THREADS)"),
    ("wsgi_proxy_pool_long_runs", "long_total",
     "Stints of over 50 ms without a wait, after which a request stops counting as running"),
)  # fmt: skip


# The cache folder operations whose failures are counted (Store.on_error).
CACHE_OPS = ("read", "write")
# The file in the metrics folder that counts the workers that exited (count_worker_exit).
WORKER_EXITS = "worker_exits"
# The file in the metrics folder the cache manager counts its evictions in (store/manager.py).
EVICTIONS = "evictions"
# The versions wsgi_proxy_build_info names: label, then the distribution (None: Python).
BUILD_LABELS = (
    ("version", "wsgi_proxy"),
    ("python", None),
    ("gunicorn", "gunicorn"),
    ("urllib3", "urllib3"),
)


class Sample(NamedTuple):
    """One line of the exposition text: ``wsgi_proxy_requests_total``, (("cache", "hit"),),
    1812.0."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


def prepare_master() -> None:
    """Import what ``mark_worker_dead`` needs, in the master at start: gunicorn 23 calls
    the hook that runs it inside its SIGCHLD handler, where a second worker's exit during
    the first one's import would find prometheus_client half imported."""
    importlib.import_module("prometheus_client.multiprocess")


def mark_worker_dead(folder: Path, pid: int) -> None:
    """Forget a dead worker's gauges (the pools'), which are summed over live ones."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - see the module docstring

    multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def count_worker_exit(folder: Path) -> None:
    """In the master, when a worker has exited: one more in ``worker_exits``, the file the
    scrape reads ``wsgi_proxy_worker_exits_total`` from (the master records no
    prometheus_client value of its own). One byte appended per exit, the count its size:
    gunicorn 23 runs this inside its SIGCHLD handler, which another worker's exit can
    interrupt, and a read-modify-write (or a shared temporary file) would lose a count."""
    fd = os.open(folder / WORKER_EXITS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)


def _count_in(path: Path) -> float:
    try:
        return float(path.read_text() or 0)
    except (OSError, ValueError):
        return 0.0


def reset_metrics_dir(folder: Path) -> None:
    """Empty the folder at server start: files of processes from an earlier run would
    otherwise be summed in forever."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


PURGED_ENTRIES = (
    "wsgi_proxy_purged_entries",
    "Stored responses removed (or marked stale) by purges, by kind",
    ["kind"],
)


def purged_entries_counter(folder: Path) -> Callable[[str, int], None]:
    """In the cache manager's process (which runs the ban lurker): ``count(kind, n)`` adds
    to ``wsgi_proxy_purged_entries_total`` as a worker's ``count_purged`` does, in a file of
    its own in the metrics folder that the scrape sums with the workers'."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from prometheus_client import Counter  # noqa: PLC0415

    counter = Counter(*PURGED_ENTRIES)
    return lambda kind, count: counter.labels(kind).inc(count)


class Metrics:
    """The proxy's counters and histograms. One instance per worker process."""

    def __init__(self, folder: Path, gauges: Callable[[], Iterable[tuple[str, str, float]]]):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        from prometheus_client import Counter, Gauge, Histogram, values  # noqa: PLC0415 - see docstring

        # Each value asks for the process id on every increment, to notice a fork: one
        # getpid syscall each. A worker never forks after this object exists (it is built
        # after gunicorn's fork), so its id is read once.
        pid = os.getpid()
        values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]
        self.folder = folder
        self._gauges = gauges
        self._children: dict[tuple[int, str], Any] = {}
        self.requests = Counter(
            "wsgi_proxy_requests", "Requests answered, by cache outcome", ["cache"]
        )
        self.origin_requests = Counter(
            "wsgi_proxy_origin_requests", "Requests sent to the origin, by status", ["status"]
        )
        self.origin_seconds = Histogram(
            "wsgi_proxy_origin_seconds",
            "Time until the origin's response head arrived",
            buckets=LATENCY_BUCKETS,
        )
        self.bytes = Counter(
            "wsgi_proxy_body_bytes", "Body bytes sent to clients, by source", ["source"]
        )
        self.purges = Counter("wsgi_proxy_purges", "Purge operations applied, by kind", ["kind"])
        self.purged_entries = Counter(*PURGED_ENTRIES)
        self.cache_errors = Counter(
            "wsgi_proxy_cache_errors",
            "Cache folder operations that failed (read, write), the request passed through",
            ["op"],
        )
        self.revalidations = Counter(
            "wsgi_proxy_revalidations", "Revalidations with the origin, by result", ["result"]
        )
        self.coalesced = Counter(
            "wsgi_proxy_coalesced_waits", "Requests that waited for another's fetch"
        )
        self.errors = Counter("wsgi_proxy_errors", "Errors, by kind", ["kind"])
        # The workers' thread pools (server/thread_pool.py), reported by each pool's
        # watchdog. "livesum": the sum over live workers; the master forgets a dead
        # one's (mark_worker_dead).
        self.pool_gauges = {
            field: Gauge(name, doc, multiprocess_mode="livesum") for name, field, doc in POOL_GAUGES
        }
        self.pool_counters = {field: Counter(name, doc) for name, field, doc in POOL_COUNTERS}
        self._pool_last: PoolStats | None = None
        self.durations = Durations(folder, pid)
        for op in CACHE_OPS:  # shown at 0 from the start, so that rate() and alerts see them
            self._child(self.cache_errors, op)
        self._build = build_info()

    def start(self) -> None:
        """Start what runs in the background: the request durations' flushes."""
        self.durations.start()

    def count_request(self, outcome: str) -> None:
        """One request answered, by cache outcome; its duration is recorded under the same
        outcome when gunicorn logs it (durations.py)."""
        self._child(self.requests, outcome).inc()
        self.durations.note(outcome)

    def count_purge(self, kind: str, purged: int) -> None:
        """One purge applied here (``kind``: purge.py's label), and the entries it hit."""
        self._child(self.purges, kind).inc()
        self._child(self.purged_entries, kind).inc(purged)

    def count_purged(self, kind: str, purged: int) -> None:
        """Entries a ban's lurker removed or marked (store/lurker.py): its purge was
        counted when the ban was recorded, with none."""
        self._child(self.purged_entries, kind).inc(purged)

    def count_cache_error(self, op: str) -> None:
        self._child(self.cache_errors, op).inc()

    def count_origin(self, status: str) -> None:
        """One origin request, by its status code (at most 500 of them) or "error"."""
        self._child(self.origin_requests, status).inc()

    def count_bytes(self, source: str, count: int) -> None:
        self._child(self.bytes, source).inc(count)

    def watch_pool(self, pool: ReportingPool) -> None:
        """Report ``pool``'s counts from now on (from its watchdog's thread)."""
        pool.reporter = self.record_pool

    def record_pool(self, stats: PoolStats) -> None:
        """Set the gauges, and add to the counters what the pool's totals grew by since
        the last call. The totals are taken as recorded first: a failure halfway loses
        increments, and a retry of the same counts cannot add them twice."""
        last, self._pool_last = self._pool_last, stats
        for field, counter in self.pool_counters.items():
            grown = getattr(stats, field) - (0 if last is None else getattr(last, field))
            if grown > 0:
                counter.inc(grown)
        for field, gauge in self.pool_gauges.items():
            gauge.set(getattr(stats, field))

    def _child(self, metric: Any, label: str) -> Any:
        """``metric.labels(label)``, kept: labels() costs more than the increment."""
        child = self._children.get((id(metric), label))
        if child is None:
            child = self._children[id(metric), label] = metric.labels(label)
        return child

    def render(self) -> tuple[bytes, str]:
        """The exposition text of all workers, plus the cache's size gauges."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

        return generate_latest(self._registry()), CONTENT_TYPE_LATEST

    def samples(self) -> list[Sample]:
        """What ``render`` writes, as (sample name, labels, value): the same sums over the
        workers, read the same way (the status page's JSON, ops/status.py)."""
        return [
            Sample(sample.name, tuple(sorted(sample.labels.items())), float(sample.value))
            for family in self._registry().collect()
            for sample in family.samples
        ]

    def worker_pools(self) -> dict[int, dict[str, float]]:
        """Each live worker's pool gauges (``POOL_GAUGES``' fields), by process id: the
        sums of ``samples`` taken apart. prometheus_client keeps a process's "livesum"
        gauges in ``gauge_livesum_<pid>.db`` (the name ``mark_process_dead`` removes);
        merging one such file alone gives that process's values. None found: {}."""
        from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

        fields = {name: field for name, field, _ in POOL_GAUGES}
        pools: dict[int, dict[str, float]] = {}
        for path in sorted(self.folder.glob("gauge_livesum_*.db")):
            pid = path.stem.rpartition("_")[2]
            if not pid.isdigit():
                continue
            try:
                families = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
            except (OSError, ValueError):  # the worker died and its file went meanwhile
                continue
            pools[int(pid)] = {
                fields[s.name]: float(s.value)
                for family in families
                for s in family.samples
                if s.name in fields
            }
        return pools

    def _registry(self) -> Any:
        from prometheus_client import CollectorRegistry  # noqa: PLC0415
        from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

        self.durations.flush()  # this worker's up to now; the others' as last flushed
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.folder))  # type: ignore[no-untyped-call]
        registry.register(_ScrapeCollector(self.folder, self._gauges, self._build))
        return registry


def build_info() -> dict[str, str]:
    """The labels of ``wsgi_proxy_build_info``: the versions installed."""
    found = {}
    for label, distribution in BUILD_LABELS:
        if distribution is None:
            found[label] = platform.python_version()
            continue
        try:
            found[label] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            found[label] = "unknown"
    return found


class _ScrapeCollector:
    """What is computed at scrape time, from the shared folders rather than per process:
    the cache's gauges, the request durations, the workers' exits, the build."""

    def __init__(
        self,
        folder: Path,
        gauges: Callable[[], Iterable[tuple[str, str, float]]],
        build: dict[str, str],
    ) -> None:
        self.folder = folder
        self.gauges = gauges
        self.build = build

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        for name, doc, value in self.gauges():
            yield GaugeMetricFamily(name, doc, value=value)
        yield from durations.families(self.folder)
        try:
            exits = float((self.folder / WORKER_EXITS).stat().st_size)  # count_worker_exit
        except OSError:
            exits = 0.0
        yield CounterMetricFamily(
            "wsgi_proxy_worker_exits", "Worker processes that exited (the master counts)", exits
        )
        yield CounterMetricFamily(
            "wsgi_proxy_evictions",
            "Files removed to keep the size limit (the cache manager counts)",
            _count_in(self.folder / EVICTIONS),
        )
        info = GaugeMetricFamily(
            "wsgi_proxy_build_info", "The versions running, as labels", labels=list(self.build)
        )
        info.add_metric(list(self.build.values()), 1.0)
        yield info
