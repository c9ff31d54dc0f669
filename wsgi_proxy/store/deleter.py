"""What the cache manager deletes (manager.py): the files it evicts, on a few threads
(``Deleter``), and cleared folders, file by file (``delete_folders``).

Why threads: an eviction is mostly the kernel's work (``unlink`` took 55 % of the
manager's samples in a profile under load), done without the GIL; and the scheduler shares
a CPU among threads, not processes. Beside two workers running many threads each, a manager
deleting on its one thread got about a tenth of a CPU under a stream of misses (it waited
to run 85 % of the time) and evicted about 700 files a second; its deleting threads each
get a share.

Two sets of threads: for eviction the workers wait for (the folder under what they store
up to), at their CPU priority, so that it keeps up with misses at full speed; and for
eviction nobody waits for (``background``: the workers have stopped storing, so the
folder can only shrink meanwhile), at the idle priority (``SCHED_IDLE``): they run only
on a CPU that would be idle otherwise, and a request's thread that wakes takes the CPU
from them at once. So a restart over a lower limit deletes half a million files without
moving the hits' p99 (on a saturated CPU it waits for a lull; the folder does not grow
meanwhile). A thread cannot be moved back from the idle priority without privileges
(``RLIMIT_NICE``): hence two sets, not one that changes.

Invariants:
- A file is deleted only if its mtime (the LRU clock, cache.py) is not later than the one
  it was queued with; one used since is handed back, with its ``lstat``, to be queued again.
- A file already gone (removed through the store, whose journal record counts it out) or
  that cannot be deleted is handed back as such, never counted as deleted.
- Results come back in the order of the files given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

from wsgi_proxy.store.entry_file import disk_bytes

log = logging.getLogger(__name__)

# Threads deleting at once in the cache manager's process.
THREADS = 4
# Files handed to the threads at once (each takes an equal run of them).
BATCH = 256


class Outcome(Enum):
    DELETED = "deleted"
    USED = "used since it was queued"
    GONE = "gone or not deletable"


Result = tuple[Outcome, os.stat_result | None]


def delete_unused(objects_dir: str, files: list[tuple[str, int]]) -> list[Result]:
    """Delete each of ``files`` (a path relative to ``objects_dir`` and the mtime, in
    seconds, it was queued with) unless used since: each one's outcome and ``lstat``."""
    results: list[Result] = []
    for rel, queued_mtime in files:
        path = os.path.join(objects_dir, rel)
        try:
            stat = os.lstat(path)
            if int(stat.st_mtime) > queued_mtime:
                results.append((Outcome.USED, stat))
                continue
            os.unlink(path)
        except FileNotFoundError:
            results.append((Outcome.GONE, None))
            continue
        except OSError as exc:
            log.warning("cannot evict %s: %s", path, exc)
            results.append((Outcome.GONE, None))
            continue
        results.append((Outcome.DELETED, stat))
    return results


class Deleter:
    """``delete_unused`` over ``threads`` threads, each set started at its first batch; one
    thread (the caller's, whatever ``background``) when ``threads`` is 1."""

    def __init__(self, objects_dir: str, threads: int = THREADS) -> None:
        self.objects_dir = objects_dir
        self.threads = max(1, threads)
        self._pools: dict[bool, ThreadPoolExecutor] = {}

    def delete(self, files: list[tuple[str, int]], *, background: bool = False) -> list[Result]:
        """Delete ``files`` as ``delete_unused`` does, at the idle priority if
        ``background``."""
        small = len(files) < 2 * self.threads and not background
        if self.threads == 1 or small or not files:
            return delete_unused(self.objects_dir, files)
        pool = self._pools.get(background)
        if pool is None:
            name = "wsgi_proxy-evict-idle" if background else "wsgi_proxy-evict"
            start = _at_idle_priority if background else None
            pool = ThreadPoolExecutor(self.threads, thread_name_prefix=name, initializer=start)
            self._pools[background] = pool
        step = -(-len(files) // self.threads)
        runs = [files[i : i + step] for i in range(0, len(files), step)]
        parts = pool.map(delete_unused, [self.objects_dir] * len(runs), runs)
        return [result for part in parts for result in part]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown()
        self._pools.clear()


def _at_idle_priority() -> None:
    """The calling thread to ``SCHED_IDLE`` (Linux); where that fails it stays as it was:
    slower for the requests, as correct."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as exc:
        log.debug("deleting threads at the workers' priority: %s", exc)


def delete_folders(folders: list[str]) -> Iterator[int]:
    """Delete ``folders`` (cleared objects folders), yielding the disk bytes freed by each
    file as it goes: names relative to an open folder, a ``stat`` and an ``unlink`` a
    file."""
    for top in folders:
        try:
            with os.scandir(top) as listing:
                subs = [(e.path, e.is_dir(follow_symlinks=False)) for e in listing]
        except OSError:
            subs = []
        for sub, is_dir in subs:
            if not is_dir:
                yield _unlinked(sub)
                continue
            try:
                fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                with os.scandir(fd) as listing:
                    names = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
                for name, inner_dir in names:
                    if inner_dir:  # a variants folder
                        shutil.rmtree(os.path.join(sub, name), ignore_errors=True)
                        yield 0
                        continue
                    try:
                        freed = disk_bytes(os.stat(name, dir_fd=fd, follow_symlinks=False))
                        os.unlink(name, dir_fd=fd)
                    except OSError:
                        continue
                    yield freed
            finally:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.rmdir(sub)
        shutil.rmtree(top, ignore_errors=True)


def _unlinked(path: str) -> int:
    try:
        freed = disk_bytes(os.lstat(path))
        os.unlink(path)
    except OSError:
        return 0
    return freed
