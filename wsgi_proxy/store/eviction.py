"""Each worker's share of keeping the cache folder: letting go of held files, and, only
where no cache manager process runs, the manager's rounds.

The size limit is the cache manager's (manager.py), in a process of its own that the
gunicorn master starts with the proxy's hooks (server/cache_manager.py), which tell the
workers so (``MANAGED_ENV``). A master without those hooks (gunicorn started without
``-c gunicorn.conf.py``) has no manager process: then one worker at a time (the one
holding ``state/manager.lock``) runs the manager's rounds in its ``Evictor`` thread.

Invariants:
- Every half second each worker lets go of its held files that can no longer be given
  (``OpenFiles.prune``): a removed entry's disk blocks are free within one interval.
- Every half second each worker reads the manager's count (``state/usage``): over
  ``PAUSE_ABOVE`` of the limit it stores nothing new (``Store.over_limit``) until the
  count is back under the limit.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.manager import PAUSE_ABOVE, CacheManager

log = logging.getLogger(__name__)

# Set in the environment of the workers by the master that started a manager process.
MANAGED_ENV = "_WSGI_PROXY_CACHE_MANAGER"
MANAGER_LOCK = "manager.lock"


class ManagerLock:
    """``state/manager.lock``, held by the cache manager (process or thread) for as long as
    it runs: an ``flock`` on a descriptor opened read-only (filelock opens its files for
    writing), so that holding it for hours keeps no file of the cache's disk open for
    writing, and the disk can still be remounted read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def try_acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def is_held_elsewhere(self) -> bool:
        """Does a cache manager run on this folder now?"""
        if not self.try_acquire():
            return True
        self.release()
        return False


def manager_lock(store: Store) -> ManagerLock:
    return ManagerLock(store.state / MANAGER_LOCK)


class Evictor:
    """A worker's background thread: held files let go of, and the manager's rounds where
    no manager process runs."""

    def __init__(
        self,
        store: Store,
        max_size: int,
        *,
        metrics_dir: Path | None = None,
        interval: float = 0.5,
        managed: bool | None = None,
        on_purged: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.on_purged = on_purged
        self.max_size = max_size
        self.metrics_dir = metrics_dir
        self.interval = interval
        self.managed = os.environ.get(MANAGED_ENV) == "1" if managed is None else managed
        self.manager: CacheManager | None = None
        self._lock: ManagerLock | None = None
        self._stop = threading.Event()
        self._warned = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="wsgi_proxy-evictor", daemon=True).start()

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
                    log.warning("cache upkeep failed: %s", exc)
                    warned = time.monotonic()
            except Exception:  # the thread must outlive any one failure
                log.exception("cache upkeep failed")

    def tick(self, now: float) -> None:
        self.store.open_files.prune(now)
        self._check_limit()
        if self.managed:
            return
        if self.manager is None:
            lock = manager_lock(self.store)
            if not lock.try_acquire():
                return
            self._lock = lock
            if not self._warned:
                self._warned = True
                log.warning(
                    "no cache manager process (gunicorn was started without the proxy's "
                    "hooks: use -c gunicorn.conf.py or caching-proxy): worker %d keeps "
                    "the cache folder under its limit",
                    os.getpid(),
                )
            # Deleting on the worker's own upkeep thread: no more threads in a worker.
            self.manager = CacheManager(self.store, self.max_size, metrics_dir=self.metrics_dir,
                                        on_purged=self.on_purged,
                                        deleting_threads=1)  # fmt: skip
        self.manager.step(now)

    def _check_limit(self) -> None:
        """Stop storing while the cache manager's last count is over ``PAUSE_ABOVE`` of the
        limit (it is behind: starved of CPU, or still walking the folder after a restart
        over a lower limit); store again once it is back under the limit. So the disk's
        use stays bounded whatever the miss rate."""
        total = self.store.usage.read()
        if self.store.over_limit:
            self.store.over_limit = total > self.max_size
        elif total > self.max_size * PAUSE_ABOVE:
            self.store.over_limit = True
            log.warning("the cache folder is over its limit (%d bytes, limit %d): responses "
                        "are not stored until the cache manager has made room",
                        total, self.max_size)  # fmt: skip


def cache_gauges(store: Store, max_size: int) -> list[tuple[str, str, float]]:
    """The cache's size for the metrics, as the cache manager last counted it (usage.py)."""
    stored, files = store.usage.read_both()
    return [
        ("wsgi_proxy_cache_bytes", "Disk bytes the cache uses (as du counts)", float(stored)),
        ("wsgi_proxy_cache_limit_bytes", "WSGI_PROXY_MAX_SIZE", float(max_size)),
        ("wsgi_proxy_cache_files", "Files stored: entries, variants and markers", float(files)),
    ]
