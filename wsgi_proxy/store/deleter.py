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
folder can only shrink meanwhile), one thread at the idle priority (``SCHED_IDLE``): it
runs only on a CPU that would be idle otherwise, and a request's thread that wakes takes
the CPU from it at once. So a restart over a lower limit deletes half a million files
without moving the hits' p99. On a CPU the requests keep busy the idle thread hardly
runs: what it has not started within ``IDLE_GRACE`` the caller's thread deletes, at its
own priority, so the folder still comes down, at one thread's pace; a task it was
preempted in is not waited for (its outcomes come with a later call). One idle thread,
not several: one preempted while it holds the GIL (between two system calls) holds up
the caller until it runs again. A thread cannot be moved back from the idle priority
without privileges (``RLIMIT_NICE``): hence two sets, not one that changes.

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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from enum import Enum

from wsgi_proxy.store.entry_file import disk_bytes

log = logging.getLogger(__name__)

# Threads deleting at once in the cache manager's process.
THREADS = 4
# Files handed to the threads at once (each takes an equal run of them).
BATCH = 256
# In the background: files a task, and how long the idle threads have to start them.
IDLE_CHUNK = 8
IDLE_GRACE = 0.05


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


File = tuple[str, int]  # a path relative to the objects folder, the mtime it was queued with
Done = tuple[File, Result]


class Deleter:
    """``delete_unused`` over ``threads`` threads, each set started at its first batch; one
    thread (the caller's, whatever ``background``) when ``threads`` is 1."""

    def __init__(self, objects_dir: str, threads: int = THREADS) -> None:
        self.objects_dir = objects_dir
        self.threads = max(1, threads)
        self._pools: dict[bool, ThreadPoolExecutor] = {}
        self._late: list[tuple[list[File], Future[list[Result]]]] = []

    def delete(self, files: list[File], *, background: bool = False) -> list[Done]:
        """Delete ``files`` as ``delete_unused`` does, at the idle priority if
        ``background``: each file with its outcome, in the order given, but for files an
        idle thread is still at, which come with a later call's (``pending``)."""
        done = self._finished_late()
        if self.threads == 1 or not files or (len(files) < 2 * self.threads and not background):
            return done + list(zip(files, delete_unused(self.objects_dir, files), strict=True))
        if background:
            return done + self._idly(self._pool(background), files)
        step = -(-len(files) // self.threads)
        runs = [files[i : i + step] for i in range(0, len(files), step)]
        parts = self._pool(background).map(delete_unused, [self.objects_dir] * len(runs), runs)
        return done + list(zip(files, [r for part in parts for r in part], strict=True))

    @property
    def pending(self) -> int:
        """Files handed to an idle thread whose outcome no call has given yet."""
        return sum(len(run) for run, _ in self._late)

    def _pool(self, background: bool) -> ThreadPoolExecutor:
        pool = self._pools.get(background)
        if pool is None:
            if background:  # one: it has the CPU only when nothing else wants it
                pool = ThreadPoolExecutor(1, "wsgi_proxy-evict-idle", _at_idle_priority)
            else:
                pool = ThreadPoolExecutor(self.threads, "wsgi_proxy-evict")
            self._pools[background] = pool
        return pool

    def _idly(self, pool: ThreadPoolExecutor, files: list[File]) -> list[Done]:
        """``files`` in tasks of ``IDLE_CHUNK`` for the idle thread; the tasks it did not
        start within ``IDLE_GRACE`` are cancelled and done on this thread; one it is still
        at is not waited for (a thread at the idle priority may wait seconds for a CPU):
        its outcomes come with a later call."""
        runs = [files[i : i + IDLE_CHUNK] for i in range(0, len(files), IDLE_CHUNK)]
        tasks = [pool.submit(delete_unused, self.objects_dir, run) for run in runs]
        wait(tasks, timeout=IDLE_GRACE)
        done: list[Done] = []
        for run, task in zip(runs, tasks, strict=True):
            if task.cancel():
                done += zip(run, delete_unused(self.objects_dir, run), strict=True)
            elif task.done():
                done += zip(run, task.result(), strict=True)
            else:
                self._late.append((run, task))
        return done

    def _finished_late(self) -> list[Done]:
        done: list[Done] = []
        for run, task in [late for late in self._late if late[1].done()]:
            self._late.remove((run, task))
            done += zip(run, task.result(), strict=True)
        return done

    def close(self) -> None:
        """Stop the threads, once the tasks they are at are done (their outcomes are not
        given: the manager counts those files until its next walk, too much, never too
        little)."""
        for pool in self._pools.values():
            pool.shutdown()
        self._pools.clear()
        self._late.clear()


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
