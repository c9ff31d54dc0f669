"""What a lookup in the store finds (an open stored response, or a pass marker), and each
worker's record of the stored bodies it has checked against their CRC-32.

Invariants:
- A ``Hit`` names its file by device, inode and size (``identity``): the mtime changes with
  LRU touches, the identity only when another file is published at the path.
- Published files never change in place (entry_file.py), so a body that matched its CRC-32
  once matches it for as long as its file exists: each is checked once per worker. The
  record is bounded; when full it starts again, which costs checks, never correctness.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from wsgi_proxy.core.model import Entry
from wsgi_proxy.store.entry_file import crc_of
from wsgi_proxy.store.hot_set import Stamp

CHECKED_MAX = 65536


@dataclass(frozen=True, slots=True)
class Hit:
    """An open stored response. ``file`` is unbuffered, at no particular position: read
    it at offsets. ``early`` holds the first body bytes, read with the header: the whole
    body of a small entry, which then needs no second read."""

    entry: Entry
    location: str  # the file's path; a str, as building a Path costs on every hit
    file: BinaryIO | None  # None when the hot set had it: the body is whole in ``early``
    body_offset: int
    body_crc: int
    stamp: Stamp  # device, inode, size and mtime of the file when it was opened
    early: bytes = b""
    bans: int = -1  # the ban generation the lookup checked it at (bans.py); -1: none
    again: bool = True  # looked up lately (repeats.py): the memos may keep it

    @property
    def identity(self) -> tuple[int, int, int]:
        """Device, inode and size: which file it is (the mtime changes with LRU touches)."""
        return self.stamp[:3]

    @property
    def path(self) -> Path:
        return Path(self.location)

    def read(self, start: int, end: int) -> bytes:
        """Body bytes ``start`` to ``end`` (exclusive): from ``early`` when it holds them,
        else one positioned read (short only if the file was damaged since it was opened)."""
        if len(self.early) >= end:
            return self.early[start:end]
        if self.file is None:
            raise OSError(f"{self.location}: the body is not open")
        return os.pread(self.file.fileno(), end - start, self.body_offset + start)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass(frozen=True, slots=True)
class PassMarker:
    """The URL's last response was not storable: forward without waiting on a lock."""

    until: float


class CheckedBodies:
    """The bodies this worker found to match their CRC-32, by file identity and CRC."""

    def __init__(self, limit: int = CHECKED_MAX) -> None:
        self.limit = limit
        self._checked: set[tuple[int, int, int, int]] = set()

    def is_checked(self, identity: tuple[int, int, int], crc: int) -> bool:
        return (*identity, crc) in self._checked

    def check(self, hit: Hit, body: bytes | None = None) -> bool:
        """Does ``hit``'s body match its CRC-32? ``body`` is the whole body if the caller
        read it already; else it comes from ``early`` or the file. A match is remembered.
        Raises OSError if the body cannot be read."""
        if self.is_checked(hit.identity, hit.body_crc):
            return True
        length = hit.entry.body_length
        if (body is None or len(body) != length) and len(hit.early) >= length:
            body = hit.early[:length]
        if body is not None and len(body) == length:
            crc = zlib.crc32(body)
        elif hit.file is not None:
            crc = crc_of(hit.file.fileno(), hit.body_offset, length)
        else:
            raise OSError("the body is not open")
        return self.settle(hit, crc)

    def settle(self, hit: Hit, crc: int) -> bool:
        """Does ``crc``, computed over ``hit``'s whole body, match its record? A match is
        remembered."""
        if crc != hit.body_crc:
            return False
        if len(self._checked) >= self.limit:
            self._checked.clear()
        self._checked.add((*hit.identity, hit.body_crc))
        return True


def identity_of(stat: os.stat_result) -> tuple[int, int, int]:
    """Device, inode and size of a ``stat``: the ``identity`` of the file's ``Hit``."""
    return stat.st_dev, stat.st_ino, stat.st_size
