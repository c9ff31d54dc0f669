"""The filesystem store on a real folder: atomic publish, short bodies, corruption, Vary."""

from __future__ import annotations

import contextlib
import errno
import os
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.eviction import Evictor, scan_objects
from wsgi_proxy.store.hits import CheckedBodies, Hit, PassMarker

KEY = "GET http://o/x"
NOW = time.time()


def entry(vary: tuple[tuple[str, str | None], ...] = (), key: str = KEY) -> Entry:
    head = ResponseHead(200, "OK", (("Cache-Control", "max-age=60"), ("X-A", "1")))
    return Entry(key, head, NOW, NOW, vary, 0)


def put(store: Store, body: bytes, e: Entry | None = None, expected: int | None = None) -> bool:
    writer = store.begin(e or entry(), expected_length=expected, max_body=10**6)
    assert writer is not None
    for i in range(0, len(body), 7):
        writer.write(body[i : i + 7])
    return writer.commit()


def read(store: Store, request: tuple[tuple[str, str], ...] = ()) -> bytes | None:
    found = store.lookup(KEY, request, NOW)
    if not isinstance(found, Hit):
        return None
    with contextlib.closing(found):
        return found.read(0, found.entry.body_length)


def files(store: Store) -> list[Path]:
    return sorted(p for p in store.objects.rglob("*") if p.is_file())


def test_published_entry_round_trips(store: Store) -> None:
    assert put(store, b"hello world", expected=11)
    found = store.lookup(KEY, (), NOW)
    assert isinstance(found, Hit)
    assert found.entry.head.get("x-a") == "1"
    assert found.entry.body_length == 11
    found.close()
    assert read(store) == b"hello world"


def test_short_body_is_not_published(store: Store) -> None:
    assert not put(store, b"only half", expected=100)
    assert read(store) is None
    assert files(store) == []


def test_aborted_writer_leaves_nothing(store: Store) -> None:
    writer = store.begin(entry(), expected_length=None, max_body=10**6)
    assert writer is not None
    writer.write(b"partial")
    writer.abort()
    assert files(store) == []


def test_body_over_the_object_limit_is_dropped(store: Store) -> None:
    writer = store.begin(entry(), expected_length=None, max_body=10)
    assert writer is not None
    writer.write(b"x" * 11)
    assert not writer.commit()
    assert read(store) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],  # truncated body
        lambda data: data + b"x",  # extra byte
        lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:],  # header length
        lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:],  # header bytes
        lambda data: b"XXXX" + data[4:],  # magic
        lambda data: b"",
    ],
)
def test_corrupt_entry_is_a_miss_and_removed(store: Store, damage: object) -> None:
    assert put(store, b"hello world")
    (path,) = files(store)
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    assert read(store) is None
    assert not path.exists()


def test_vary_variants_are_selected_and_capped(store: Store) -> None:
    for lang in ("en", "fr", "de"):
        assert put(store, lang.encode(), entry(vary=(("accept-language", lang),)))
    # max_variants=2: the oldest ("en") went.
    assert read(store, (("Accept-Language", "de"),)) == b"de"
    assert read(store, (("Accept-Language", "fr"),)) == b"fr"
    assert read(store, (("Accept-Language", "en"),)) is None
    assert read(store, ()) is None


def test_plain_entry_replaces_variants(store: Store) -> None:
    assert put(store, b"en", entry(vary=(("accept-language", "en"),)))
    assert put(store, b"plain")
    assert read(store, (("Accept-Language", "en"),)) == b"plain"
    assert len(files(store)) == 1


def test_pass_marker_expires(store: Store) -> None:
    store.publish_marker(KEY, {"kind": "pass", "until": NOW + 10})
    assert store.lookup(KEY, (), NOW) == PassMarker(NOW + 10)
    assert store.lookup(KEY, (), NOW + 11) is None


def test_invalidate_removes_every_variant(store: Store) -> None:
    assert put(store, b"en", entry(vary=(("accept-language", "en"),)))
    store.invalidate(KEY)
    assert files(store) == []


def test_clear_while_a_reader_holds_the_file(store: Store) -> None:
    body = b"still readable " * 4096  # past the bytes read with the header: read from the file
    assert put(store, body)
    found = store.lookup(KEY, (), NOW)
    assert isinstance(found, Hit)
    assert len(found.early) < len(body)
    store.clear()
    assert read(store) is None
    with contextlib.closing(found):
        assert found.read(0, len(body)) == body
        assert found.read(len(body) - 9, len(body)) == b"readable "


def test_a_small_body_comes_with_the_header_read(store: Store) -> None:
    assert put(store, b"small")
    found = store.lookup(KEY, (), NOW)
    assert isinstance(found, Hit)
    with contextlib.closing(found):
        assert found.early == b"small"
        assert found.read(1, 4) == b"mal"


def test_eviction_removes_least_recently_used_and_dead_temp_files(store: Store) -> None:
    for i in range(10):
        assert put(store, b"x" * 1000, entry(key=f"GET http://o/{i}"))
        path = store.primary_path(f"GET http://o/{i}")
        os.utime(path, (NOW - 1000 + i, NOW - 1000 + i))
    dead = store.objects / "00" / ".tmp.999999999.dead"
    dead.parent.mkdir(exist_ok=True)
    dead.write_bytes(b"y" * 500)
    total = Evictor(store, max_size=5000).evict(NOW)
    assert total <= 5000 * 0.85
    assert not dead.exists()
    survivors = {p.name for p in files(store)}
    newest = store.primary_path("GET http://o/9").name
    oldest = store.primary_path("GET http://o/0").name
    assert newest in survivors
    assert oldest not in survivors
    assert scan_objects(store.objects, NOW).total == total
    assert store.usage.read() == total


@pytest.mark.parametrize(
    ("error", "full"),
    [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False), (errno.EROFS, False)],
)
def test_a_write_refused_for_want_of_room_makes_room_as_if_at_the_limit(
    store: Store, error: int, full: bool
) -> None:
    for i in range(10):  # 10 files far below the limit, the oldest first
        assert put(store, b"x" * 1000, entry(key=f"GET http://o/{i}"))
        path = store.primary_path(f"GET http://o/{i}")
        os.utime(path, (NOW - 1000 + i, NOW - 1000 + i))
    before = scan_objects(store.objects, NOW).total
    store.note_write_error(OSError(error, os.strerror(error)))
    assert store.disk_full.is_set() is full

    Evictor(store, max_size=10**9).tick(NOW)

    after = scan_objects(store.objects, NOW).total
    survivors = {p.name for p in files(store)}
    assert (after <= before * 0.85) is full
    assert (store.primary_path("GET http://o/0").name not in survivors) is full
    assert store.primary_path("GET http://o/9").name in survivors
    assert not store.disk_full.is_set()
    assert store.usage.read() == after


def early_hit(body: bytes, inode: int) -> Hit:
    """A hit whose whole body came with its header (no file open)."""
    head = ResponseHead(200, "OK", ())
    stored = Entry(KEY, head, NOW, NOW, (), len(body))
    return Hit(stored, f"/nowhere/{inode}", None, 0, zlib.crc32(body), (1, inode, 99, 0), body)


def test_checked_bodies_remember_matches_only_and_start_again_when_full() -> None:
    checked = CheckedBodies(limit=2)
    first, second, third = (early_hit(b"body %d" % i, i) for i in range(3))
    damaged = replace(first, body_crc=first.body_crc ^ 1)
    assert checked.check(damaged) is False
    assert not checked.is_checked(damaged.identity, damaged.body_crc)
    assert checked.check(first) and checked.check(second)
    assert checked.is_checked(first.identity, first.body_crc)
    assert not checked.is_checked(third.identity, third.body_crc)
    assert checked.check(third)  # the record was full: it started again
    assert not checked.is_checked(first.identity, first.body_crc)
    assert checked.is_checked(third.identity, third.body_crc)
    without_body = replace(early_hit(b"long body", 4), early=b"long")
    with pytest.raises(OSError, match="not open"):
        checked.check(without_body)


def test_the_usage_counter_counts_the_files_the_scan_would(store: Store) -> None:
    """Published where none was, replaced, a variant and its marker, removed, cleared: the
    counter's files are always the scan's, once flushed."""

    def counted() -> tuple[int, int]:
        store.usage.flush()
        return store.usage.read_both()

    def scanned() -> tuple[int, int]:
        scan = scan_objects(store.objects, NOW)
        return scan.total, scan.entries

    assert counted() == scanned() == (0, 0)
    for i in range(3):
        assert put(store, b"x" * 100, entry(key=f"GET http://o/{i}"))
    assert counted() == scanned() and counted()[1] == 3
    assert put(store, b"y" * 50, entry(key="GET http://o/0"))  # replaced: no new file
    assert counted() == scanned() and counted()[1] == 3
    assert put(store, b"v", entry(vary=(("accept", "a"),), key="GET http://o/v"))
    assert counted() == scanned() and counted()[1] == 5  # the variant and its Vary marker
    store.invalidate("GET http://o/v")
    store.remove(store.primary_path("GET http://o/1"))
    assert counted() == scanned() and counted()[1] == 2
    store.clear()
    assert counted() == scanned() == (0, 0)


def test_a_usage_file_of_bytes_alone_reads_as_no_files(store: Store) -> None:
    """The format before the files were counted: the next scan sets both."""
    store.usage.path.write_text("1234")
    assert store.usage.read_both() == (1234, 0)
    assert put(store, b"x", entry())
    Evictor(store, max_size=10**9).evict(NOW)
    assert store.usage.read_both() == (scan_objects(store.objects, NOW).total, 1)
