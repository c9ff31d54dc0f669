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
- ``walk_files`` is the one walk of the cache folder outside the manager (purge.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.fetch_locks import try_acquire
from wsgi_proxy.store.manager import CacheManager

log = logging.getLogger(__name__)

# Set in the environment of the workers by the master that started a manager process.
MANAGED_ENV = "_WSGI_PROXY_CACHE_MANAGER"
MANAGER_LOCK = "manager.lock"
LURKER_LOCK = "lurker.lock"


def manager_lock(store: Store) -> FileLock:
    """Held by the cache manager (process or thread) for as long as it runs."""
    return FileLock(store.state / MANAGER_LOCK, thread_local=False, preserve_lock_file=True)


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
        lurk: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        # The ban lurker's step (lurker.py): run here, one worker at a time, until the cache
        # manager process runs it.
        self.lurk = lurk
        self.max_size = max_size
        self.metrics_dir = metrics_dir
        self.interval = interval
        self.managed = os.environ.get(MANAGED_ENV) == "1" if managed is None else managed
        self.manager: CacheManager | None = None
        self._lock: FileLock | None = None
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
        if self.lurk is not None and self.store.bans.current().bans:
            self._lurk_alone(self.lurk)
        if self.managed:
            return
        if self.manager is None:
            lock = manager_lock(self.store)
            if not try_acquire(lock, 0):
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
            self.manager = CacheManager(self.store, self.max_size, metrics_dir=self.metrics_dir)
        self.manager.step(now)

    def _lurk_alone(self, lurk: Callable[[], bool]) -> None:
        """One lurker step unless another worker's runs (then the next tick tries again)."""
        lock = FileLock(self.store.state / LURKER_LOCK, thread_local=False,
                        preserve_lock_file=True)  # fmt: skip
        if not try_acquire(lock, 0):
            return
        try:
            lurk()
        finally:
            lock.release()


def cache_gauges(store: Store, max_size: int) -> list[tuple[str, str, float]]:
    """The cache's size for the metrics, as the cache manager last counted it (usage.py)."""
    stored, files = store.usage.read_both()
    return [
        ("wsgi_proxy_cache_bytes", "Disk bytes the cache uses (as du counts)", float(stored)),
        ("wsgi_proxy_cache_limit_bytes", "WSGI_PROXY_MAX_SIZE", float(max_size)),
        ("wsgi_proxy_cache_files", "Files stored: entries, variants and markers", float(files)),
    ]


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
