"""Size limit: least-recently-used eviction across all workers, off the request path.

Invariants:
- Runs in one background thread per worker; the scan itself runs in one worker at a time
  (a non-blocking lock on ``state/evict.lock``), so workers never race to delete.
- The shared usage counter decides when to scan; the scan measures the truth, evicts by
  mtime (the LRU clock that hits refresh) down to the low-water mark, and resets the
  counter. A full scan also runs every ``RESYNC_INTERVAL`` to correct drift.
- A disk that fills before the limit (a write met ``ENOSPC``: ``Store.disk_full``) is
  scanned at the next pass with the bytes stored then as the limit, so the cache comes
  down to its low-water mark of that; the pass writes nothing before it has evicted.
- The scan's memory does not grow with the cache: one walk counts; over the high-water
  mark a second walk keeps only the oldest files that hold the excess, in a heap.
- ``walk_files`` is the one walk of the cache folder (purge.py's scans use it too).
- Each pass also lets go of the worker's held files that can no longer be given
  (``OpenFiles.prune``): a removed entry's disk blocks are free within one interval.
- Temporary files of writers that died (pid gone, or older than ``STALE_TMP_AGE``) are
  removed by the scan; those of live writers are counted and left alone.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.entry_file import TMP_PREFIX
from wsgi_proxy.store.fetch_locks import try_acquire

log = logging.getLogger(__name__)

HIGH_WATER = 0.95
LOW_WATER = 0.85
RESYNC_INTERVAL = 300.0
STALE_TMP_AGE = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class StoredFile:
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a scan saw: bytes in all (temporary files included), stored files."""

    total: int
    entries: int


class Evictor:
    """Keeps the cache under ``max_size`` bytes."""

    def __init__(
        self,
        store: Store,
        max_size: int,
        interval: float = 0.5,
        on_evict: Callable[[int], None] | None = None,
        lurk: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.on_evict = on_evict
        # The ban lurker's step (lurker.py), run here until a cache manager process runs it.
        self.lurk = lurk
        self.max_size = max_size
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scanned_marker = store.state / "scanned"
        # The first pass scans whatever the counter says: after a crash or kill -9 the
        # temporary files of dead writers are removed as soon as the server is back.
        self._started = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wsgi_proxy-evictor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        warned = 0.0
        while not self._stop.wait(self.interval):
            try:
                self.tick(time.time())
            except OSError as exc:
                # A full or read-only disk: say so once a minute, not twice a second.
                if time.monotonic() - warned > 60:
                    log.warning("eviction pass failed: %s", exc)
                    warned = time.monotonic()
            except Exception:  # the thread must outlive any one failure
                log.exception("eviction pass failed")

    def tick(self, now: float) -> None:
        """Fold this worker's size changes into the counter; scan when over the high-water
        mark, when the last full scan is old, or when a write found the disk full. And let
        go of the held files that can no longer be given (open_files.py), so that a removed
        entry's disk space is freed."""
        self.store.open_files.prune(now)
        if self.store.disk_full.is_set():
            # Before the counter's flush, which writes a file: a full disk has no room for it.
            self._evict_alone(now, full=True)
        if self.lurk is not None and self.store.bans.current().bans:
            self._alone(self.lurk)
        total = self.store.usage.flush()
        first, self._started = not self._started, True
        if total <= self.max_size * HIGH_WATER and not first and not self._is_resync_due(now):
            return
        self._evict_alone(now)

    def _evict_alone(self, now: float, *, full: bool = False) -> None:
        """``evict`` unless another worker's scan runs (then the next pass tries again)."""
        self._alone(lambda: self.evict(now, full=full))

    def _alone(self, work: Callable[[], object]) -> None:
        """``work`` under ``state/evict.lock``, unless another worker holds it (then the
        next pass tries again)."""
        lock = FileLock(
            self.store.state / "evict.lock", thread_local=False, preserve_lock_file=True
        )
        if not try_acquire(lock, 0):
            return
        try:
            work()
        finally:
            lock.release()

    def _is_resync_due(self, now: float) -> bool:
        try:
            return now - self._scanned_marker.stat().st_mtime > RESYNC_INTERVAL
        except FileNotFoundError:
            return True

    def evict(self, now: float, *, full: bool = False) -> int:
        """Scan, remove dead writers' temporary files, evict LRU files down to the low-water
        mark if over the high-water mark; return the bytes stored afterwards. ``full``: a
        write found the disk full, the bytes stored now are the limit (if lower)."""
        if full:
            # Cleared before the scan: a write refused from now on asks for another pass.
            self.store.disk_full.clear()
        scan = scan_objects(self.store.objects, now)
        total, entries = scan.total, scan.entries
        limit = min(self.max_size, total) if full else self.max_size
        if full and limit < self.max_size:
            log.warning("the cache disk is full at %d bytes (limit %d): evicting as if that "
                        "were the limit", total, self.max_size)  # fmt: skip
        if total > limit * HIGH_WATER:
            target = limit * LOW_WATER
            evicted = 0
            for item in oldest_files(self.store.objects, now, total - target):
                if total <= target:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.path)
                    total -= item.size
                    evicted += 1
            entries -= evicted
            if self.on_evict is not None:
                self.on_evict(evicted)
            log.info("evicted %d files, down to %d bytes (limit %d)", evicted, total,
                     self.max_size)  # fmt: skip
        # The state files are written after the eviction: a full disk has room for them now.
        self._scanned_marker.touch()
        self.store.usage.reset(total, entries)
        return total


def cache_gauges(store: Store, max_size: int) -> list[tuple[str, str, float]]:
    """The cache's size for the metrics, from the shared counters (usage.py): each worker
    folds its changes in every half second, and each scan sets them to what it found."""
    stored, files = store.usage.read_both()
    return [
        ("wsgi_proxy_cache_bytes", "Bytes stored in the cache", float(stored)),
        ("wsgi_proxy_cache_limit_bytes", "WSGI_PROXY_MAX_SIZE", float(max_size)),
        ("wsgi_proxy_cache_files", "Files stored: entries, variants and markers", float(files)),
    ]


def scan_objects(objects: Path, now: float) -> ScanResult:
    """The bytes and stored files under ``objects``, in memory that does not grow with
    them; dead writers' temporary files are removed."""
    total = entries = 0
    for _, size, _, evictable in _walk(objects, now):
        total += size
        entries += evictable
    return ScanResult(total, entries)


def oldest_files(objects: Path, now: float, excess: float) -> list[StoredFile]:
    """The least recently used stored files under ``objects`` that hold at least
    ``excess`` bytes between them (all of them if they hold less), oldest first. Memory
    grows with the files returned, not with the files stored: a heap keeps the oldest seen
    so far and lets go of the newest while the rest still hold ``excess``."""
    if excess <= 0:
        return []
    heap: list[tuple[float, int, str]] = []  # (-mtime, size, path): the newest on top
    held = 0
    for path, size, mtime, evictable in _walk(objects, now):
        if not evictable:
            continue
        heapq.heappush(heap, (-mtime, size, path))
        held += size
        while held - heap[0][1] >= excess:
            held -= heapq.heappop(heap)[1]
    return [StoredFile(path, size) for _, size, path in sorted(heap, reverse=True)]


def walk_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    """Every file under ``folder``, entries and writers' temporary files. Each folder is
    listed whole before its files are handed out, so that a file published meanwhile is
    not met twice; a folder that cannot be read is skipped."""
    folders = [str(folder)]
    while folders:
        try:
            with os.scandir(folders.pop()) as listing:
                items = list(listing)
        except OSError:
            continue
        for item in items:
            with contextlib.suppress(OSError):
                if item.is_dir(follow_symlinks=False):
                    folders.append(item.path)
                else:
                    yield item


def _walk(objects: Path, now: float) -> Iterator[tuple[str, int, float, bool]]:
    """Every file under ``objects``: path, size, mtime, and whether it is a stored file
    (else a live writer's temporary file). Dead writers' temporary files are removed."""
    for item in walk_files(objects):
        try:
            stat = item.stat(follow_symlinks=False)
        except OSError:
            continue
        if not item.name.startswith(TMP_PREFIX):
            yield item.path, stat.st_size, stat.st_mtime, True
        elif _is_dead_tmp(item.name, stat.st_mtime, now):
            with contextlib.suppress(OSError):
                os.unlink(item.path)
        else:
            yield item.path, stat.st_size, stat.st_mtime, False


def _is_dead_tmp(name: str, mtime: float, now: float) -> bool:
    """A temporary file is ``.tmp.<pid>.<token>``; it is dead when its writer is gone."""
    if now - mtime > STALE_TMP_AGE:
        return True
    try:
        pid = int(name[len(TMP_PREFIX) :].split(".", maxsplit=1)[0])
    except ValueError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # A killed writer may linger as a zombie where nobody reaps it: state Z is dead too.
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
