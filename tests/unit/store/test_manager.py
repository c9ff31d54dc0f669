"""The cache manager on a real folder: what it counts (as du would) from the journal alone,
what it evicts, and the journal's records and the queue's packing as tables."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store import journal
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.journal import Added, Cleared, Removed
from wsgi_proxy.store.lru_queue import LruQueue
from wsgi_proxy.store.manager import CacheManager, Usage, counted, current_usage

NOW = time.time()
DIGEST = "ab" * 32
OTHER = "cd" * 32


def entry(key: str, vary: tuple[tuple[str, str | None], ...] = ()) -> Entry:
    return Entry(key, ResponseHead(200, "OK", (("Cache-Control", "max-age=60"),)), NOW, NOW,
                 vary, 0)  # fmt: skip


def put(store: Store, key: str, body: bytes, vary: tuple[tuple[str, str | None], ...] = ()) -> None:
    writer = store.begin(entry(key, vary), expected_length=len(body), max_body=10**7)
    assert writer is not None
    writer.write(body)
    assert writer.commit()


def du(folder: Path) -> int:
    """What ``du -s -B1`` counts under ``folder``, the folder itself included."""
    total = os.lstat(folder).st_blocks * 512
    for path in folder.rglob("*"):
        total += os.lstat(path).st_blocks * 512
    return total


def stored_files(store: Store) -> int:
    return sum(1 for p in store.objects.rglob("*") if p.is_file())


JOURNAL_LINES = [
    ("+ 4096 -1 ab/cd", Added("ab/cd", 4096, -1)),
    ("+ 8192 4096 ab/cd.d/ef", Added("ab/cd.d/ef", 8192, 4096)),
    ("+ 4096 -1 ab/cd.d/", Added("ab/cd.d/", 4096, -1)),
    ("- 4096 ab/cd", Removed("ab/cd", 4096)),
    ("C", Cleared()),
    ("+ 4096 ab/cd", None),  # a field missing
    ("+ x -1 ab/cd", None),
    ("- 40", None),
    ("", None),
    ("? 1 2 3", None),
]


@pytest.mark.parametrize(("line", "record"), JOURNAL_LINES)
def test_journal_lines(line: str, record: journal.Record | None) -> None:
    assert journal.parse(line) == record


COUNTS = [
    ("a new file", [Added("a", 4096, -1)], Usage(4096, 1, 0, 0)),
    ("a file replaced", [Added("a", 4096, -1), Added("a", 8192, 4096)], Usage(8192, 1, 0, 0)),
    ("a folder made counts bytes, not files", [Added("a.d/", 4096, -1)], Usage(4096, 0, 0, 0)),
    ("removed", [Added("a", 4096, -1), Removed("a", 4096)], Usage(0, 0, 0, 0)),
    ("never below zero", [Removed("a", 4096)], Usage(0, 0, 0, 0)),
    ("a clear moves it all to the trash",
     [Added("a", 4096, -1), Added("b", 4096, -1), Cleared(), Added("c", 4096, -1)],
     Usage(4096, 1, 0, 8192)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "records", "expected"), COUNTS)
def test_counted(case: str, records: list[journal.Record], expected: Usage) -> None:
    assert counted(Usage(0, 0, 0, 0), records) == expected, case


@pytest.mark.parametrize(
    "path", [f"ab/{DIGEST}", f"ab/{DIGEST}.d/{OTHER}", "ab/odd-name", f"zz/{DIGEST[:-1]}x"]
)
def test_the_queue_gives_back_the_paths_and_times_it_was_given(path: str) -> None:
    queue = LruQueue()
    queue.append(path, NOW, 5000)
    assert queue.popleft() == (path, int(NOW))


def test_the_journal_counts_what_a_scan_counts_and_what_du_counts(store: Store) -> None:
    """Published where none was, replaced, a variant and its marker, removed, cleared: the
    manager's figures from the journal alone are a fresh scan's, and du's."""
    manager = CacheManager(store, 10**9)
    manager.step(NOW)

    def check() -> None:
        manager.step(NOW)
        scan = CacheManager(store, 10**9)
        scan.load(NOW)
        assert (manager.objects, manager.files) == (scan.objects, scan.files)
        assert manager.usage.total == scan.usage.total
        assert manager.files == stored_files(store)
        # du of the whole folder: the manager counts the objects, state and lock folders.
        assert manager.usage.total == du(store.root) - du_trash(store)

    check()
    for i in range(3):
        put(store, f"GET http://o/{i}", b"x" * 100)
    check()
    put(store, "GET http://o/0", b"y" * 9000)  # replaced by a larger one
    check()
    put(store, "GET http://o/v", b"v", vary=(("accept", "a"),))
    check()  # the variant, its folder and its Vary marker
    store.invalidate("GET http://o/v")
    store.remove(store.primary_path("GET http://o/1"))
    check()
    store.clear()
    manager.step(NOW)
    assert manager.files == 0
    assert manager.trash == 0 or manager.trash > 0  # counted until deleted, then gone
    for _ in range(20):
        manager.step(NOW)
    assert not list(store.root.glob("trash.*"))
    assert manager.trash == 0
    check()


def du_trash(store: Store) -> int:
    return sum(du(p) for p in store.root.glob("trash.*"))


def test_a_clear_is_counted_until_its_folder_is_deleted(store: Store) -> None:
    manager = CacheManager(store, 10**9)
    for i in range(5):
        put(store, f"GET http://o/{i}", b"x" * 5000)
    manager.step(NOW)
    before = manager.objects
    store.clear()
    manager._apply(manager.reader.read(NOW))  # the journal, without a deletion round
    assert manager.trash == before
    assert manager.objects == manager.files == 0
    manager.step(NOW)
    assert manager.trash == 0
    assert not list(store.root.glob("trash.*"))


def aged(store: Store, count: int, size: int) -> list[Path]:
    """``count`` entries, the first the least recently used."""
    paths = []
    for i in range(count):
        put(store, f"GET http://o/{i}", b"x" * size)
        path = store.primary_path(f"GET http://o/{i}")
        os.utime(path, (NOW - 1000 + i, NOW - 1000 + i))
        paths.append(path)
    return paths


def test_eviction_takes_the_least_recently_used_down_to_the_low_water_mark(store: Store) -> None:
    paths = aged(store, 20, 100_000)
    dead = store.objects / "00" / ".tmp.999999999.dead"
    dead.parent.mkdir(exist_ok=True)
    dead.write_bytes(b"y" * 500)
    loaded = CacheManager(store, 10**9)
    loaded.load(NOW)
    limit = loaded.usage.total // 2
    manager = CacheManager(store, limit)
    manager.step(NOW)
    assert manager.usage.total <= limit * 0.98  # below the high-water mark (state files grew)
    assert manager.usage.total > limit * 0.8  # not much more than needed
    assert not dead.exists()
    survivors = [p.exists() for p in paths]
    assert survivors == sorted(survivors)  # the oldest went first
    assert survivors[-1] and not survivors[0]
    manager.step(NOW)  # the state files it wrote count from the next round
    assert manager.usage.total == du(store.root)
    assert store.usage.read_both() == (manager.usage.total, manager.files)


def test_a_file_used_since_it_was_queued_gets_a_second_chance(store: Store) -> None:
    paths = aged(store, 10, 10_000)
    manager = CacheManager(store, 10**9)
    manager.load(NOW)
    os.utime(paths[0], (NOW, NOW))  # a hit touched the oldest
    manager.max_size = manager.usage.total * 8 // 10
    manager.step(NOW)
    assert paths[0].exists()
    assert not paths[1].exists()


def test_published_files_are_queued_from_the_journal_and_evicted_in_order(store: Store) -> None:
    manager = CacheManager(store, 10**9)
    manager.step(NOW)
    for i in range(10):
        put(store, f"GET http://o/{i}", b"x" * 10_000)
    manager.step(NOW)
    assert len(manager.queue) == 10
    manager.max_size = manager.usage.total * 7 // 10
    manager.step(NOW)
    kept = [store.primary_path(f"GET http://o/{i}").exists() for i in range(10)]
    assert kept == sorted(kept) and not kept[0] and kept[-1]


def test_stats_figures_add_what_the_journal_recorded_since_the_manager_read_it(
    store: Store,
) -> None:
    manager = CacheManager(store, 10**9)
    manager.step(NOW)
    state = {**_state(store)}
    put(store, "GET http://o/late", b"x" * 5000)
    assert current_usage(store, state).files == manager.files + 1
    manager.step(NOW)
    assert current_usage(store, _state(store)) == manager.usage


def _state(store: Store) -> dict[str, object]:
    from wsgi_proxy.store.manager import read_state  # noqa: PLC0415

    state = read_state(store)
    assert state is not None
    return state


@pytest.mark.parametrize(
    ("error", "full"),
    [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False), (errno.EROFS, False)],
)
def test_a_write_refused_for_want_of_room_makes_room(store: Store, error: int, full: bool) -> None:
    """Far below the limit, a write refused for want of room (and only that) has the
    manager evict the least recently used down to 85 % of what is stored; opening the
    store again (each worker does) is no such signal."""
    paths = aged(store, 20, 100_000)
    manager = CacheManager(store, 10**12)
    manager.step(NOW)
    before = manager.objects
    Store(store.root.parent, lock_stripes=1, max_variants=1).prepare()
    time.sleep(0.01)  # the signal is an mtime
    store.note_write_error(OSError(error, os.strerror(error)))
    manager.step(NOW)
    assert (manager.objects <= before * 0.85) is full
    assert (not paths[0].exists()) is full
    assert paths[-1].exists()
