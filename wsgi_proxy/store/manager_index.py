"""The cache manager's index, ``v1/state/index``: what the manager knew when it stopped
cleanly (its counts, its queue, where it had read the journal up to), so that the next
manager starts from it instead of walking the whole folder (manager.py).

The file, in this machine's byte order (a file from another one fails the version check):

- a header (``_HEADER``): magic, version, the CRC-32 of everything after the header, the
  objects and files counted, the journal position (device, inode, offset), the objects
  folder's device and inode, when the folder was last walked, when this was written, the
  number of queue items and the length of their keys;
- one byte per item, oldest first: its key's length, 0 for a key that is a str;
- the bytes keys, end to end;
- each item's mtime in seconds (int64), then each item's size in 512-byte units (uint64):
  a stamp (lru_queue.py) takes more than 64 bits;
- the str keys in order, each a uint32 length then its UTF-8 (surrogateescape).

Invariants:
- Written whole to a temporary file beside it, then ``os.replace``d: a reader sees a whole
  index or none. It is not fsynced: a file torn by a crash fails its length or CRC check.
- Read once: ``consume`` deletes the file before it parses it, valid or not. Once the
  manager runs it evicts files without journal records, so a later start must never find
  an old index; one that cannot be deleted is not used.
- Reading makes no Python object per item beyond the queue's own keys and stamps.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate, pairwise, repeat, starmap
from operator import and_, lshift, or_, rshift
from pathlib import Path

from wsgi_proxy.store.entry_file import TMP_PREFIX
from wsgi_proxy.store.lru_queue import MASK, SHIFT, LruQueue

NAME = "index"
# 2: the objects' count takes in their folders' growth (manager.py, _measure_folders): a
# version 1 index counts too little, and the folder is walked instead.
VERSION = 2
_MAGIC = b"wpindex\n"
_HEADER = struct.Struct("=8sIIqqQQQQQddQQ")
_STR_LENGTH = struct.Struct("=I")


class BadIndex(ValueError):
    """An index that cannot be used; the message says why, in a few words."""


@dataclass(frozen=True, slots=True)
class Index:
    objects: int  # disk bytes of the stored files and their folders
    files: int
    journal: tuple[int, int, int]  # JournalReader.position(): device, inode, offset
    objects_folder: tuple[int, int]  # device, inode of v1/objects
    walked: float  # time.time() of the last walk of the whole folder
    written: float
    queue: LruQueue


def write(path: Path, index: Index) -> int:
    """Write ``index`` to ``path``, atomically; the bytes written."""
    keys, stamps = index.queue.keys, index.queue.stamps
    parts, strs = _key_parts(keys)
    parts.append(array("q", map(rshift, stamps, repeat(SHIFT))))
    parts.append(array("Q", map(and_, stamps, repeat(MASK))))
    for text in strs:
        data = text.encode("utf-8", "surrogateescape")
        parts += [_STR_LENGTH.pack(len(data)), data]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    header = _HEADER.pack(
        _MAGIC, VERSION, crc, index.objects, index.files, *index.journal,
        *index.objects_folder, index.walked, index.written, len(keys), len(parts[1]),
    )  # fmt: skip
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            out.write(header)
            for part in parts:
                out.write(part)
            size = out.tell()
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return size


def _key_parts(keys: deque[bytes | str]) -> tuple[list[bytes | array[int]], list[str]]:
    """The lengths byte per key and the bytes keys end to end; and the str keys."""
    try:
        return [bytes(map(len, keys)), b"".join(keys)], []  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a str key (rare): join refuses it
        pass
    strs = [key for key in keys if isinstance(key, str)]
    raw = [b"" if isinstance(key, str) else key for key in keys]
    return [bytes(map(len, raw)), b"".join(raw)], strs


def taken_name(master_pid: int) -> str:
    """The name of the index a master took over for its manager (``take_over``)."""
    return f"{NAME}.{master_pid}"


def take_over(state: Path, master_pid: int) -> None:
    """In a gunicorn master, before it starts its cache manager and workers: the index a
    clean stop left is renamed for this master's manager (``taken_name``), and any a master
    before it took is deleted. So an index serves only the first server started after the
    clean stop that wrote it: if that server crashes before its manager read it (its
    workers may have left dead writers' files, which only a walk removes), the next one
    walks the folder."""
    with contextlib.suppress(OSError), os.scandir(state) as listing:
        for item in listing:
            if item.name.startswith(NAME + ".") and item.name[len(NAME) + 1 :].isdigit():
                with contextlib.suppress(OSError):
                    os.unlink(item.path)
    with contextlib.suppress(FileNotFoundError):
        os.rename(state / NAME, state / taken_name(master_pid))


def consume(path: Path) -> Index | None:
    """The index at ``path``, deleted first; None where there is none. Raises
    ``BadIndex`` for one that cannot be used, and OSError if it cannot be read or
    deleted."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    os.unlink(path)
    return parse(data)


def parse(data: bytes) -> Index:
    if len(data) < _HEADER.size:
        raise BadIndex(f"{len(data)} bytes, shorter than its header")
    (magic, version, crc, objects, files, j_dev, j_ino, j_off, o_dev, o_ino, walked, written,
     count, key_bytes) = _HEADER.unpack_from(data)  # fmt: skip
    if magic != _MAGIC or version != VERSION:
        raise BadIndex(f"version {version}, not {VERSION}")
    body = memoryview(data)[_HEADER.size :]
    lengths_end = count
    keys_end = lengths_end + key_bytes
    stamps_end = keys_end + 16 * count
    if len(body) < stamps_end or zlib.crc32(body) != crc:
        raise BadIndex("truncated or damaged")
    lengths = bytes(body[:lengths_end])
    if sum(lengths) != key_bytes:
        raise BadIndex("keys' lengths do not add up")
    queue = LruQueue()
    bounds = pairwise(accumulate(lengths, initial=_HEADER.size + lengths_end))
    queue.keys.extend(map(data.__getitem__, starmap(slice, bounds)))
    _put_str_keys(queue.keys, lengths, body[stamps_end:])
    mtimes, units = array("q"), array("Q")
    mtimes.frombytes(body[keys_end : keys_end + 8 * count])
    units.frombytes(body[keys_end + 8 * count : stamps_end])
    queue.stamps.extend(map(or_, map(lshift, mtimes, repeat(SHIFT)), units))
    return Index(objects, files, (j_dev, j_ino, j_off), (o_dev, o_ino), walked, written, queue)


def _put_str_keys(keys: deque[bytes | str], lengths: bytes, data: memoryview) -> None:
    """The str keys in their places (where the length is 0); all of ``data`` is theirs."""
    texts = _str_keys(data)
    at = lengths.find(0)
    while at >= 0:
        text = next(texts, None)
        if text is None:
            raise BadIndex("str keys missing")
        keys[at] = text
        at = lengths.find(0, at + 1)
    if next(texts, None) is not None:
        raise BadIndex("str keys left over")


def _str_keys(data: memoryview) -> Iterator[str]:
    offset = 0
    while offset < len(data):
        if offset + _STR_LENGTH.size > len(data):
            raise BadIndex("a str key cut short")
        (length,) = _STR_LENGTH.unpack_from(data, offset)
        offset += _STR_LENGTH.size
        if offset + length > len(data):
            raise BadIndex("a str key cut short")
        yield bytes(data[offset : offset + length]).decode("utf-8", "surrogateescape")
        offset += length


def stale_reason(index: Index, objects: Path, journal: Path) -> str | None:
    """Why ``index`` is no longer true of the folder, or None: the objects folder must be
    the one it counted (not cleared nor replaced since), and the journal position it
    recorded still readable (the same file, at least that long). With no position
    recorded (no journal then), any journal there now was made since, and is read from
    its start."""
    folder = os.stat(objects)
    if (folder.st_dev, folder.st_ino) != index.objects_folder:
        return "the objects folder is another one"
    device, inode, offset = index.journal
    if (device, inode) == (0, 0):
        return None if offset == 0 else "an offset in no journal"
    try:
        stat = os.stat(journal)
    except FileNotFoundError:
        return "the journal it read is gone"
    if (stat.st_dev, stat.st_ino) != (device, inode):
        return "the journal it read was replaced"
    if stat.st_size < offset:
        return f"the journal is shorter than the {offset} bytes read"
    return None
