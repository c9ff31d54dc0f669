"""The cache manager: keeps the cache folder's disk use under ``WSGI_PROXY_MAX_SIZE`` and
does every scan of the folder, outside the request workers (as nginx's cache manager and
loader do). It runs in a process of its own that the gunicorn master starts and watches
(server/cache_manager.py), or, where the master runs without the proxy's hooks, in one
worker's thread at a time (eviction.py).

What it counts is what ``du`` counts: the allocated blocks of every file and folder the
cache keeps (entries, variants, markers, their folders, the state and lock files, the
journal, and a cleared folder until it is deleted).

How:
- A first scan (the loader) walks the folder once: it counts every file and folder and
  queues the stored files oldest first, by mtime (the LRU clock that hits refresh,
  cache.py). Dead writers' temporary files are removed on the way.
- Unless a clean stop left its index (``state/index``, manager_index.py): then the counts
  and the queue are read from it in a second or two, and the journal is read on from
  where that manager stopped, so a restart over a lower limit evicts at once. The index
  is deleted as it is read, used or not: from then on files are evicted without journal
  records, so a later start (after a crash) must walk. Files deleted by hand while the
  proxy was stopped are counted until the next walk (eviction skips them, and removes a
  little more than needed); files added by hand are not counted until then.
- From then on the workers' journal (journal.py) tells it what was added and removed: no
  scan. Every ``STEP`` it reads the journal; over the high-water mark it evicts from the
  queue's old end down to the low-water mark, deleting on a few threads (deleter.py). A
  file used since it was queued (its mtime moved) goes back to the young end instead: a
  second chance, so the queue stays close to least-recently-used order without being told
  of hits.
- What no record tells, the blocks the folders files are published in take on as they
  fill, is measured every ``FOLDERS_INTERVAL`` (256 ``stat`` calls).
- A disk that fills before the limit is seen by ``statvfs``: the limit is then the disk
  use at which ``RESERVE`` stays free. A write refused for want of room all the same (a
  response larger than that reserve) touches ``state/disk-full``: the manager then evicts
  down to ``FULL_WATER`` of what is stored, again at each refusal, until it fits.
- A cleared folder (``Store.clear``) is deleted here, in the background, and counted until
  it is gone.
- The ban lurker (lurker.py) runs here: the files that purges by prefix and tag (bans)
  cover are removed or marked in the background.
- A scan of the whole folder runs again every ``RESCAN_INTERVAL`` since the last one
  (across restarts from the index too), to correct drift (a writer killed between its
  publish and its journal record, files changed by hand); it waits while files are still
  to be evicted, since eviction waits while it runs.

Memory: one queue item per stored file, about 120 bytes (the path's digests as bytes, and
mtime and size packed in one int: lru_queue.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsgi_proxy.ops.metrics import EVICTIONS
from wsgi_proxy.store import journal, manager_index
from wsgi_proxy.store.atomic import replace_text
from wsgi_proxy.store.cache import DISK_FULL, TRASH_PREFIX, Store
from wsgi_proxy.store.deleter import BATCH, THREADS, Deleter, Done, Outcome, delete_folders
from wsgi_proxy.store.journal import Added, Cleared, Removed, disk_bytes
from wsgi_proxy.store.lru_queue import LruQueue, key_of, stamp
from wsgi_proxy.store.lurker import lurk
from wsgi_proxy.store.walk import files_size, tree_size, walk_counted

log = logging.getLogger(__name__)

STEP = 0.1
# Over this share of the limit the workers store nothing new (eviction.py, which imports
# this module).
PAUSE_ABOVE = 1.02
HIGH_WATER = 0.98
LOW_WATER = 0.96
# The whole folder is walked again this often, to correct drift; eviction waits meanwhile
# (some seconds at 1,000,000 files).
RESCAN_INTERVAL = 6 * 3600.0
# The state and lock folders are measured again this often (they change little).
OVERHEAD_INTERVAL = 60.0
# The folders files are published in are measured again this often (_measure_folders).
FOLDERS_INTERVAL = 1.0
# Free space the manager keeps on the cache's disk when it fills before the limit: this
# share of the disk, at most MAX_RESERVE.
RESERVE = 0.02
# A write refused for want of room (a disk that fills before the limit, or another
# program's files on it): the manager evicts down to this share of what is stored then.
FULL_WATER = 0.85
MAX_RESERVE = 256 << 20
# An eviction or a deletion of a cleared folder yields after this long, to read the journal.
BUDGET = 0.25
# The figures are written again this often even unchanged (what a worker reads stays true).
REPUBLISH_INTERVAL = 5.0
# Evictions are logged at most this often.
LOG_INTERVAL = 60.0
STATE_FILE = "manager.json"


@dataclass(frozen=True, slots=True)
class Usage:
    """What the manager counts, in disk bytes."""

    objects: int  # stored files and their folders
    files: int  # stored files: entries, variants, markers
    overhead: int  # state and lock files
    trash: int  # cleared folders not deleted yet

    @property
    def total(self) -> int:
        return self.objects + self.overhead + self.trash


def counted(usage: Usage, records: list[journal.Record]) -> Usage:
    """``usage`` with the journal's ``records`` applied."""
    objects, files, trash = usage.objects, usage.files, usage.trash
    for record in records:
        match record:
            case Added(path, added, replaced):
                objects += added - max(replaced, 0)
                if replaced < 0 and not path.endswith("/"):
                    files += 1
            case Removed(path, removed):
                objects = max(0, objects - removed)
                if not path.endswith("/"):
                    files = max(0, files - 1)
            case Cleared():
                trash += objects
                objects = files = 0
    return Usage(objects, files, usage.overhead, trash)


class CacheManager:
    """One cache folder's size keeper. ``step`` does one round; the caller loops."""

    def __init__(
        self,
        store: Store,
        max_size: int,
        *,
        metrics_dir: Path | None = None,
        on_purged: Callable[[str, int], None] | None = None,
        deleting_threads: int = THREADS,
        index_names: tuple[str, ...] = (manager_index.NAME,),
    ) -> None:
        self.store = store
        # The index files it may start from, the first one found first (manager_index.py).
        self.index_names = index_names
        self.on_purged = on_purged  # entries the ban lurker removed or marked, by kind
        self.max_size = max_size
        self.metrics_dir = metrics_dir
        self.objects_dir = str(store.objects)
        # Evicted files are deleted on a few threads (deleter.py).
        self.deleter = Deleter(self.objects_dir, deleting_threads)
        self.reader = journal.JournalReader(store.state)
        self.queue = LruQueue()
        self.objects = self.files = self.overhead = self.trash = 0
        self.evicted = 0
        self.loaded_at = 0.0  # the end of the last count, from the index or a walk
        self.load_seconds = 0.0
        self.loaded_from = ""  # "index" or "walk"
        self.walked_at = 0.0  # the last walk's, before a restart too
        self._overhead_at = 0.0
        self._locks = 0
        self._trash_files: Iterator[int] | None = None
        self._logged = -LOG_INTERVAL
        self._published_at = 0.0
        self._full_seen: int | None = None
        self._written: tuple[int, ...] = ()
        self._folder_sizes: dict[str, int] = {}  # objects/<xx>/ as last measured
        self._folders_at = 0.0

    @property
    def usage(self) -> Usage:
        return Usage(self.objects, self.files, self.overhead, self.trash)

    # ---- the loader ---------------------------------------------------------------------

    def load(self, now: float, *, from_index: bool = True) -> None:
        """The first count: from the index a clean stop left (``from_index``), else a walk
        of the whole folder. Either way the cleared folders and the state and lock files
        are measured anew."""
        started = time.monotonic()
        if not (from_index and self._load_index(now)):
            self._walk_folder(now)
        self.trash = sum(tree_size(path) for path in self._trash_folders())
        self._folder_sizes = {}
        self._measure_folders(now)  # as the walk or the index counted them
        self._overhead_at = 0.0
        self._measure_overhead(now)
        self.loaded_at = now
        self.load_seconds = time.monotonic() - started
        how = "walked" if self.loaded_from == "walk" else "read from state/index"
        log.info(
            "%d files, %d bytes on disk in %s (%s in %.1f s)",
            self.files, self.usage.total, self.store.root, how, self.load_seconds,
        )  # fmt: skip

    def _walk_folder(self, now: float) -> None:
        """Count the whole folder and queue its stored files, oldest first. Records appended
        while it walks are read after it: a file both walked and recorded counts twice until
        the next scan (too much, never too little)."""
        self.reader.skip_to_end()
        journal.remove_rotated(self.store.state)
        keys: list[bytes | str] = []
        stamps: list[int] = []
        objects = files = 0
        for rel, stat, is_file in walk_counted(self.objects_dir, now):
            size = disk_bytes(stat)
            objects += size
            if is_file:
                files += 1
                keys.append(key_of(rel))
                stamps.append(stamp(stat.st_mtime, size))
        # Oldest first, in memory close to the queue's own: no tuple per file.
        order = sorted(range(len(stamps)), key=stamps.__getitem__)
        queue = LruQueue()
        queue.keys.extend(keys[i] for i in order)
        queue.stamps.extend(stamps[i] for i in order)
        del keys, stamps, order
        self.queue, self.objects, self.files = queue, objects, files
        self.walked_at, self.loaded_from = now, "walk"

    def _load_index(self, now: float) -> bool:
        """Start from an index (manager_index.py; ``index_names``, the first one there),
        if it is still true of the folder: the journal is read on from where it stopped.
        Every index file found is deleted as it is read, used or not. False (and one line
        logged where there was an index) to walk instead."""
        chosen: manager_index.Index | None = None
        for path in (self.store.state / name for name in self.index_names):
            try:
                index = manager_index.consume(path)
                if index is None or chosen is not None:
                    continue
                stale = manager_index.stale_reason(index, self.store.objects, self.reader.path)
            except (OSError, manager_index.BadIndex) as exc:
                log.warning("%s not used (%s): walking the folder", path, exc)
                continue
            if stale is not None:
                log.warning("%s not used (%s): walking the folder", path, stale)
                continue
            chosen = index
        if chosen is None:
            return False
        journal.remove_rotated(self.store.state)  # what they held was read before the index
        self.reader.seek(*chosen.journal)
        self.queue, self.objects, self.files = chosen.queue, chosen.objects, chosen.files
        self.walked_at, self.loaded_from = min(chosen.walked, now), "index"
        return True

    def save_index(self, now: float) -> None:
        """At a clean stop: the journal read to its end, then the counts, the queue and the
        journal's position written to ``state/index`` for the next manager."""
        if not self.loaded_at:
            return  # stopped before its first count: nothing worth keeping
        started = time.monotonic()
        self._apply(self.reader.read(now, rotate=False))
        self._measure_folders(now)  # the index's count is the next manager's
        path = self.store.state / manager_index.NAME
        try:
            folder = os.stat(self.objects_dir)
            device, inode, offset = self.reader.position()
            index = manager_index.Index(
                self.objects, self.files, (device, inode, offset),
                (folder.st_dev, folder.st_ino), self.walked_at, now, self.queue,
            )  # fmt: skip
            size = manager_index.write(path, index)
            # The index counts while it exists: what stats says of a stopped server too.
            self._measure_overhead(now)
            self._publish(now)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
            return
        log.info("%d files written to %s (%d bytes) in %.2f s",
                 len(self.queue), path, size, time.monotonic() - started)  # fmt: skip

    # ---- one round ----------------------------------------------------------------------

    def step(self, now: float) -> bool:
        """One round; True when work is left for the next one (a cleared folder still
        there, or over the limit still)."""
        if not self.loaded_at:
            self.load(now)
        elif self._rescan_due(now):
            self.load(now, from_index=False)
        self._apply(self.reader.read(now))
        if self.deleter.pending:  # an idle thread's deletions from a round before
            self.evicted += self._count_out(self.deleter.delete([]))
        if now - self._folders_at >= FOLDERS_INTERVAL:
            self._measure_folders(now)
        deadline = time.monotonic() + BUDGET
        if self.trash:
            self._delete_trash(deadline)
        limit = self.limit()
        if self._disk_filled():
            # A write found no room: as much again as the old low-water mark frees.
            self._evict(self.usage.total * FULL_WATER, deadline, limit)
        if self.usage.total > limit * HIGH_WATER:
            self._evict(limit * LOW_WATER, deadline, limit)
        # The ban lurker, after the limit: removing what bans cover reclaims space too.
        lurking = self.store.bans.current().bans and lurk(self.store, self.on_purged)
        if lurking:
            self._apply(self.reader.read(now))  # what it removed, through the store
        self._measure_overhead(now)
        self._publish(now)  # its own files count from the next round
        return bool(self.trash or lurking) or self.usage.total > limit * HIGH_WATER

    def _rescan_due(self, now: float) -> bool:
        """``RESCAN_INTERVAL`` since the last walk (before a restart too, through the
        index), and not while files are still to be evicted: eviction waits during a walk,
        and a restart from the index over a lower limit must come down first."""
        if now - self.walked_at <= RESCAN_INTERVAL:
            return False
        return not (len(self.queue) and self.usage.total > self.limit() * HIGH_WATER)

    def _disk_filled(self) -> bool:
        """Has a write been refused for want of room since the last round (``DISK_FULL``'s
        mtime moved)?"""
        try:
            mtime = os.stat(self.store.state / DISK_FULL).st_mtime_ns
        except OSError:
            return False
        seen, self._full_seen = self._full_seen, mtime
        return seen is not None and mtime != seen

    def limit(self) -> int:
        """``max_size``, or less when the disk would fill first (``RESERVE`` kept free)."""
        try:
            fs = os.statvfs(self.objects_dir)
        except OSError:
            return self.max_size
        reserve = min(fs.f_blocks * fs.f_frsize * RESERVE, MAX_RESERVE)
        free = fs.f_bavail * fs.f_frsize
        if free >= reserve:
            return self.max_size
        return int(min(self.max_size, max(0, self.usage.total - (reserve - free))))

    def _apply(self, records: list[journal.Record]) -> None:
        usage = counted(self.usage, records)
        self.objects, self.files, self.trash = usage.objects, usage.files, usage.trash
        now = time.time()
        for record in records:
            match record:
                case Added(path, added, _) if not path.endswith("/"):
                    self.queue.append(path, now, added)
                case Cleared():
                    self.queue.clear()
                    self._folder_sizes = {}  # gone with the folder; a new one's are recorded
                case _:
                    pass

    def _measure_folders(self, now: float) -> None:
        """Count in ``objects`` how much each folder files are published in
        (``objects/<xx>/``) grew or shrank since it was last measured. A publish records a
        folder it makes at its size then (cache.py), but a folder takes on blocks as names
        are added to it, and ext4 gives them back only with the folder: at 1,000,000 entries,
        256 folders of about 300 KiB each, 7 % of a 1 GiB limit, which no record told (at
        100,000 entries, du measured 1.07 times the limit after ten minutes of misses, the
        manager's count under it). A folder not seen before is only noted: the walk, the
        index or its journal record counted it.
        Variants folders (a few names each) are not measured."""
        self._folders_at = now
        sizes: dict[str, int] = {}
        grown = 0
        with contextlib.suppress(OSError), os.scandir(self.objects_dir) as listing:
            for item in listing:
                with contextlib.suppress(OSError):
                    if item.is_dir(follow_symlinks=False):
                        size = disk_bytes(item.stat(follow_symlinks=False))
                        sizes[item.name] = size
                        grown += size - self._folder_sizes.get(item.name, size)
        self._folder_sizes = sizes
        self.objects = max(0, self.objects + grown)

    def _evict(self, target: float, deadline: float, limit: int) -> None:
        """Evict down to ``target`` (or until ``deadline``). Over ``PAUSE_ABOVE`` of a
        ``limit`` the disk's room does not lower (``unwaited``), the files go to the idle
        priority thread first (deleter.py): the workers have stopped storing (eviction.py),
        so nothing waits for it, and the count can only be too high while it works. That
        count is published first: the workers see it within half a second, even if the
        round is held up (an idle thread preempted while it holds the GIL)."""
        evicted = 0
        queue = self.queue
        told = False
        while self.usage.total > target and len(queue) and time.monotonic() < deadline:
            files = queue.take(int(self.usage.total - target), BATCH)
            background = unwaited(self.usage.total, limit, self.max_size)
            if background and not told:
                self._publish(time.time())
                told = True
            evicted += self._count_out(self.deleter.delete(files, background=background))
        if evicted:
            self.evicted += evicted
            if time.monotonic() - self._logged > LOG_INTERVAL:  # not ten lines a second
                self._logged = time.monotonic()
                log.info("%d files evicted in all, down to %d bytes (limit %d)",
                         self.evicted, self.usage.total, self.max_size)  # fmt: skip

    def _count_out(self, done: list[Done]) -> int:
        """Count out the files deleted, queue again those used since: the files deleted."""
        evicted = 0
        for (rel, _), (outcome, stat) in done:
            if stat is None or outcome is Outcome.GONE:
                continue  # removed since (counted out by its record), or refused
            if outcome is Outcome.USED:
                self.queue.append(rel, stat.st_mtime, disk_bytes(stat))  # a second chance
                continue
            self.objects = max(0, self.objects - disk_bytes(stat))
            self.files = max(0, self.files - 1)
            evicted += 1
            self._remove_empty_variants_folder(os.path.dirname(rel))
        return evicted

    def _remove_empty_variants_folder(self, rel_folder: str) -> None:
        if not rel_folder.endswith(".d"):
            return
        folder = os.path.join(self.objects_dir, rel_folder)
        with contextlib.suppress(OSError):
            size = disk_bytes(os.lstat(folder))
            os.rmdir(folder)  # only if empty
            self.objects = max(0, self.objects - size)

    # ---- cleared folders ----------------------------------------------------------------

    def _trash_folders(self) -> list[str]:
        with contextlib.suppress(OSError), os.scandir(self.store.root) as listing:
            return [e.path for e in listing if e.name.startswith(TRASH_PREFIX)]
        return []

    def _delete_trash(self, deadline: float) -> None:
        """Delete cleared folders file by file, within the time budget, where the last
        round left off."""
        if self._trash_files is None:
            self._trash_files = delete_folders(self._trash_folders())
        for freed in self._trash_files:
            self.trash = max(0, self.trash - freed)
            if time.monotonic() > deadline:
                return
        self._trash_files = None
        if not self._trash_folders():
            self.trash = 0

    # ---- what it tells others -----------------------------------------------------------

    def _measure_overhead(self, now: float) -> None:
        """The state files, every round (a few); the lock files (up to one per stripe) and
        the folders themselves, every ``OVERHEAD_INTERVAL``."""
        root = self.store.root
        if now - self._overhead_at > OVERHEAD_INTERVAL:
            self._overhead_at = now
            locks = 0
            for folder in (root, root / "state", root / "locks", self.store.objects):
                with contextlib.suppress(OSError):
                    locks += disk_bytes(os.lstat(folder))
            self._locks = locks + files_size(root / "locks")
        self.overhead = self._locks + files_size(root / "state")

    def _publish(self, now: float) -> None:
        """The totals, for the workers' metrics and the CLI: ``state/usage`` (bytes and
        files) and ``state/manager.json``; written when they change, and every
        ``REPUBLISH_INTERVAL``."""
        usage = self.usage
        figures = (usage.total, usage.files, usage.trash, self.evicted)
        if figures == self._written and now - self._published_at < REPUBLISH_INTERVAL:
            return
        self._published_at = now
        self.store.usage.reset(usage.total, usage.files)
        state = {
            "pid": os.getpid(),
            "updated": now,
            "loaded": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
            "loaded_from": self.loaded_from,
            "walked": self.walked_at,
            "limit": self.max_size,
            "bytes": usage.total,
            "objects_bytes": usage.objects,
            "overhead_bytes": usage.overhead,
            "trash_bytes": usage.trash,
            "files": usage.files,
            "queued": len(self.queue),
            "evicted": self.evicted,
            "journal": self.reader.position(),
        }
        replace_text(self.store.state / STATE_FILE, json.dumps(state))
        if self.metrics_dir is not None and self.evicted != (self._written or (0,) * 4)[3]:
            with contextlib.suppress(OSError):
                replace_text(self.metrics_dir / EVICTIONS, str(self.evicted))
        self._written = figures


def unwaited(total: int, limit: int, max_size: int) -> bool:
    """Does nobody wait for eviction at ``total`` disk bytes (the idle priority will do)?
    Yes over ``PAUSE_ABOVE`` of the ``limit``, where the workers store nothing new, unless
    the disk's own room lowered the limit under ``max_size``: a disk filling up waits."""
    return limit == max_size and total > limit * PAUSE_ABOVE


def read_state(store: Store) -> dict[str, Any] | None:
    """What the manager last published (``_publish``), or None."""
    try:
        data = json.loads((store.state / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def current_usage(store: Store, state: dict[str, Any]) -> Usage:
    """The manager's last figures with what the journal recorded since it read it."""
    usage = Usage(
        int(state.get("objects_bytes", 0)),
        int(state.get("files", 0)),
        int(state.get("overhead_bytes", 0)),
        int(state.get("trash_bytes", 0)),
    )
    reader = journal.JournalReader(store.state)
    position = state.get("journal")
    if isinstance(position, list) and len(position) == 3:
        reader.seek(int(position[0]), int(position[1]), int(position[2]))
        return counted(usage, reader.read(time.time(), rotate=False))
    return usage
