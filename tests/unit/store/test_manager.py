"""The cache manager on a real folder: what it counts (as du would) from the journal alone,
what it evicts, and the journal's records and the queue's packing as tables."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store import journal
from wsgi_proxy.store import manager as manager_module
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.journal import Added, Cleared, Removed
from wsgi_proxy.store.lru_queue import LruQueue
from wsgi_proxy.store.manager import CacheManager, Usage, counted, current_usage, unwaited

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


UNWAITED = [
    # (total, limit, max_size, deleted at the idle priority)
    (1000, 1000, 1000, False),  # at the limit: the workers store, and wait for room
    (1020, 1000, 1000, False),  # at PAUSE_ABOVE: still storing
    (1021, 1000, 1000, True),  # over it: they have stopped storing
    (2000, 1000, 1000, True),  # a restart over a halved limit
    (2000, 900, 1000, False),  # the disk is filling up (its reserve lowered the limit)
    (0, 1000, 1000, False),
]


@pytest.mark.parametrize(("total", "limit", "max_size", "expected"), UNWAITED)
def test_unwaited(total: int, limit: int, max_size: int, expected: bool) -> None:
    assert unwaited(total, limit, max_size) is expected


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


def test_the_folders_growth_counts_as_du_counts_it(store: Store) -> None:
    """A folder entries are published in takes on blocks as names are added to it, and
    keeps them when they go (ext4): no journal record tells it, the manager measures it,
    and the next manager starts from the index with it."""
    put(store, "GET http://o/0", b"x" * 100)
    manager = CacheManager(store, 10**9)
    manager.step(NOW)
    folder = store.primary_path("GET http://o/0").parent
    before = os.lstat(folder).st_blocks
    for i in range(400):  # long names, as the store's: some blocks' worth
        (folder / f"{i:064x}").touch()
    for i in range(400):
        (folder / f"{i:064x}").unlink()
    if os.lstat(folder).st_blocks == before:
        pytest.skip("this filesystem does not grow folders by blocks (tmpfs)")
    later = NOW + manager_module.FOLDERS_INTERVAL
    manager.step(later)
    manager.step(later)  # the state files it wrote count from the next round
    assert manager.usage.total == du(store.root)
    manager.save_index(later)
    after = CacheManager(store, 10**9)
    after.step(later)
    assert after.loaded_from == "index"
    after.step(later)
    assert after.usage.total == du(store.root)


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


@pytest.mark.parametrize("threads", [1, 4])  # deleting on the manager's thread, or on four
def test_eviction_takes_the_least_recently_used_down_to_the_low_water_mark(
    store: Store, threads: int
) -> None:
    paths = aged(store, 40, 100_000)
    dead = store.objects / "00" / ".tmp.999999999.dead"
    dead.parent.mkdir(exist_ok=True)
    dead.write_bytes(b"y" * 500)
    loaded = CacheManager(store, 10**9)
    loaded.load(NOW)
    limit = loaded.usage.total // 2
    manager = CacheManager(store, limit, deleting_threads=threads)
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


# ---- the index a clean stop leaves (manager_index.py) -------------------------------------


def stopped_cleanly(store: Store) -> CacheManager:
    """A manager that walked a folder of aged entries (one varying: 64-byte keys; a file
    of an odd name: a str key), then stopped cleanly, writing its index."""
    aged(store, 6, 10_000)
    put(store, "GET http://o/v", b"v" * 3000, vary=(("accept", "a"),))
    odd = store.objects / "ab" / "odd-name"
    odd.parent.mkdir(exist_ok=True)
    odd.write_bytes(b"o" * 5000)
    manager = CacheManager(store, 10**9)
    manager.step(NOW)
    put(store, "GET http://o/journaled", b"j" * 7000)  # read by the final read only
    manager.save_index(NOW)
    assert (store.state / "index").exists()
    # What stats says of the stopped server: the index counts, like du.
    assert current_usage(store, _state(store)).total == du(store.root)
    assert journal_bytes(store) > 0  # a position that means something
    return manager


def journal_bytes(store: Store) -> int:
    return (store.state / journal.NAME).stat().st_size


def walked(store: Store) -> CacheManager:
    scan = CacheManager(store, 10**9)
    scan.load(NOW, from_index=False)
    return scan


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ("index.5", "index"),  # this master's: taken over at its start
        ("index.4", "walk"),  # another master's (gone by then): never used
    ],
)
def test_a_manager_starts_from_the_index_its_master_took_over(
    store: Store, taken: str, expected: str
) -> None:
    before = stopped_cleanly(store)
    os.rename(store.state / "index", store.state / taken)
    after = CacheManager(store, 10**9, index_names=("index.5", "index"))
    after.load(NOW)
    assert after.loaded_from == expected
    assert (after.objects, after.files) == (before.objects, before.files)
    assert not (store.state / "index.5").exists()


def test_the_next_manager_starts_from_the_index_and_reads_the_journal_on(store: Store) -> None:
    """Same queue, in the same order, same counts; what the journal recorded since the
    stop is applied by the next read; the index is gone once read."""
    before = stopped_cleanly(store)
    assert {len(k) if isinstance(k, bytes) else str for k in before.queue.keys} == {32, 64, str}
    put(store, "GET http://o/late", b"l" * 20_000)  # after the stop: in the journal only
    store.remove(store.primary_path("GET http://o/2"))
    after = CacheManager(store, 10**9)
    after.load(NOW)
    assert after.loaded_from == "index"
    assert not (store.state / "index").exists()
    assert list(after.queue.keys) == list(before.queue.keys)
    assert list(after.queue.stamps) == list(before.queue.stamps)
    assert (after.objects, after.files) == (before.objects, before.files)
    assert after.walked_at == before.walked_at
    after.step(NOW)
    scan = walked(store)
    assert (after.objects, after.files) == (scan.objects, scan.files)
    assert after.files == stored_files(store)
    after.step(NOW)  # the state files it wrote count from the next round
    assert after.usage.total == du(store.root)
    assert _state(store)["loaded_from"] == "index"


def _replace_journal(store: Store) -> None:
    """Another file at the journal's path (made before the old one goes: another inode),
    longer than the one read."""
    new = store.state / "journal.new"
    new.write_bytes((store.state / journal.NAME).read_bytes() * 2)
    os.replace(new, store.state / journal.NAME)


def _shorten_journal(store: Store) -> None:
    os.truncate(store.state / journal.NAME, journal_bytes(store) - 1)


def _damage_index(store: Store) -> None:
    index = store.state / "index"
    index.write_bytes(index.read_bytes()[:-1])


def _other_version(store: Store) -> None:
    index = store.state / "index"
    data = index.read_bytes()
    index.write_bytes(data[:8] + (99).to_bytes(4, sys.byteorder) + data[12:])


FALLBACKS = [
    ("a truncated index", _damage_index),
    ("another version", _other_version),
    ("a journal with another inode", _replace_journal),
    ("a journal shorter than the offset read", _shorten_journal),
    ("no journal", lambda store: (store.state / journal.NAME).unlink()),
    ("cleared while stopped", lambda store: store.clear()),
]


@pytest.mark.parametrize(("case", "change"), FALLBACKS)
def test_an_index_that_is_no_longer_true_is_deleted_and_the_folder_walked(
    store: Store, case: str, change: Callable[[Store], object]
) -> None:
    stopped_cleanly(store)
    change(store)
    # Added by hand: counted by a walk, never from the index.
    (store.objects / "cd").mkdir(exist_ok=True)
    (store.objects / "cd" / "by-hand").write_bytes(b"h" * 9000)
    manager = CacheManager(store, 10**9)
    manager.load(NOW)
    assert manager.loaded_from == "walk", case
    assert not (store.state / "index").exists()
    scan = walked(store)
    assert (manager.objects, manager.files, len(manager.queue)) == (
        scan.objects, scan.files, len(scan.queue),
    )  # fmt: skip
    assert manager.files == stored_files(store)


def test_a_manager_that_never_counted_writes_no_index(store: Store) -> None:
    CacheManager(store, 10**9).save_index(NOW)
    assert not (store.state / "index").exists()


def test_a_rescan_due_at_a_restart_waits_until_the_folder_is_under_its_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk before the stop is older than RESCAN_INTERVAL: the restart from the index
    evicts first (a walk would hold eviction back), then walks."""
    paths = aged(store, 20, 100_000)
    long_ago = NOW - manager_module.RESCAN_INTERVAL - 60
    before = CacheManager(store, 10**9)
    before.step(long_ago)
    before.save_index(long_ago)
    after = CacheManager(store, before.usage.total // 2)
    monkeypatch.setattr(manager_module, "BUDGET", 0.0)  # no eviction within a round
    after.step(NOW)
    after.step(NOW)
    assert after.loaded_from == "index"  # over the limit still: no walk
    assert all(p.exists() for p in paths)
    monkeypatch.undo()
    after.step(NOW)
    assert after.loaded_from == "index"
    assert after.usage.total <= after.max_size * manager_module.HIGH_WATER
    assert not paths[0].exists()
    after.step(NOW)
    assert after.loaded_from == "walk"
    assert after.walked_at == NOW
    after.step(NOW)
    assert after.loaded_from == "walk" and after.loaded_at == NOW  # not again
