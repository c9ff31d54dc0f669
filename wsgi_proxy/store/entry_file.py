"""One cache entry on disk: its versioned format, how it is read, and how it is written.

Format, version 1 (the ``MAGIC`` bytes name it): a 16-byte prefix (magic, header length,
header CRC-32), a JSON header block, then the body. The header records the body's length,
in a fixed-width field so the final header is as long as the placeholder written first,
and the body's CRC-32.

Invariants:
- An entry is written to a temporary file (named with ``TMP_PREFIX``) in the folder it is
  published in, and published with ``os.replace``, so a reader sees a whole entry or none;
  readers take no lock.
- A body is published only when all of it arrived; anything short, or over ``max_body``,
  is dropped with its temporary file.
- A decoded header block is memoised on its exact bytes and shared by every reader: it is
  never mutated, and a changed byte parses afresh.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wsgi_proxy.core.model import Entry, ResponseHead

log = logging.getLogger(__name__)

MAGIC = b"WSPX\x00\x01\r\n"
_PREFIX = struct.Struct(">8sII")
_LENGTH_WIDTH = 20
_FIRST_READ = 8192
# Every temporary file in the cache folder starts with this: scans and caps skip them.
TMP_PREFIX = ".tmp."
# Parsed header blocks each worker keeps (a few KiB each): the hot set skips JSON parsing.
_MEMO_SIZE = 4096
_CRC_BLOCK = 1 << 20
# An mtime with nanoseconds, to find whether a folder's filesystem keeps them.
_PROBE_NS = 1_700_000_000_123_456_789
_ENTRY = "\0entry"  # where a decoded header keeps its Entry; the writer never uses it


class CorruptEntry(Exception):
    pass


@dataclass(frozen=True)
class Published:
    """What ``EntryWriter.publish`` put in place: the store records it (usage, markers)."""

    path: Path
    meta: dict[str, Any]
    disk_bytes: int  # the new file's, as du counts them (allocated blocks)
    replaced_bytes: int  # those of the file it replaced; -1 when there was none
    folder_bytes: int  # those of the folder made for it (a variants folder); else 0


class EntryWriter:
    """Streams one entry to a temporary file; ``seal`` then ``publish`` put it in place,
    ``abort`` drops it. It never calls back into the store: a failed disk write is kept in
    ``error``, a refused nanosecond mtime in ``coarse_mtime``, and ``publish`` returns what
    it published; the store's ``PendingEntry`` records each (store/cache.py)."""

    def __init__(
        self, path: Path, meta: dict[str, Any], expected_length: int | None, max_body: int
    ) -> None:
        self.path = path
        self.meta = meta
        self.expected_length = expected_length
        self.max_body = max_body
        self.length = 0
        self.crc = 0
        self.failed = False
        self.error: OSError | None = None  # the disk write that failed, if one did
        self.coarse_mtime: OSError | None = None  # why the nanosecond mtime was refused
        self.folder_bytes = _make_folder(path.parent)
        self.tmp = path.parent / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.header_size = len(self._header(0, 0))
        try:
            _write_all(self.fd, self._header(0, 0))
        except OSError:
            self.abort()
            raise

    def _header(self, length: int, crc: int) -> bytes:
        meta = {**self.meta, "body_length": f"{length:0{_LENGTH_WIDTH}d}", "body_crc": f"{crc:08x}"}
        block = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        return _PREFIX.pack(MAGIC, len(block), zlib.crc32(block)) + block

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; past ``max_body`` or on a disk error the entry is dropped."""
        if self.failed:
            return
        self.length += len(chunk)
        if self.length > self.max_body:
            log.debug("not stored: body larger than %d bytes: %s", self.max_body, self.path)
            self.abort()
            return
        try:
            _write_all(self.fd, chunk)
        except OSError as exc:
            log.warning("cache write failed (%s): passing through", exc)
            self.error = exc
            self.abort()
            return
        self.crc = zlib.crc32(chunk, self.crc)

    def copy_from(self, src_fd: int, offset: int, count: int, crc: int) -> None:
        """Copy a body from another file inside the kernel."""
        self.max_body = count
        copied = 0
        while copied < count:
            sent = os.copy_file_range(src_fd, self.fd, count - copied, offset + copied)
            if sent == 0:
                raise OSError("source shorter than its recorded length")
            copied += sent
        # The body was checked when it was published; its checksum carries over.
        self.length = count
        self.crc = crc

    def seal(self) -> bool:
        """Write the final header and close the temporary file, if the body is whole; True
        when it is ready to publish."""
        if self.failed:
            return False
        if self.expected_length is not None and self.length != self.expected_length:
            log.warning(
                "not stored: body of %d bytes, expected %d", self.length, self.expected_length
            )
            self.abort()
            return False
        try:
            header = self._header(self.length, self.crc)
            if len(header) != self.header_size:
                raise OSError("header size changed")  # cannot happen: fixed-width fields
            os.pwrite(self.fd, header, 0)
            # The mtime to the nanosecond, not the kernel's clock tick: each worker's memos
            # (hot_set.py) tell a new file from an old one with a reused inode by it. If the
            # filesystem refuses, the entry is still published and this worker's memos go
            # off (Store.prepare made the same call on a probe and it worked then).
            now = time.time_ns()
            try:
                os.utime(self.fd, ns=(now, now))
            except OSError as exc:
                self.coarse_mtime = exc
            os.close(self.fd)
            self.fd = -1
        except OSError as exc:
            return self.drop(exc)
        return True

    def publish(self) -> Published | None:
        """Put the sealed entry in place (``os.replace``): what was published, or None."""
        try:
            added = disk_bytes(os.stat(self.tmp))
            try:
                replaced = disk_bytes(self.path.stat())
            except FileNotFoundError:
                replaced = -1
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.drop(exc)
            return None
        return Published(self.path, self.meta, added, replaced, self.folder_bytes)

    def drop(self, exc: OSError) -> bool:
        """Drop the entry because the disk refused it (logged; kept in ``error``)."""
        log.warning("cannot publish cache entry %s: %s", self.path, exc)
        self.error = exc
        self.abort()
        return False

    def abort(self) -> None:
        self.failed = True
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            self.tmp.unlink()


# A temporary file older than this is a dead writer's whatever its name says.
STALE_TMP_AGE = 6 * 3600.0


def is_dead_tmp(name: str, mtime: float, now: float) -> bool:
    """Is the temporary file ``name`` (``.tmp.<pid>.<token>``) a dead writer's: its process
    gone (or a zombie), or the file older than ``STALE_TMP_AGE``?"""
    if now - mtime > STALE_TMP_AGE:
        return True
    try:
        pid = int(name[len(TMP_PREFIX) :].split(".", maxsplit=1)[0])
    except ValueError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # A killed writer may linger as a zombie where nobody reaps it: state Z is dead too.
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def disk_bytes(stat: os.stat_result) -> int:
    """What ``du`` counts for a file or folder: its allocated blocks."""
    return stat.st_blocks * 512


def _make_folder(folder: Path) -> int:
    """Make ``folder`` if missing, and its parents: the disk bytes of the folders it made."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        return 0
    except FileNotFoundError:
        made = _make_folder(folder.parent)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            return made
        return made + _size_of(folder)
    return _size_of(folder)


def _size_of(folder: Path) -> int:
    try:
        return disk_bytes(os.stat(folder))
    except OSError:
        return 0


def read_header(file: BinaryIO, *, remember: bool = True) -> tuple[dict[str, Any], int, bytes]:
    """The header block of the entry ``file`` is open on (read from its start), where the
    body begins, and the body bytes that came with the read. The returned dict is shared
    by every reader: never mutate it. ``remember=False`` (a walk of the whole folder, an
    entry not looked up lately) parses without the memo, leaving the hot headers in it."""
    first = file.read(_FIRST_READ)
    if len(first) < _PREFIX.size:
        raise CorruptEntry("short prefix")
    _, length, _ = _PREFIX.unpack_from(first)
    end = _PREFIX.size + length
    if len(first) < end:
        first += file.read(end - len(first))
    decode = _decode_header if remember else _decode_header.__wrapped__
    return decode(first[:end]), end, first[end:]


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _decode_header(raw: bytes) -> dict[str, Any]:
    """Checks and parses prefix and header block. Memoised on the exact bytes, so a hot
    entry is checked and parsed once per worker, and any changed byte parses afresh."""
    magic, length, crc = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise CorruptEntry("bad magic or version")
    block = raw[_PREFIX.size :]
    if len(block) != length or zlib.crc32(block) != crc:
        raise CorruptEntry("header checksum mismatch")
    meta = json.loads(block)
    if not isinstance(meta, dict):
        raise CorruptEntry("header is not an object")
    if meta.get("kind") == "response":
        meta[_ENTRY] = _build_entry(meta)  # parsed once with the block, not on every hit
    return meta


def entry_of(meta: dict[str, Any]) -> Entry:
    entry: Entry = meta[_ENTRY]
    return entry


def meta_of(entry: Entry) -> dict[str, Any]:
    return {
        "kind": "response",
        "key": entry.key,
        "status": entry.head.status,
        "reason": entry.head.reason,
        "headers": [list(pair) for pair in entry.head.headers],
        "request_time": entry.request_time,
        "response_time": entry.response_time,
        "vary": [list(pair) for pair in entry.vary],
        "tags": list(entry.tags),
        "soft_purged": entry.soft_purged,
    }


def _build_entry(meta: dict[str, Any]) -> Entry:
    head = ResponseHead(
        int(meta["status"]),
        str(meta["reason"]),
        tuple((str(k), str(v)) for k, v in meta["headers"]),
    )
    return Entry(
        key=str(meta["key"]),
        head=head,
        request_time=float(meta["request_time"]),
        response_time=float(meta["response_time"]),
        vary=tuple((str(n), None if v is None else str(v)) for n, v in meta["vary"]),
        body_length=int(meta["body_length"]),
        tags=tuple(str(t) for t in meta.get("tags", ())),
        soft_purged=bool(meta.get("soft_purged", False)),
    )


def keeps_fine_timestamps(folder: Path) -> bool:
    """Does ``folder``'s filesystem keep the nanosecond mtime a publish sets (through the
    open file, as ``EntryWriter.seal`` does)? Raises OSError if it cannot be written."""
    probe = folder / f"{TMP_PREFIX}probe.{os.getpid()}"
    with probe.open("wb") as file:
        try:
            os.utime(file.fileno(), ns=(_PROBE_NS, _PROBE_NS))
            kept = os.fstat(file.fileno()).st_mtime_ns == _PROBE_NS
        except OSError:
            kept = False
    probe.unlink(missing_ok=True)
    return kept


def crc_of(fd: int, offset: int, length: int) -> int:
    crc, end = 0, offset + length
    while offset < end:
        block = os.pread(fd, min(_CRC_BLOCK, end - offset), offset)
        if not block:
            raise OSError(f"short body: {end - offset} bytes missing")
        crc = zlib.crc32(block, crc)
        offset += len(block)
    return crc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
