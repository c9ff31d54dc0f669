"""The files the cache manager evicts (manager.py), deleted on a few threads.

Why threads: an eviction is mostly the kernel's work (``unlink`` took 55 % of the
manager's samples in a profile under load), done without the GIL; and the scheduler shares
a CPU among threads, not processes. Beside two workers running many threads each, a manager
deleting on its one thread got about a tenth of a CPU under a stream of misses (it waited
to run 85 % of the time) and evicted about 700 files a second; its deleting threads each
get a share.

Invariants:
- A file is deleted only if its mtime (the LRU clock, cache.py) is not later than the one
  it was queued with; one used since is handed back, with its ``lstat``, to be queued again.
- A file already gone (removed through the store, whose journal record counts it out) or
  that cannot be deleted is handed back as such, never counted as deleted.
- Results come back in the order of the files given.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

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
    """``delete_unused`` over ``threads`` threads, started at the first large batch; one
    thread (the caller's) when ``threads`` is 1."""

    def __init__(self, objects_dir: str, threads: int = THREADS) -> None:
        self.objects_dir = objects_dir
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    def delete(self, files: list[tuple[str, int]]) -> list[Result]:
        if self.threads == 1 or len(files) < 2 * self.threads:
            return delete_unused(self.objects_dir, files)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="wsgi_proxy-evict")
        step = -(-len(files) // self.threads)
        runs = [files[i : i + step] for i in range(0, len(files), step)]
        parts = self._pool.map(delete_unused, [self.objects_dir] * len(runs), runs)
        return [result for part in parts for result in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
