"""The cache manager's process (store/manager.py): started by the gunicorn master before
it forks the workers, watched by it (started again when it dies), stopped with it.

Invariants:
- One manager per cache folder at a time: it holds ``state/manager.lock`` while it runs;
  a second one waits for the lock.
- The master starts it from its ``when_ready`` hook and sets ``MANAGED_ENV`` for the
  workers it forks next, so that none of them runs the manager's rounds itself
  (store/eviction.py); ``on_exit`` stops it. A thread of the master waits on it and starts
  it again if it dies: ``RESTART_DELAY`` later, or, after one that ran less than
  ``STEADY_RUN`` (a crash at start, a settings error), twice the wait before that one, up
  to ``MAX_RESTART_DELAY`` (``restart_delay``): a manager that cannot start costs a line
  a minute, not one every few seconds. The master's line says when the next start comes;
  ``stop`` ends the wait at once, and no start follows it.
- It runs at the workers' CPU priority: at a lower one (nice 10 was tried), under load the
  workers' threads left it too little CPU to evict as fast as misses wrote (the folder
  reached twice the limit in the scale benchmark). Its steady work is small: a journal
  record and an eviction a miss. Only the eviction nobody waits for (the folder over what
  the workers store up to, after a restart over a lower limit) goes to a thread at the idle
  priority first (store/deleter.py).
- It ends by itself when the master is gone (its parent changes), and never exits with
  gunicorn's worker boot or load error codes (3, 4), which a master would take for its own.
- A cache folder it cannot open (read only, say, after a crash of the manager before it)
  does not end it: it tries again every ``RETRY_INTERVAL``, where the master would only
  start it again every few seconds, with two lines each time. Its disk failures, there and
  in its rounds, are logged once a minute at most, with the count (ops/rare_logs.py).
- A clean stop (SIGTERM or SIGINT) writes the manager's index (``state/index``,
  store/manager_index.py) before the lock is let go, so the next manager starts from it
  instead of walking the folder. A manager killed, or orphaned (its master killed: a crash,
  whose workers may have left dead writers' files and unrecorded publishes), leaves none:
  the next one walks the folder, which removes those files and counts what is there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from wsgi_proxy.core.config import Config
from wsgi_proxy.ops.metrics import purged_entries_counter
from wsgi_proxy.ops.rare_logs import RareLog
from wsgi_proxy.store import manager_index
from wsgi_proxy.store.cache import Store, state_folder
from wsgi_proxy.store.eviction import MANAGED_ENV, manager_lock
from wsgi_proxy.store.manager import STEP, CacheManager

# The wait before starting a manager again after one that died; doubled after each that
# ran less than STEADY_RUN, up to MAX_RESTART_DELAY (restart_delay).
RESTART_DELAY = 1.0
STEADY_RUN = 60.0
MAX_RESTART_DELAY = 60.0
# Between rounds while work is left (a cleared folder, over the limit).
BUSY_STEP = 0.01
STOP_WAIT = 5.0
# A cache folder it cannot open is tried again this often.
RETRY_INTERVAL = 5.0


class ManagerProcess:
    """In the gunicorn master: the manager's process, kept running."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._started = 0.0  # time.monotonic() at the process's start
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        os.environ[MANAGED_ENV] = "1"
        with contextlib.suppress(Exception):  # no index taken: the manager walks
            manager_index.take_over(state_folder(Config.from_env().cache_dir), os.getpid())
        self._spawn()
        threading.Thread(target=self._watch, name="wsgi_proxy-manager-watch", daemon=True).start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", __name__, str(os.getpid())], stdin=subprocess.DEVNULL
            )
            self._started = time.monotonic()
            self.log.info("cache manager started (pid %d)", self.process.pid)

    def _watch(self) -> None:
        delay: float | None = None  # the wait before the running manager's start
        while not self._stopping.is_set():
            process = self.process
            if process is None:
                return
            code = process.wait()  # 0 too when the master reaped it first
            if self._stopping.is_set():
                return
            delay = restart_delay(delay, time.monotonic() - self._started)
            self.log.error("cache manager (pid %d) exited (%s): starting it again in %g s",
                           process.pid, code, delay)  # fmt: skip
            if self._stopping.wait(delay):  # stop() ends the wait at once
                return
            self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()


def restart_delay(last: float | None, ran_for: float) -> float:
    """The wait before starting the manager again after one that ran ``ran_for`` seconds
    and was started after a wait of ``last`` (None: the first, started with the master).
    ``RESTART_DELAY`` after the first or after one that ran ``STEADY_RUN`` or longer; twice
    ``last`` after one that failed sooner, up to ``MAX_RESTART_DELAY``."""
    if last is None or ran_for >= STEADY_RUN:
        return RESTART_DELAY
    return min(last * 2, MAX_RESTART_DELAY)


def main(argv: list[str]) -> int:
    """The manager's process: rounds every ``STEP`` until told to stop or orphaned.
    ``argv``: the master's pid."""
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] cache manager: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S %z",
    )
    log = logging.getLogger("wsgi_proxy.cache_manager")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = int(argv[0]) if argv else os.getppid()
    if os.getppid() != parent:
        return 0  # the master died before this process could start
    try:
        config = Config.from_env()
        store = Store(config.cache_dir, lock_stripes=1, max_variants=config.max_variants)
    except Exception as exc:  # noqa: BLE001 - said, then retried by the master
        log.error("cannot read the settings: %s", exc)  # noqa: TRY400 - one line
        stop.wait(RESTART_DELAY * 5)
        return 1
    failures = RareLog(log)
    if not _opened(store, stop, parent, failures):
        return 0
    lock = manager_lock(store)
    while not lock.try_acquire():  # a manager before this one may still hold the folder
        if stop.wait(1.0) or os.getppid() != parent:
            return 0
    # The index this master took over from the last clean stop (manager_index.take_over),
    # else one a manager that stopped after this master started wrote (a handover).
    names = (manager_index.taken_name(parent), manager_index.NAME)
    manager = CacheManager(store, config.max_size, metrics_dir=config.metrics_dir,
                           on_purged=purged_entries_counter(config.metrics_dir),
                           index_names=names)  # fmt: skip
    try:
        while not stop.is_set() and os.getppid() == parent:
            try:
                if manager.step(time.time()):
                    stop.wait(BUSY_STEP)  # more to do: a cleared folder, over the limit
                    continue
            except OSError as exc:  # a full or read-only disk: a line a minute at most
                failures.warning("round", "round failed: %s", exc)
                stop.wait(1.0)
            except Exception:  # the process outlives any one failure
                log.exception("round failed")
                stop.wait(1.0)
            stop.wait(STEP)
        # A clean stop: the next manager starts from its index instead of walking the
        # folder. Within the master's STOP_WAIT: under a second at 1,000,000 files.
        if stop.is_set():
            try:
                manager.save_index(time.time())
            except Exception:  # the lock is released all the same; the next one walks
                log.exception("cannot write the cache manager's index")
        else:
            log.warning("the master is gone: no index written (the next start walks)")
    finally:
        lock.release()
    return 0


def _opened(store: Store, stop: threading.Event, parent: int, failures: RareLog) -> bool:
    """``store`` prepared, tried again every ``RETRY_INTERVAL`` while the folder cannot be
    used (read only, say); False when told to stop, or orphaned, meanwhile."""
    while True:
        try:
            store.prepare()
        except OSError as exc:
            failures.warning("open", "cannot open the cache folder (%s): trying again every "
                             "%d s", exc, RETRY_INTERVAL)  # fmt: skip
        else:
            failures.recovered("open", "the cache folder is usable again")
            return True
        if stop.wait(RETRY_INTERVAL) or os.getppid() != parent:
            return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
