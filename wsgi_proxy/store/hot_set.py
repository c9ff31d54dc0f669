"""Each worker's memo of the small entries it serves: a repeat hit costs one ``stat``
instead of ``open``, ``read``, ``fstat`` and ``close``, and no header parsing.

Invariants:
- A remembered entry is used only while the file at its path is the very file it was read
  from: same device, inode, size and modification time, checked with ``stat`` on every
  use. Published files never change in place (entry_file.py): a replacement, a removal, a
  refresh after a 304, a soft purge and the LRU touch all change what is at the path or
  its stamp, and the file is then read afresh.
- Only header-only entries (pass and Vary markers) and responses whose whole body came
  with the header read (at most 8 KiB) are kept; the store adds a response only once this
  worker has checked its body's CRC-32, and any entry only from its second lookup within
  a while (repeats.py).
- Each publish sets its file's mtime to the nanosecond (entry_file.py), so a file published
  into the inode of a removed one does not pass for it; the store turns the set on only
  where the filesystem keeps nanosecond mtimes.
- Bounded: at most ``max_entries``; the oldest remembered goes first.

Part of the store (its only ``stat`` outside cache.py); flow/ready_answers.py uses its ``Stamp``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

Stamp = tuple[int, int, int, int]  # device, inode, size, modification time (ns)


@dataclass(frozen=True, slots=True)
class Remembered:
    """What ``Store._open`` read from one file, minus the file."""

    stamp: Stamp
    meta: dict[str, Any]  # shared with entryfile's memo of decoded headers: never mutated
    body_offset: int
    early: bytes  # the whole body (empty for a marker)


def stamp_of(stat: os.stat_result) -> Stamp:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class HotSet:
    """Remembered entries by path. Reads take no lock; changes take one, so that eviction
    never iterates the dict while another thread removes from it."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._by_path: dict[str, Remembered] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> tuple[Remembered, os.stat_result] | None:
        """The entry remembered for ``path`` if the file there is still the one it was
        read from, with the file's current ``stat``; else None (and it is forgotten)."""
        found = self._by_path.get(path)
        if found is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            self.forget(path)
            return None
        if stamp_of(stat) != found.stamp:
            self.forget(path)
            return None
        return found, stat

    def add(self, path: str, remembered: Remembered) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._by_path.pop(path, None)
            while len(self._by_path) >= self.max_entries:
                del self._by_path[next(iter(self._by_path))]
            self._by_path[path] = remembered

    def forget(self, path: str) -> None:
        with self._lock:
            self._by_path.pop(path, None)

    def __len__(self) -> int:
        return len(self._by_path)
