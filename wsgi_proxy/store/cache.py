"""The filesystem cache shared by every worker: lookup, publishing, removal, locks.

The folder's layout (versioned by the ``v1`` folder and each entry's magic), the entry
format and the state files: docs/cache-format.md. Entries live under ``v1/objects/``, a
response's variants (Vary) in a ``.d`` folder beside its primary file.

Invariants:
- An entry is one file, written and published whole (entry_file.py); readers take no lock.
- The header records the body's length and CRC-32; a reader checks the length against the
  file size on every open, and each worker checks a body's CRC-32 once. A file that fails
  the checks is removed and treated as a miss.
- Lock files are a bounded set and are never deleted: unlinking a held lock file would break
  mutual exclusion.
- Every disk error is contained here: the cache degrades to pass-through, never to an error
  for the client. A disk that fills before the size limit is the cache manager's to see
  (manager.py): it keeps some of the disk free.
- A disk failure a request can meet again on every request is logged once a minute at
  most per kind, with the count since (ops/rare_logs.py); the first of each kind at once,
  with its file and cause: an entry the disk refuses to start (read only, full: every
  miss), an entry file that cannot be opened (every request for it), a file that cannot be
  removed, and a corrupt entry left in place (a read-only disk: every request for it finds
  it corrupt again). A corrupt entry removed is logged each time: it is found only once.
  The first write and the first removal that work after failures are logged too. The
  metrics count every refused write and failed open.
- What the store adds to the folder and removes from it is appended to the journal
  (journal.py), from which the cache manager counts the folder's disk use.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from wsgi_proxy.core import keys
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.headers import Headers
from wsgi_proxy.core.model import Entry
from wsgi_proxy.ops.rare_logs import RareLog
from wsgi_proxy.store import journal
from wsgi_proxy.store.bans import BanList, Bans
from wsgi_proxy.store.entry_file import (
    TMP_PREFIX,
    CorruptEntry,
    EntryWriter,
    Published,
    disk_bytes,
    entry_of,
    keeps_fine_timestamps,
    meta_of,
    read_header,
)
from wsgi_proxy.store.fetch_locks import FetchLease, KeyLock, key_lock, try_lease
from wsgi_proxy.store.hits import CheckedBodies, Hit, PassMarker, identity_of
from wsgi_proxy.store.hot_set import HotSet, Remembered, Stamp, stamp_of
from wsgi_proxy.store.open_files import OpenFile, OpenFiles
from wsgi_proxy.store.pending_entry import PendingEntry
from wsgi_proxy.store.repeats import RecentLookups
from wsgi_proxy.store.site_list import SiteList
from wsgi_proxy.store.usage import UsageCounter

log = logging.getLogger(__name__)
# Failures that can come once a request, each kind a line a minute at most: entries the
# disk refused to start ("write"), files it would not open ("read") or remove ("remove"),
# corrupt entries left in place ("corrupt").
_failures = RareLog(log)

# Touched by a write refused for want of room: the cache manager's signal (manager.py).
DISK_FULL = "disk-full"
# A cleared objects folder, renamed, until the cache manager has deleted it.
TRASH_PREFIX = "trash."

# A hit refreshes the file's mtime (the LRU clock) at most this often, to spare a syscall
# (the default of WSGI_PROXY_TOUCH_INTERVAL).
TOUCH_INTERVAL = 60.0
# Small entries each worker remembers (hot_set.py): each holds its file's first read (8 KiB)
# and its decoded header (shared with entry_file's memo of decoded headers).
HOT_ENTRIES = 4096
# The layout's version: everything the store writes is under <cache dir>/v1.
FORMAT = "v1"


class Store:
    """The cache folder. Create it in each worker after the fork; it opens no file until
    used."""

    def __init__(
        self,
        root: Path,
        *,
        lock_stripes: int,
        max_variants: int,
        touch_interval: float = TOUCH_INTERVAL,
    ) -> None:
        self.root = root / FORMAT
        self.objects = self.root / "objects"
        self.locks = self.root / "locks"
        self.state = state_folder(root)
        self.lock_stripes = lock_stripes
        self.max_variants = max_variants
        # The memos (hot set, ready answers, held files) are trusted only while the file's
        # touch is not due: a due touch goes through the file itself.
        self.touch_interval = touch_interval
        self.usage = UsageCounter(self.state)
        self.sites = SiteList(self.state)
        self.bans = Bans(self.state)  # purges by prefix and tag, applied at lookup (bans.py)
        # Set by the worker's upkeep thread (eviction.py) while the folder is over its limit
        # by more than the cache manager's margin: responses pass through, not stored.
        self.over_limit = False
        # Told of each failed read or write ("read", "write"): the metrics (wiring.py).
        self.on_error: Callable[[str], None] = _ignore
        self._objects = str(self.objects)
        self._locks = str(self.locks)
        self.checked = CheckedBodies()
        self.hot = HotSet(0)  # off until prepare() finds fine-grained timestamps
        # The memos take an entry from its second lookup in a while (repeats.py).
        self.recent = RecentLookups(HOT_ENTRIES)
        self.open_files = OpenFiles(touch_interval)
        self.fine_timestamps = False

    def prepare(self) -> None:
        """Create the folders, the cache folder's own included (mode 0700); raise OSError
        if the folder cannot be used."""
        for folder in (self.root.parent, self.objects, self.locks, self.state):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made while there is room; not touched
            os.close(os.open(self.state / DISK_FULL, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.sites.start(self.objects)
        # Probed where entries are published: objects/ may be another mount than state/.
        kept = keeps_fine_timestamps(self.objects)
        # The memos of small entries and ready answers tell files apart by inode and mtime,
        # which each publish sets to the nanosecond (entry_file.py). Where the filesystem
        # keeps coarser times, a file published into a reused inode could pass for the one
        # it replaced: they stay off.
        self.fine_timestamps = kept
        if kept:
            self.hot = HotSet(HOT_ENTRIES)
            self.open_files = OpenFiles(self.touch_interval)

    def lose_fine_timestamps(self, exc: OSError) -> None:
        """A publish could not set its nanosecond mtime: this worker's memos go off."""
        if self.fine_timestamps:
            log.warning("cannot set nanosecond mtimes in %s (%s): memos off", self.objects, exc)
        self.fine_timestamps = False
        self.hot = HotSet(0)
        self.open_files = OpenFiles(self.touch_interval, max_files=0)  # let go of any held

    def note_write_error(self, exc: OSError) -> None:
        """A write to the cache failed (the caller logs it and passes through). When for
        want of room, the cache manager is told through the mtime of ``state/disk-full``
        (which takes no room to change): it then makes room (manager.py)."""
        self.on_error("write")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            with contextlib.suppress(OSError):
                os.utime(self.state / DISK_FULL)

    def primary_path(self, primary: str) -> Path:
        return Path(self._primary_location(primary))

    def _primary_location(self, primary: str) -> str:
        digest = keys.digest(primary)
        return os.path.join(self._objects, digest[:2], digest)

    # ---- reading ------------------------------------------------------------------------

    def lookup(self, primary: str, request_headers: Headers, now: float) -> Hit | PassMarker | None:
        """The stored response for ``primary`` whose Vary matches the request; a banned one
        (bans.py) is a miss, or, banned soft, marked soft-purged."""
        bans = self.bans.current()  # before the read: a ban added meanwhile moves it
        path = self._primary_location(primary)
        opened = self._open(path, primary, now)
        if opened is None:
            return None
        meta, file, offset, stamp, early, again = opened
        kind = meta.get("kind")
        if kind == "response":
            return _unbanned(Hit(entry_of(meta), path, file, offset, int(meta["body_crc"], 16),
                                 stamp, early, bans.generation, again), meta, bans)  # fmt: skip
        if file is not None:
            file.close()
        if kind == "pass":
            until = float(meta["until"])
            return PassMarker(until) if until > now else None
        names = tuple(meta["names"])
        values = keys.vary_values(names, request_headers)
        variant_path = os.path.join(f"{path}.d", keys.variant_digest(values))
        opened = self._open(variant_path, primary, now)
        if opened is None:
            return None
        meta, file, offset, stamp, early, again = opened
        entry = entry_of(meta)
        if entry.vary != values:
            if file is not None:
                file.close()
            return None
        crc = int(meta["body_crc"], 16)
        return _unbanned(Hit(entry, variant_path, file, offset, crc, stamp, early,
                             bans.generation, again), meta, bans)  # fmt: skip

    def _open(
        self, path: str, primary: str, now: float
    ) -> tuple[dict[str, Any], BinaryIO | None, int, Stamp, bytes, bool] | None:
        """The header of the entry at ``path``, the file open at no particular position
        (None when the hot set had it whole), where the body begins, the file's stamp, the
        body bytes read with the header, and whether it was looked up lately (repeats.py:
        only then do the memos take it)."""
        hot = self.hot.get(path)
        if hot is not None:
            remembered, stat = hot
            # An LRU touch that is due goes through the file itself, opened below.
            due = now - stat.st_mtime > self.touch_interval
            if remembered.meta.get("key") == primary and not due:
                meta, offset = remembered.meta, remembered.body_offset
                return meta, None, offset, remembered.stamp, remembered.early, True
        again = self.recent.again(path)  # a miss counts: its fill is often hit next
        try:
            file: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 - handed to the caller
        except FileNotFoundError:
            return None
        except OSError as exc:
            # No recovery line: another file opening says nothing of this one (EACCES on
            # it, a bad sector), and this one is only tried again by a request for it.
            _failures.warning("read", "cache read failed for %s: %s", path, exc)
            self.on_error("read")
            return None
        try:
            meta, offset, early = read_header(file, remember=again)
            if meta.get("key") != primary:
                raise CorruptEntry("key mismatch")
            stat = os.fstat(file.fileno())
            if stat.st_size != offset + int(meta.get("body_length", "0")):
                raise CorruptEntry("length mismatch")
        except (CorruptEntry, OSError, ValueError, KeyError, TypeError) as exc:
            file.close()
            self._drop_corrupt(path, exc)
            return None
        stat = _touched(file, stat, now, self.touch_interval)
        if again and self._is_worth_remembering(meta, stat, early):
            self.hot.add(path, Remembered(stamp_of(stat), meta, offset, early))
        return meta, file, offset, stamp_of(stat), early, again

    def _drop_corrupt(self, path: str, exc: Exception) -> None:
        """Remove the corrupt entry at ``path``, logged with ``exc``, its fault."""
        if self.remove(Path(path)):  # gone, so found once: each is told
            log.warning("removed corrupt cache entry %s: %s", path, exc)
        else:  # found again by every request for it: a line a minute at most
            # No recovery line of its own: once the disk allows, the next request for it
            # removes it, and that is told (above).
            _failures.warning("corrupt", "corrupt cache entry %s left in place (%s): "
                              "each request for it passes through", path, exc)  # fmt: skip

    def _is_worth_remembering(
        self, meta: dict[str, Any], stat: os.stat_result, early: bytes
    ) -> bool:
        """Markers; responses whose whole body came with the header, once checked."""
        if meta.get("kind") != "response":
            return True
        length = int(meta["body_length"])
        checked = self.checked.is_checked(identity_of(stat), int(meta["body_crc"], 16))
        return len(early) >= length and checked

    def is_unchanged(self, location: str, stamp: Stamp, now: float) -> bool:
        """Is the file at ``location`` still the one ``stamp`` was taken of, its LRU touch
        not yet due? One ``stat``; a file gone or replaced is no error, just False."""
        try:
            stat = os.stat(location)
        except OSError:
            return False
        return stamp_of(stat) == stamp and now - stat.st_mtime <= self.touch_interval

    def hold_unchanged(self, location: str, stamp: Stamp, now: float) -> OpenFile | None:
        """``is_unchanged``, for a body about to be sent from the file: that file, open
        (held by this worker, open_files.py), or None."""
        if not self.is_unchanged(location, stamp, now):
            self.open_files.forget(location)
            return None
        return self.open_files.get(location, stamp)

    def is_verified(self, hit: Hit) -> bool:
        return self.checked.is_checked(hit.identity, hit.body_crc)

    def verify(self, hit: Hit, body: bytes | None = None) -> bool:
        """Does ``hit``'s body match the CRC-32 its header records (hits.py)? ``body`` is the
        whole body if the caller read it already. A mismatch (a machine crash can leave a
        published file with zeros: entries are not fsynced) removes the file."""
        try:
            matches = self.checked.check(hit, body)
        except OSError as exc:
            log.warning("cannot check cache entry %s: %s", hit.location, exc)
            return False
        if not matches:
            self._drop_mismatch(hit)
        return matches

    def settle(self, hit: Hit, crc: int) -> bool:
        """``verify`` for a CRC-32 a reader computed over the whole body as it sent it."""
        matches = self.checked.settle(hit, crc)
        if not matches:
            self._drop_mismatch(hit)
        return matches

    def _drop_mismatch(self, hit: Hit) -> None:
        log.warning("removing cache entry %s: body checksum mismatch", hit.location)
        self.remove_if_same(hit)

    def verify_later(self, hit: Hit) -> None:
        """``verify`` on a file of its own (for a background thread): ``hit``'s file is
        being sent to the client meanwhile."""
        try:
            file: BinaryIO = open(hit.location, "rb", buffering=0)  # noqa: SIM115
        except OSError:
            return
        with file:
            if identity_of(os.fstat(file.fileno())) == hit.identity:
                self.verify(replace(hit, file=file))

    # ---- writing ------------------------------------------------------------------------

    def begin(
        self, entry: Entry, *, expected_length: int | None, max_body: int
    ) -> PendingEntry | None:
        """A writer for ``entry``'s body, or None when the disk refuses (logged) or the
        folder is over its limit (``over_limit``). A response that varies goes to its
        variant's file, selected by ``entry.vary``. Its site is listed as it is published
        (site_list.py), so that purges by path find it."""
        if self.over_limit:
            return None  # the cache manager is behind: nothing new until it made room
        path = self.primary_path(entry.key)
        if entry.vary:
            path = _variants_dir(path) / keys.variant_digest(entry.vary)
        meta = meta_of(entry)
        return self._begin(path, meta, expected_length, max_body, "passing through")

    def publish_marker(self, primary: str, meta: dict[str, Any]) -> None:
        """Publish a Vary or pass marker (a header-only entry) at the primary path."""
        writer = self.begin_raw(self.primary_path(primary), {"key": primary, **meta})
        if writer is not None:
            writer.commit()

    def begin_raw(self, path: Path, meta: dict[str, Any]) -> PendingEntry | None:
        return self._begin(path, meta, None, 0, "not stored")

    def _begin(
        self, path: Path, meta: dict[str, Any], expected: int | None, max_body: int, then: str
    ) -> PendingEntry | None:
        """The writer of an entry (``begin``, ``begin_raw``), or None when the disk refuses:
        logged, ``then`` saying what becomes of the response."""
        try:
            pending = PendingEntry(self, EntryWriter(path, meta, expected, max_body))
        except OSError as exc:
            _failures.warning("write", "cannot write to the cache (%s): %s", exc, then)
            self.note_write_error(exc)
            return None
        _failures.recovered("write", "cache writes work again")
        return pending

    def record(self, published: Published) -> None:
        """Account for an entry just published (the journal), then keep its markers."""
        rel = self._relative(published.path)
        if published.folder_bytes:
            journal.note_added(self.state, os.path.dirname(rel) + "/", published.folder_bytes, -1)
        journal.note_added(self.state, rel, published.disk_bytes, published.replaced_bytes)
        self.after_publish(published.path, published.meta)

    def _relative(self, path: Path | str) -> str:
        return os.path.relpath(path, self._objects)

    def after_publish(self, path: Path, entry_meta: dict[str, Any]) -> None:
        """Keep the folder consistent after ``path`` was published: a Vary marker for a
        variant (capped at ``max_variants``), no stale variants beside a plain entry."""
        primary_path = self.primary_path(entry_meta["key"])
        if path == primary_path:
            variants = _variants_dir(path)
            if entry_meta.get("kind") == "response" and variants.is_dir():
                self._remove_tree(variants)
            return
        names = [n for n, _ in entry_meta["vary"]]
        self.publish_marker(entry_meta["key"], {"kind": "vary", "names": names})
        self._cap_variants(path.parent)

    def _cap_variants(self, folder: Path) -> None:
        try:
            files = [e for e in os.scandir(folder) if not e.name.startswith(TMP_PREFIX)]
            if len(files) <= self.max_variants:
                return
            files.sort(key=lambda e: e.stat().st_mtime)
            for extra in files[: len(files) - self.max_variants]:
                self.remove(Path(extra.path))
        except OSError as exc:
            log.warning("variant cap failed in %s: %s", folder, exc)

    def refresh(self, hit: Hit, entry: Entry) -> None:
        """Publish ``hit``'s body under the updated header of ``entry`` (after a 304)."""
        writer = self.begin_raw(hit.path, meta_of(entry))
        if writer is None:
            return
        try:
            if hit.file is None:  # from the hot set: the body is whole in early, checked
                writer.writer.max_body = hit.entry.body_length
                writer.write(hit.early[: hit.entry.body_length])
            else:
                src = hit.file.fileno()
                writer.copy_from(src, hit.body_offset, hit.entry.body_length, hit.body_crc)
                hit.file.seek(hit.body_offset)
        except OSError as exc:
            log.warning("cache refresh failed for %s: %s", hit.path, exc)
            self.note_write_error(exc)
            writer.abort()
            return
        writer.commit()

    # ---- removal ------------------------------------------------------------------------

    def invalidate(self, primary: str) -> None:
        """Remove the stored responses for ``primary``, every variant included."""
        path = self.primary_path(primary)
        self.remove(path)
        variants = _variants_dir(path)
        if variants.is_dir():
            self._remove_tree(variants)

    def clear(self) -> Path:
        """Empty the cache while workers serve: the objects folder is swapped for an empty
        one in one rename; open files stay readable; in-flight writes fail to publish. The
        list of sites starts anew first: a response published meanwhile is either listed
        anew or swept away with the old folder (site_list.py). The old folder, returned, is
        the cache manager's to delete (manager.py), in the background."""
        self.prepare()
        self.sites.reset()
        trash = self.root / f"{TRASH_PREFIX}{secrets.token_hex(6)}"
        journal.note_cleared(self.state)  # before the swap: what is published meanwhile
        os.rename(self.objects, trash)  # counts, and too much is never too little
        self.objects.mkdir(mode=0o700)
        return trash

    def remove_if_same(self, hit: Hit) -> None:
        """Remove ``hit``'s file unless another entry was published there since."""
        with contextlib.suppress(OSError):
            if identity_of(os.stat(hit.location)) == hit.identity:
                self.remove(Path(hit.location))

    def remove(self, path: Path) -> bool:
        """Remove the file at ``path``, if there, and record it in the journal; False when
        the disk refused (read only): the file stays."""
        try:
            size = disk_bytes(path.stat())
            path.unlink()
        except FileNotFoundError:
            return True
        except OSError as exc:  # every purge or invalidation of it fails alike
            _failures.warning("remove", "cannot remove %s: %s", path, exc)
            return False
        _failures.recovered("remove", "cache files can be removed again")
        journal.note_removed(self.state, self._relative(path), size)
        return True

    def _remove_tree(self, folder: Path) -> None:
        with contextlib.suppress(OSError):
            for item in os.scandir(folder):
                self.remove(Path(item.path))
            size = disk_bytes(folder.stat())
            folder.rmdir()
            journal.note_removed(self.state, self._relative(folder) + "/", size)

    # ---- locks --------------------------------------------------------------------------

    def key_lock(self, primary: str, timeout: float) -> KeyLock:
        """The lock stripe for ``primary`` (shared with its variants), marked with its
        digest while held (fetch_locks.py)."""
        digest = keys.digest(primary)
        stripe = int(digest[:8], 16) % self.lock_stripes
        return key_lock(os.path.join(self._locks, f"{stripe}.lock"), digest, timeout)

    def try_lease(self, primary: str) -> FetchLease | None:
        """The fetch lock for ``primary`` if it is free now, held by the lease returned;
        None when another fetch holds it (or it cannot be taken: go on without it)."""
        return try_lease(self.key_lock(primary, 0))


def state_folder(cache_dir: Path) -> Path:
    """Where the store under ``cache_dir`` keeps its state files (journal, usage, bans,
    the manager's index), without building the store."""
    return cache_dir / FORMAT / "state"


# The folders check_folder found usable in this process, or in the one it was forked
# from: a gunicorn master checks at start-up, and its workers inherit the answer.
_found_usable: set[Path] = set()


def check_folder(cache_dir: Path) -> None:
    """Create and probe the cache folder; a ``ConfigError`` naming it if it is unusable."""
    try:
        Store(cache_dir, lock_stripes=1, max_variants=1).prepare()
    except OSError as exc:
        raise ConfigError(
            "WSGI_PROXY_CACHE_DIR", f"cannot use {cache_dir}: {exc.strerror or exc}"
        ) from None
    _found_usable.add(cache_dir)


def check_folder_once(cache_dir: Path) -> None:
    """``check_folder``, unless this process or its parent already found the folder
    usable. A worker forked after the master's check must not fail its boot over a
    folder that broke since (read only, full): gunicorn would stop the whole server.
    It passes through instead, as the workers already running do (wiring.create_app)."""
    if cache_dir not in _found_usable:
        check_folder(cache_dir)


def _ignore(op: str) -> None:
    pass


def _unbanned(hit: Hit, meta: dict[str, Any], bans: BanList) -> Hit | None:
    """``hit`` unless a ban covers it: None (a miss) for a hard ban, marked soft-purged
    for a soft one; the file stays for the lurker, which counts what it removes."""
    ban = bans.verdict(meta) if bans.bans else None
    if ban is None:
        return hit
    if not ban.soft:
        hit.close()
        return None
    return replace(hit, entry=replace(hit.entry, soft_purged=True))


def _variants_dir(primary_path: Path) -> Path:
    return primary_path.with_name(primary_path.name + ".d")


def _touched(file: BinaryIO, stat: os.stat_result, now: float, interval: float) -> os.stat_result:
    """The open file's ``stat`` after refreshing its mtime (the LRU clock) if that is over
    ``interval`` old; ``stat`` itself when it is not, or when the disk refuses."""
    if now - stat.st_mtime <= interval:
        return stat
    try:
        os.utime(file.fileno())
        return os.fstat(file.fileno())
    except OSError:
        return stat
