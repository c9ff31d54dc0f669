"""The cache manager's index file (store/manager_index.py) as tables: queues of every kind
of key and stamp read back as written, and every damaged file refused."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from wsgi_proxy.store import manager_index
from wsgi_proxy.store.lru_queue import MASK, SHIFT, LruQueue
from wsgi_proxy.store.manager_index import BadIndex, Index

D32 = bytes(range(32))
D64 = bytes(range(64))
ODD = "ab/odd-name"
LONG = "zz/" + "é" * 300  # longer than a length byte holds
RAW = "ab/\udcff-not-utf-8"  # a name that is not UTF-8, as os.scandir gives it

Items = list[tuple[bytes | str, int]]  # (key, stamp), oldest first
STR_KEYS: Items = [(ODD, 1 << SHIFT), (D32, 2 << SHIFT), (LONG, 3 << SHIFT), (RAW, 4 << SHIFT)]
QUEUES: list[tuple[str, Items]] = [
    ("empty", []),
    ("digests", [(D32, 1 << SHIFT | 1), (D32[::-1], 2 << SHIFT | 8)]),
    ("primaries and variants", [(D64, 5 << SHIFT | 3), (D32, 6 << SHIFT), (D64[::-1], 7 << SHIFT)]),
    ("paths as str", STR_KEYS),
    ("only a str", [("", 9 << SHIFT | 9)]),
    ("the largest size", [(D32, 1_700_000_000 << SHIFT | MASK)]),
    ("a time before 1970", [(D32, -5 << SHIFT | 3)]),
]  # fmt: skip


def queue_of(items: Items) -> LruQueue:
    queue = LruQueue()
    queue.keys.extend(key for key, _ in items)
    queue.stamps.extend(stamp for _, stamp in items)
    return queue


def index_of(items: Items) -> Index:
    return Index(12345, len(items), (7, 8, 900), (3, 4), 1000.5, 2000.25, queue_of(items))


@pytest.mark.parametrize(("case", "items"), QUEUES)
def test_an_index_reads_back_as_written_and_is_deleted_as_it_is_read(
    tmp_path: Path, case: str, items: Items
) -> None:
    path = tmp_path / "index"
    size = manager_index.write(path, index_of(items))
    assert size == path.stat().st_size
    read = manager_index.consume(path)
    assert not path.exists(), case
    assert read is not None
    assert list(zip(read.queue.keys, read.queue.stamps, strict=True)) == items, case
    assert (read.objects, read.files, read.journal, read.objects_folder) == (
        12345, len(items), (7, 8, 900), (3, 4),
    )  # fmt: skip
    assert (read.walked, read.written) == (1000.5, 2000.25)
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_no_index_is_none(tmp_path: Path) -> None:
    assert manager_index.consume(tmp_path / "index") is None


Damage = Callable[[bytes, int], bytes]  # (the file, its header's size) -> the file damaged


def _cut(at: int, *, after_header: bool = True) -> Damage:
    return lambda data, header: data[: header + at if after_header else at]


def _flip(at: int) -> Damage:
    return lambda data, header: (
        data[: header + at] + bytes([data[header + at] ^ 1]) + data[header + at + 1 :]
    )


def _set_version(data: bytes, header: int) -> bytes:
    return data[:8] + struct.pack("=I", manager_index.VERSION + 1) + data[12:]


# The queue damaged: STR_KEYS (4 items, one 32-byte key, 3 str ones).
DAMAGES: list[tuple[str, Damage]] = [
    ("empty", _cut(0, after_header=False)),
    ("the header cut", _cut(-1)),
    ("the lengths cut", _cut(2)),
    ("the key cut", _cut(4 + 20)),
    ("the stamps cut", _cut(4 + 32 + 50)),
    ("a str key cut", _cut(-3, after_header=False)),
    ("another version", _set_version),
    ("another magic", lambda data, header: b"X" + data[1:]),
    ("a key's byte changed", _flip(4 + 10)),
    ("a length changed", _flip(1)),
    ("a stamp's byte changed", _flip(4 + 32 + 3)),
    ("a str key's byte changed", _flip(4 + 32 + 64 + 6)),
    ("a byte more", lambda data, header: data + b"\0"),
]


@pytest.mark.parametrize(("case", "damage"), DAMAGES)
def test_a_damaged_index_is_refused_and_deleted(tmp_path: Path, case: str, damage: Damage) -> None:
    path = tmp_path / "index"
    header = manager_index.write(path, index_of([]))  # an empty queue's: the header alone
    manager_index.write(path, index_of(STR_KEYS))
    path.write_bytes(damage(path.read_bytes(), header))
    with pytest.raises(BadIndex):
        manager_index.consume(path)
    assert not path.exists(), case


# (index files in state/ before a master with pid 42 starts) -> (those after its take-over)
TAKE_OVER = [
    ((), ()),
    (("index",), ("index.42",)),  # the last clean stop's, for this master's manager
    (("index.7",), ()),  # taken by a master whose manager never read it: a crash, walk
    (("index", "index.7"), ("index.42",)),
    (("index.tmp", "journal"), ("index.tmp", "journal")),  # not an index taken over
]


@pytest.mark.parametrize(("before", "after"), TAKE_OVER)
def test_a_master_takes_the_index_over_for_its_manager(
    tmp_path: Path, before: tuple[str, ...], after: tuple[str, ...]
) -> None:
    for name in before:
        (tmp_path / name).write_bytes(name.encode())
    manager_index.take_over(tmp_path, 42)
    assert tuple(sorted(p.name for p in tmp_path.iterdir())) == after
    if "index" in before:
        assert (tmp_path / "index.42").read_bytes() == b"index"
