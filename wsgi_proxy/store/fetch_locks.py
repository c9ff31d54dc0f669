"""The per-URL fetch locks: file locks shared by every worker, striped over a bounded set of
files, each naming the URL it is held for.

Invariants:
- A lock file is never deleted (unlinking a held lock file would break mutual exclusion), so
  URLs share a bounded set of files (``WSGI_PROXY_LOCK_STRIPES``); two URLs can hash to one.
- While a lock is held, its file holds the digest of the URL it is held for; it is written
  on acquisition and emptied before release. A request that finds the lock taken reads the
  file: a different URL's digest means the fetch under way is not its own, so it does not
  wait for it. An empty file (just taken, not yet marked) counts as its own: when unsure,
  wait, as a plain lock would.
- A process that dies holding a lock loses it (flock), and its mark is overwritten by the
  next holder; a stale mark only ever lets a request skip a wait it did not need.
- Within a worker, one thread polls a URL's lock for all the threads waiting on its fetch.
- A held fetch lock is a ``FetchLease`` (made by ``try_lease``, or ``Store.try_lease``),
  and a lease has one owner at a time, which gives it back: the request's ``Exchange``
  (request/exchange.py), the ``StreamingBody`` it hands the lease to when a body streams
  into the cache, or the ``with`` block of a background refresh (flow/filling.py). Its
  ``release`` is idempotent. Nothing else releases a fetch lock; a lease dropped unreleased
  is still let go by filelock when its lock is garbage-collected, but that is a safety net,
  not the rule.
- A lock the disk refuses (read only, no file descriptors left) is logged once a minute at
  most, with the count since (ops/rare_logs.py): on a read-only disk every miss fails it.
  Its first success after that is logged too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from filelock import FileLock, Timeout

from wsgi_proxy.core.threads import waiting
from wsgi_proxy.ops.rare_logs import RareLog

log = logging.getLogger(__name__)
# Lock failures ("lock"), shared by try_lease and try_acquire: a line a minute at most.
_failures = RareLog(log)

POLL_INTERVAL = 0.005  # a waiter looks again every 5 ms: it wakes soon after the publish
_MARK_SIZE = 64  # a SHA-256 digest in hex


class KeyLock(FileLock):
    """A URL's lock stripe, marked with the URL's digest while held. Build it with
    ``key_lock``."""

    def release(self, force: bool = False) -> None:
        if self.lock_counter == 1 or (force and self.is_locked):
            with contextlib.suppress(OSError):
                os.truncate(self.lock_file, 0)  # still held: nobody reads a half-cleared mark
        super().release(force)


def key_lock(path: str, digest: str, timeout: float) -> KeyLock:
    """The lock at ``path`` (a stripe), to be held for the URL whose digest is ``digest``."""
    mark = digest.encode("ascii")

    def write_mark(fd: int) -> None:
        os.pwrite(fd, mark, 0)  # every mark has the same length: it replaces a stale one

    return KeyLock(
        path,
        timeout=timeout,
        thread_local=False,
        poll_interval=POLL_INTERVAL,
        preserve_lock_file=True,
        on_acquired=write_mark,
    )


class FetchLease:
    """A URL's fetch lock, held: the one handle it is given back through. Made held by
    ``try_lease`` (or holding nothing where the disk refuses the lock: ``is_held`` is then
    False from the start); ``release`` gives the lock back once, and does nothing after
    that, so an owner releases on every way out without asking whether it was done
    already; ``with lease:`` releases at the end of the block. Not shared between
    threads: one owner at a time, which may hand it to the next one (the request to its
    body stream)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: KeyLock | None) -> None:
        self._lock = lock

    @property
    def is_held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self) -> FetchLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def try_lease(lock: KeyLock) -> FetchLease | None:
    """``lock`` taken now (no wait), as a lease; None when another holds it. When it
    cannot be taken at all (a read-only disk, no file descriptors left), a lease that holds
    nothing: no fetch can hold it either, so there is nothing to wait for, and the caller
    goes on as the holder, uncoalesced (waiting would poll until the lock timeout)."""
    try:
        lock.acquire(timeout=0, blocking=False)
    except Timeout:
        return None
    except OSError as exc:
        _failures.warning("lock", "lock failed (%s): going on without it", exc)
        return FetchLease(None)
    _failures.recovered("lock", "lock files work again")
    return FetchLease(lock)


def held_for_other(lock: KeyLock, digest: str) -> bool:
    """Is ``lock`` held for a URL other than the one with ``digest``? False when it cannot
    tell (free, just taken and not yet marked, unreadable)."""
    try:
        fd = os.open(lock.lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        mark = os.read(fd, _MARK_SIZE + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(mark) and mark != digest.encode("ascii")


def wait_for_fetch(lock: KeyLock, digest: str, timeout: float) -> bool:
    """Wait until the fetch holding ``lock`` for this URL is over; True when it is (or the
    lock turns out to be held for another URL: nothing to wait for), False after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        probe = try_lease(lock)
        if probe is not None:
            probe.release()  # at once: the other waiters need not queue behind this one
            return True
        if held_for_other(lock, digest):
            log.debug("lock stripe %s held for another URL: not waiting", lock.lock_file)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


class _SharedWait:
    __slots__ = ("done", "over")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.over = False  # what the leader's wait_for_fetch answered


class FetchWaits:
    """``wait_for_fetch`` shared by a worker's threads: for each URL one thread (the first
    to wait) polls the lock, the others wait for its answer. Fifty requests of a herd in one
    worker then make one poll every 5 ms, not fifty. Each waits until its own deadline: one
    that joined late and still has time when the leader gives up waits on (or polls) again.
    The worker's pool runs other requests meanwhile (server/thread_pool.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_digest: dict[str, _SharedWait] = {}

    def wait(self, lock: KeyLock, digest: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with waiting():
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                with self._lock:
                    shared = self._by_digest.get(digest)
                    leader = shared is None
                    if shared is None:
                        shared = self._by_digest[digest] = _SharedWait()
                if leader:
                    return self._lead(shared, lock, digest, remaining)
                if shared.done.wait(remaining) and shared.over:
                    return True
                if time.monotonic() >= deadline:
                    return False

    def _lead(self, shared: _SharedWait, lock: KeyLock, digest: str, timeout: float) -> bool:
        try:
            shared.over = wait_for_fetch(lock, digest, timeout)
        finally:
            with self._lock:
                del self._by_digest[digest]
            shared.done.set()
        return shared.over


def try_acquire(lock: FileLock, timeout: float) -> bool:
    """Acquire ``lock`` within ``timeout`` seconds (0: do not wait); False on timeout."""
    try:
        lock.acquire(timeout=timeout, blocking=timeout > 0)
    except Timeout:
        return False
    except OSError as exc:
        _failures.warning("lock", "lock failed (%s): going on without it", exc)
        return False
    _failures.recovered("lock", "lock files work again")
    return True
