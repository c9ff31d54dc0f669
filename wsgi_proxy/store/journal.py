"""The store's journal: what the workers (and the CLI) added to and removed from the cache
folder, for the cache manager (manager.py), which keeps the folder's disk use from it
instead of scanning the folder.

One text file, ``v1/state/journal``, a record a line:

- ``+ <disk bytes> <disk bytes replaced> <path>``: a file published (an entry, a variant,
  a marker, or a variants folder made), ``path`` relative to ``v1/objects``;
- ``- <disk bytes> <path>``: a file removed through the store (not by the manager);
- ``C``: the objects folder is about to be swapped for an empty one (a clear).

Disk bytes are what ``du`` counts: ``st_blocks`` times 512 (``disk_bytes``).
A folder's path ends with ``/``; ``<disk bytes replaced>`` is -1 where nothing was replaced.

Invariants:
- A record is appended whole, in one ``write`` on a descriptor opened with ``O_APPEND``,
  so processes appending at once never interleave; a writer keeps no descriptor between
  records, so a journal the manager has rotated is never written to for long.
- Appending never fails the caller: a journal that cannot be written loses the record
  (logged once a minute), and the manager's next scan of the folder corrects its counts.
- Only the manager reads it, from the offset it read up to, and rotates it
  (``JournalReader``); records of a rotated journal written after the rotation are read
  before the rotated file is deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from wsgi_proxy.store.entry_file import disk_bytes

__all__ = ["disk_bytes"]  # re-exported: the manager counts as the writers do

log = logging.getLogger(__name__)

NAME = "journal"
# Rotated when larger than this (about 3,000 records): it counts against the size limit.
ROTATE_AT = 256 << 10
# A rotated journal is read one last time, then deleted, once writers that opened it before
# the rotation have had this long to append.
ROTATED_GRACE = 2.0
_warned = [0.0]


@dataclass(frozen=True, slots=True)
class Added:
    path: str
    disk_bytes: int
    replaced_bytes: int


@dataclass(frozen=True, slots=True)
class Removed:
    path: str
    disk_bytes: int


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


Record = Added | Removed | Cleared


def note_added(state: Path, path: str, added: int, replaced: int) -> None:
    _append(state, f"+ {added} {replaced} {path}\n")


def note_removed(state: Path, path: str, removed: int) -> None:
    _append(state, f"- {removed} {path}\n")


def note_cleared(state: Path) -> None:
    _append(state, "C\n")


def _append(state: Path, line: str) -> None:
    if "\n" in line[:-1]:
        return  # never: paths are digests
    try:
        fd = os.open(state / NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        if time.monotonic() - _warned[0] > 60:
            _warned[0] = time.monotonic()
            log.warning("cannot write the store's journal in %s: %s", state, exc)


def parse(line: str) -> Record | None:
    """One journal line as a record; None for a line that is not one (a torn write)."""
    fields = line.split(" ", 3)
    try:
        match fields[0]:
            case "+" if len(fields) == 4:
                return Added(fields[3], int(fields[1]), int(fields[2]))
            case "-" if len(fields) == 3:
                return Removed(fields[2], int(fields[1]))
            case "C" if len(fields) == 1:
                return Cleared()
    except ValueError:
        return None
    return None


class JournalReader:
    """The manager's side: the records appended since the last ``read``."""

    def __init__(self, state: Path) -> None:
        self.path = state / NAME
        self._file: tuple[int, int] | None = None  # (device, inode) being read
        self._offset = 0
        self._rotated: list[tuple[Path, int, float]] = []  # (path, offset, rotated at)

    def skip_to_end(self) -> None:
        """Start from what is appended from now on (after a scan of the whole folder)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._file, self._offset = None, 0
            return
        self._file, self._offset = (stat.st_dev, stat.st_ino), stat.st_size

    def position(self) -> list[int]:
        """Where it has read up to: device, inode, offset (for ``seek``)."""
        device, inode = self._file or (0, 0)
        return [device, inode, self._offset]

    def seek(self, device: int, inode: int, offset: int) -> None:
        self._file, self._offset = (device, inode), offset

    def read(self, now: float, *, rotate: bool = True) -> list[Record]:
        records: list[Record] = []
        self._read_rotated(records, now)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return records
        try:
            stat = os.fstat(fd)
            identity = (stat.st_dev, stat.st_ino)
            if identity != self._file:
                self._file, self._offset = identity, 0
            if stat.st_size > self._offset:
                data = os.pread(fd, stat.st_size - self._offset, self._offset)
                whole = data[: data.rfind(b"\n") + 1]
                self._offset += len(whole)
                records += _records(whole)
            if rotate and self._offset > ROTATE_AT:
                self._rotate(now)
        finally:
            os.close(fd)
        return records

    def _rotate(self, now: float) -> None:
        rotated = self.path.with_name(f"{NAME}.{int(now * 1000)}")
        try:
            os.rename(self.path, rotated)
        except OSError as exc:
            log.warning("cannot rotate the store's journal %s: %s", self.path, exc)
            return
        self._rotated.append((rotated, self._offset, now))
        self._file, self._offset = None, 0

    def _read_rotated(self, records: list[Record], now: float) -> None:
        kept = []
        for path, read_upto, when in self._rotated:
            offset = read_upto
            with contextlib.suppress(OSError):
                data = path.read_bytes()[offset:]
                whole = data[: data.rfind(b"\n") + 1]
                records += _records(whole)
                offset += len(whole)
            if now - when > ROTATED_GRACE:
                with contextlib.suppress(OSError):
                    path.unlink()
            else:
                kept.append((path, offset, when))
        self._rotated = kept


def remove_rotated(state: Path) -> None:
    """Delete rotated journals a manager that died left behind (at a scan of the folder,
    which counts what they recorded)."""
    with contextlib.suppress(OSError):
        for item in os.scandir(state):
            if item.name.startswith(NAME + "."):
                with contextlib.suppress(OSError):
                    os.unlink(item.path)


def _records(data: bytes) -> list[Record]:
    out = []
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        if line:
            record = parse(line)
            if record is not None:
                out.append(record)
    return out
