"""Each worker's memos of small entries: the store's hot set (hotset.py) and the proxy's
ready answers (ready.py). Real files in a temporary folder."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wsgi_proxy.core import reuse
from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.flow.ready_answers import Ready, ReadyAnswers, is_plain
from wsgi_proxy.store.cache import TOUCH_INTERVAL, Store
from wsgi_proxy.store.hits import Hit, PassMarker
from wsgi_proxy.store.hot_set import HotSet, Remembered, stamp_of
from wsgi_proxy.store.repeats import RecentLookups

KEY = "GET http://o/x"
NOW = time.time()


@pytest.fixture(autouse=True)
def _fine_timestamps(request: pytest.FixtureRequest) -> None:
    """The memos are on only where the filesystem keeps nanosecond mtimes (store.py)."""
    if "store" in request.fixturenames:
        store: Store = request.getfixturevalue("store")
        if not store.fine_timestamps:
            pytest.skip(f"{store.root}: no nanosecond mtimes there, so no memos")


def put(store: Store, body: bytes) -> Path:
    head = ResponseHead(200, "OK", (("Cache-Control", "max-age=60"),))
    writer = store.begin(Entry(KEY, head, NOW, NOW, (), 0), expected_length=None, max_body=10**7)
    assert writer is not None
    writer.write(body)
    assert writer.commit()
    return store.primary_path(KEY)


def hit(store: Store, now: float = NOW) -> Hit:
    found = store.lookup(KEY, (), now)
    assert isinstance(found, Hit)
    found.close()
    return found


# ---- the hot set ------------------------------------------------------------------------


def _same_bytes_again(path: Path) -> None:
    path.write_bytes(path.read_bytes())  # same size, same inode, a new mtime


def _replaced(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)  # a new inode (perhaps the old number again), a new mtime


def _touched(path: Path) -> None:
    os.utime(path)


def _removed(path: Path) -> None:
    path.unlink()


CHANGES: list[tuple[str, Callable[[Path], None]]] = [
    ("written in place", _same_bytes_again),
    ("replaced", _replaced),
    ("touched", _touched),
    ("removed", _removed),
]


OLD_NS = 1_600_000_000_000_000_000  # an mtime long past: any change makes another


@pytest.mark.parametrize(("case", "change"), CHANGES)
def test_a_remembered_file_is_forgotten_when_the_file_changes(
    tmp_path: Path, case: str, change: Callable[[Path], None]
) -> None:
    path = tmp_path / "entry"
    path.write_bytes(b"x" * 100)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    hot = HotSet(4)
    hot.add(str(path), Remembered(stamp_of(path.stat()), {"kind": "pass"}, 10, b""))
    assert hot.get(str(path)) is not None, case
    change(path)
    assert hot.get(str(path)) is None, case
    assert len(hot) == 0, case


def test_the_hot_set_keeps_the_newest(tmp_path: Path) -> None:
    hot = HotSet(3)
    for i in range(5):
        path = tmp_path / f"e{i}"
        path.write_bytes(b"")
        hot.add(str(path), Remembered(stamp_of(path.stat()), {}, 0, b""))
    assert [hot.get(str(tmp_path / f"e{i}")) is not None for i in range(5)] == [
        False, False, True, True, True
    ]  # fmt: skip


def test_a_small_body_is_read_from_the_disk_until_checked_then_from_memory(store: Store) -> None:
    put(store, b"small body")
    first = hit(store)
    assert first.file is not None  # not checked yet: not remembered
    assert store.verify(first, first.read(0, 10))
    second = hit(store)
    assert second.file is not None  # checked: this open is remembered
    third = hit(store)
    assert third.file is None
    assert third.read(0, 10) == b"small body"
    assert third.stamp == second.stamp


def test_an_entry_not_looked_up_lately_is_not_remembered(store: Store) -> None:
    """The memos take an entry from its second lookup within a while (repeats.py): with
    hits spread over many entries, one asked for once in a long while would only churn
    them. A window of 2 lookups here instead of the store's 4,096."""
    store.recent = RecentLookups(2)
    put(store, b"seldom")
    first = hit(store)
    assert store.verify(first, first.read(0, 6))  # checked: worth remembering from now on
    for other in ("GET http://o/a", "GET http://o/b", "GET http://o/c", "GET http://o/d"):
        assert store.lookup(other, (), NOW) is None  # misses count as lookups: two windows
    lately = hit(store)
    assert (lately.again, lately.file is not None, len(store.hot)) == (False, True, 0)
    again = hit(store)  # the second lookup in a while: remembered
    assert (again.again, again.file is not None, len(store.hot)) == (True, True, 1)
    assert hit(store).file is None


def test_a_large_body_is_never_remembered(store: Store) -> None:
    put(store, b"y" * 20_000)
    for _ in range(3):
        found = store.lookup(KEY, (), NOW)
        assert isinstance(found, Hit)
        with contextlib.closing(found):
            assert found.file is not None
            assert store.verify(found)
    assert len(store.hot) == 0


def test_a_remembered_entry_is_republished_whole_after_a_304(store: Store) -> None:
    path = put(store, b"refresh me")
    for _ in range(2):
        assert store.verify(hit(store))
    remembered = hit(store)
    assert remembered.file is None
    fresher = Entry(KEY, ResponseHead(200, "OK", (("Cache-Control", "max-age=99"),)), NOW, NOW,
                    (), 10)  # fmt: skip
    store.refresh(remembered, fresher)
    again = store.lookup(KEY, (), NOW)
    assert isinstance(again, Hit)
    with contextlib.closing(again):
        assert again.file is not None  # a new file: read from the disk
        assert again.entry.head.get("cache-control") == "max-age=99"
        assert again.read(0, again.entry.body_length) == b"refresh me"
        assert store.verify(again)
    assert path.exists()


def test_pass_markers_are_remembered(store: Store) -> None:
    store.publish_marker(KEY, {"kind": "pass", "until": NOW + 60})
    for _ in range(3):
        assert isinstance(store.lookup(KEY, (), NOW), PassMarker)
    assert len(store.hot) == 1
    store.invalidate(KEY)
    assert store.lookup(KEY, (), NOW) is None
    assert len(store.hot) == 0


def test_each_publish_sets_an_mtime_of_its_own_and_the_memos_need_that(store: Store) -> None:
    """Files are told apart by inode and mtime: a publish sets the mtime to the nanosecond
    of its clock, not the kernel's tick, and the memos are on only where it is kept."""
    before = time.time_ns()
    first = put(store, b"a").stat().st_mtime_ns
    second = put(store, b"b").stat().st_mtime_ns
    assert before <= first < second <= time.time_ns()


def test_a_publish_refused_its_mtime_turns_the_memos_off(store: Store) -> None:
    put(store, b"kept")
    for _ in range(2):
        assert store.verify(hit(store))
    assert len(store.hot) == 1
    store.lose_fine_timestamps(PermissionError("utime refused"))
    assert not store.fine_timestamps
    assert hit(store).file is not None  # read from the disk
    assert len(store.hot) == 0


def test_an_old_file_is_touched_and_forgotten_once(store: Store) -> None:
    path = put(store, b"lru")
    old = NOW - 2 * TOUCH_INTERVAL
    os.utime(path, (old, old))
    for _ in range(2):
        assert store.verify(hit(store))
    assert path.stat().st_mtime > NOW - 5  # touched by the first lookup
    assert hit(store).file is None  # remembered with its new mtime


@pytest.mark.parametrize(("interval", "age", "touched"), [(2.0, 3.0, True), (2.0, 1.0, False),
                                                         (600.0, 300.0, False)])  # fmt: skip
def test_the_touch_interval_is_the_stores_setting(
    tmp_path: Path, interval: float, age: float, touched: bool
) -> None:
    store = Store(tmp_path, lock_stripes=8, max_variants=2, touch_interval=interval)
    store.prepare()
    path = put(store, b"lru")
    old = NOW - age
    os.utime(path, (old, old))
    assert store.is_unchanged(str(path), stamp_of(path.stat()), NOW) is not touched
    hit(store)
    assert (path.stat().st_mtime > NOW - 0.5) is touched


def test_is_unchanged(store: Store) -> None:
    path = put(store, b"z")
    stamp = stamp_of(path.stat())
    now = time.time()
    assert store.is_unchanged(str(path), stamp, now)
    assert not store.is_unchanged(str(path), stamp, now + TOUCH_INTERVAL + 5)  # touch due
    path.write_bytes(b"x" * path.stat().st_size)  # in place: the mtime the kernel's
    assert not store.is_unchanged(str(path), stamp, now)
    path.unlink()
    assert not store.is_unchanged(str(path), stamp, now)


def test_hold_unchanged_gives_the_held_file_while_the_path_shows_it(store: Store) -> None:
    path = put(store, b"held")
    stamp = stamp_of(path.stat())
    now = time.time()
    held = store.hold_unchanged(str(path), stamp, now)
    assert held is not None and held.stamp == stamp
    assert store.hold_unchanged(str(path), stamp, now) is held  # not opened again
    assert store.hold_unchanged(str(path), stamp, now + TOUCH_INTERVAL + 5) is None
    assert len(store.open_files) == 0  # the touch is due: let go
    assert store.hold_unchanged(str(path), stamp, now) is not None
    put(store, b"new!")  # the same size, a new file at the path
    assert store.hold_unchanged(str(path), stamp, now) is None
    assert len(store.open_files) == 0
    assert os.pread(held.fd, 4, path.stat().st_size - 4) == b"held"  # still whole for its holder


def test_a_publish_refused_its_mtime_lets_the_open_files_go(store: Store) -> None:
    path = put(store, b"held")
    stamp = stamp_of(path.stat())
    assert store.hold_unchanged(str(path), stamp, time.time()) is not None
    assert len(store.open_files) == 1
    store.lose_fine_timestamps(PermissionError("utime refused"))
    assert len(store.open_files) == 0
    assert store.hold_unchanged(str(path), stamp, time.time()) is not None  # given, not held
    assert len(store.open_files) == 0


# ---- ready answers ----------------------------------------------------------------------

BASE = {"REQUEST_METHOD": "GET", "RAW_URI": "/a?b=1", "HTTP_ACCEPT": "*/*",
        "HTTP_USER_AGENT": "ua", "HTTP_AUTHORIZATION": "Basic x"}  # fmt: skip
PLAIN_CASES: list[tuple[str, dict[str, str], bool]] = [
    ("GET", {}, True),
    ("HEAD", {"REQUEST_METHOD": "HEAD"}, True),
    ("POST", {"REQUEST_METHOD": "POST"}, False),
    ("OPTIONS", {"REQUEST_METHOD": "OPTIONS"}, False),
    ("absolute form", {"RAW_URI": "http://o/a"}, False),
    ("Cache-Control", {"HTTP_CACHE_CONTROL": "max-age=0"}, False),
    ("Pragma", {"HTTP_PRAGMA": "no-cache"}, False),
    ("If-None-Match", {"HTTP_IF_NONE_MATCH": '"a"'}, False),
    ("If-Modified-Since", {"HTTP_IF_MODIFIED_SINCE": "Sun, 06 Nov 1994 08:49:37 GMT"}, False),
    ("Range", {"HTTP_RANGE": "bytes=0-1"}, False),
    ("If-Range", {"HTTP_IF_RANGE": '"a"'}, False),
    ("an empty Cache-Control still counts", {"HTTP_CACHE_CONTROL": ""}, False),
    ("other fields", {"HTTP_X_FOO": "1", "HTTP_COOKIE": "a=b"}, True),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "expected"), PLAIN_CASES)
def test_is_plain(case: str, changes: dict[str, str], expected: bool) -> None:
    assert is_plain({**BASE, **changes}) is expected, case


def test_every_reuse_field_makes_a_request_not_plain() -> None:
    for name in reuse.REUSE_REQUEST_FIELDS:
        key = "HTTP_" + name.upper().replace("-", "_")
        assert not is_plain({**BASE, key: "x"}), name


def ready(body: bytes | None, size: int = 0) -> Ready:
    return Ready((0, 0, size, 0), "/nowhere", "200 OK", (), body, 40, size, NOW,
                 reuse.PlainFreshness(0.0, 60.0), 0)  # fmt: skip


def test_ready_answers_are_bounded_by_their_bytes() -> None:
    answers = ReadyAnswers(100, 10)
    for i in range(4):
        answers.add(f"/{i}", ready(b"x" * 40))
    assert [answers.get(f"/{i}") is not None for i in range(4)] == [False, False, True, True]
    assert answers.held == 80
    answers.add("/3", ready(b"y" * 10))  # replaces the answer for /3
    assert answers.held == 50
    answers.add("/big", ready(b"z" * 101))  # over the whole budget: not kept
    assert answers.get("/big") is None
    answers.forget("/2")
    assert (answers.held, len(answers)) == (10, 1)


def test_ready_answers_sent_from_their_files_are_bounded_by_their_number() -> None:
    answers = ReadyAnswers(100, 3)
    for i in range(5):
        answers.add(f"/{i}", ready(None, 10 << 20))  # held on disk: no bytes in memory
    assert [answers.get(f"/{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert answers.held == 0
    answers.add("/m", ready(b"x" * 60))
    assert (len(answers), answers.held) == (3, 60)
