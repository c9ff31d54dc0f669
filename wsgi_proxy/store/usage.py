"""The bytes stored in the cache, one total shared by all workers.

Invariants:
- The total lives in ``state/usage`` and is only ever replaced whole (a temporary file,
  then ``os.replace``), under ``state/usage.lock``.
- Each worker keeps its own pending delta and folds it in with ``flush``; the evictor's
  scans reset the total to what is on disk, so drift from crashes does not last.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from filelock import FileLock

from wsgi_proxy.store.entry_file import TMP_PREFIX


class UsageCounter:
    """Bytes stored, shared by all workers in ``state/usage``. Each worker adds its deltas
    locally and ``flush`` folds them into the file under a lock; the evictor's scans reset
    it to the truth, so drift from crashes does not last."""

    def __init__(self, state: Path) -> None:
        self.path = state / "usage"
        self.lock_path = state / "usage.lock"
        self.pending = 0
        self._pending_lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._pending_lock:
            self.pending += delta

    def _lock(self) -> FileLock:
        return FileLock(self.lock_path, timeout=5, thread_local=False, preserve_lock_file=True)

    def flush(self) -> int:
        """Fold this worker's pending delta into the shared total; return the total."""
        with self._pending_lock:
            delta, self.pending = self.pending, 0
        with self._lock():
            total = max(0, self.read() + delta)
            _replace_text(self.path, str(total))
        return total

    def reset(self, total: int) -> None:
        with self._lock():
            _replace_text(self.path, str(total))

    def read(self) -> int:
        try:
            return int(self.path.read_text() or "0")
        except (FileNotFoundError, ValueError):
            return 0


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
