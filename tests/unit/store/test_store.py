"""The filesystem store on a real folder: atomic publish, short bodies, corruption, Vary."""

from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store.cache import Store
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
