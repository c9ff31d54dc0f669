"""The cache manager's queue of stored files, oldest first (manager.py): each a compact
path key and an int packing mtime and size. Its file across a clean restart is
manager_index.py.

Invariants:
- A key is the path's digests as raw bytes (32 for ``ab/<digest>``, 64 for
  ``ab/<digest>.d/<digest>``, cache.py's layout), else, rarely, the path itself (a str).
- A stamp is ``mtime in whole seconds << SHIFT | size in 512-byte units`` (the size
  capped at ``MASK``): ordering stamps orders by mtime.
"""

from __future__ import annotations

from collections import deque

UNITS = 512
SHIFT = 40
MASK = (1 << SHIFT) - 1


class LruQueue:
    """Stored files, oldest first: each a path key and an int packing mtime and size."""

    def __init__(self) -> None:
        self.keys: deque[bytes | str] = deque()
        self.stamps: deque[int] = deque()

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, path: str, mtime: float, size: int) -> None:
        self.keys.append(key_of(path))
        self.stamps.append(stamp(mtime, size))

    def popleft(self) -> tuple[str, int]:
        """The oldest file's path and the mtime (seconds) it was queued with."""
        return path_of(self.keys.popleft()), self.stamps.popleft() >> SHIFT

    def take(self, budget: int, most: int) -> list[tuple[str, int]]:
        """The oldest files, removed from the queue, until their sizes add up to
        ``budget`` bytes or there are ``most``: each one's path and queued mtime."""
        keys, stamps = self.keys, self.stamps
        taken: list[tuple[str, int]] = []
        total = 0
        while keys and len(taken) < most and total < budget:
            item = stamps.popleft()
            taken.append((path_of(keys.popleft()), item >> SHIFT))
            total += (item & MASK) * UNITS
        return taken

    def clear(self) -> None:
        self.keys.clear()
        self.stamps.clear()


def stamp(mtime: float, size: int) -> int:
    """A queue item's int: mtime in seconds, then the size in 512-byte units."""
    return int(mtime) << SHIFT | min(-(-size // UNITS), MASK)


def key_of(rel: str) -> bytes | str:
    """A stored file's path, compact: its digests as bytes where it is ``ab/<digest>`` or
    ``ab/<digest>.d/<digest>`` (cache.py's layout), else the path itself."""
    try:
        if len(rel) == 67 and rel[2] == "/":
            return bytes.fromhex(rel[3:])
        if len(rel) == 134 and rel[2] == "/" and rel[67:70] == ".d/":
            return bytes.fromhex(rel[3:67] + rel[70:])
    except ValueError:
        pass
    return rel


def path_of(key: bytes | str) -> str:
    if isinstance(key, str):
        return key
    text = key.hex()
    if len(key) == 32:
        return f"{text[:2]}/{text}"
    return f"{text[:2]}/{text[:64]}.d/{text[64:]}"
