"""The bytes and files stored in the cache, one pair of totals shared by all workers.

Invariants:
- The totals live in ``state/usage`` (``<bytes> <files>``; an older ``<bytes>`` alone reads
  as no files until the next scan) and are only ever replaced whole (a temporary file,
  then ``os.replace``), under ``state/usage.lock``.
- Each worker keeps its own pending deltas and folds them in with ``flush``; the evictor's
  scans reset the totals to what is on disk, so drift from crashes does not last.
- A file counts when it is published where none was (an entry, a variant, a marker) and
  stops counting when removed through the store; the scan counts the same files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from filelock import FileLock

from wsgi_proxy.store.entry_file import TMP_PREFIX


class UsageCounter:
    """Bytes and files stored, shared by all workers in ``state/usage``. Each worker adds
    its deltas locally and ``flush`` folds them into the file under a lock; the evictor's
    scans reset it to the truth, so drift from crashes does not last."""

    def __init__(self, state: Path) -> None:
        self.path = state / "usage"
        self.lock_path = state / "usage.lock"
        self.pending = 0
        self.pending_files = 0
        self._pending_lock = threading.Lock()

    def add(self, delta: int, files: int = 0) -> None:
        with self._pending_lock:
            self.pending += delta
            self.pending_files += files

    def _lock(self) -> FileLock:
        return FileLock(self.lock_path, timeout=5, thread_local=False, preserve_lock_file=True)

    def flush(self) -> int:
        """Fold this worker's pending deltas into the shared totals; return the bytes."""
        with self._pending_lock:
            delta, self.pending = self.pending, 0
            files, self.pending_files = self.pending_files, 0
        with self._lock():
            total, stored = self.read_both()
            total = max(0, total + delta)
            _replace_text(self.path, f"{total} {max(0, stored + files)}")
        return total

    def reset(self, total: int, files: int) -> None:
        with self._lock():
            _replace_text(self.path, f"{total} {files}")

    def read(self) -> int:
        """The bytes stored."""
        return self.read_both()[0]

    def read_files(self) -> int:
        """The files stored: entries, variants and markers."""
        return self.read_both()[1]

    def read_both(self) -> tuple[int, int]:
        try:
            fields = self.path.read_text().split()
            return int(fields[0]) if fields else 0, int(fields[1]) if len(fields) > 1 else 0
        except (FileNotFoundError, ValueError):
            return 0, 0


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
