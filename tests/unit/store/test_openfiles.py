"""Each worker's held files (openfiles.py), on real files: given only for the stamp they
were opened with, bounded, dropped when they can no longer be given, closed only with
their last reference, and read by offset, never by position."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import pytest

from wsgi_proxy.core.errors import CacheDamaged
from wsgi_proxy.store.hot_set import stamp_of
from wsgi_proxy.store.open_files import OpenFile, OpenFiles
from wsgi_proxy.tuning.file_spans import FileSpan

LIFETIME = 60.0
HEADER = b"HEADER"
BODY = bytes(range(256)) * 40  # 10,240 bytes


def _entry(folder: Path, name: str, data: bytes = HEADER + BODY) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def _make(change: str, path: str) -> None:
    """What happens at ``path`` after a stamp was taken of it: a new file takes the path
    (a publish), it goes (an eviction, a purge), it gets a new mtime (the LRU touch), or
    nothing (any other name)."""
    if change == "replaced":
        os.replace(_entry(Path(path).parent, "new"), path)
    elif change == "removed":
        os.unlink(path)
    elif change == "touched":
        mtime = os.stat(path).st_mtime_ns + 1000
        os.utime(path, ns=(mtime, mtime))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_file_is_opened_once_and_given_for_its_stamp(tmp_path: Path) -> None:
    files = OpenFiles(LIFETIME)
    path = _entry(tmp_path, "a")
    stamp = stamp_of(os.stat(path))
    first = files.get(path, stamp)
    assert first is not None and first.stamp == stamp
    assert files.get(path, stamp) is first
    assert len(files) == 1


# What is at the path when the caller's stamp is asked for: (change, given).
CHANGES = [
    ("nothing", True),
    ("replaced", False),  # a new file took the path after the caller's stat
    ("removed", False),
    ("touched", False),  # the LRU touch: same inode, new mtime
]


@pytest.mark.parametrize(("change", "given"), CHANGES, ids=[c for c, _ in CHANGES])
def test_a_file_is_given_only_for_the_stamp_the_caller_saw(
    tmp_path: Path, change: str, given: bool
) -> None:
    files = OpenFiles(LIFETIME)
    path = _entry(tmp_path, "a")
    seen = stamp_of(os.stat(path))
    _make(change, path)
    opened = files.get(path, seen)
    assert (opened is not None) == given
    assert len(files) == int(given)


def test_a_new_stamp_at_the_path_replaces_the_held_file(tmp_path: Path) -> None:
    files = OpenFiles(LIFETIME)
    path = _entry(tmp_path, "a")
    old = files.get(path, stamp_of(os.stat(path)))
    os.replace(_entry(tmp_path, "b", b"other bytes"), path)
    new = files.get(path, stamp_of(os.stat(path)))
    assert old is not None and new is not None and new is not old
    assert os.pread(new.fd, 5, 0) == b"other"
    assert os.pread(old.fd, 6, 0) == HEADER  # the old file, still whole for its holders
    assert len(files) == 1


# (max_files, max_size, files asked for in turn, paths held after): the oldest opened goes
# first; a file over max_size is given but not held.
BOUNDS = [
    (3, 1 << 20, ["a", "b", "c"], ["a", "b", "c"]),
    (3, 1 << 20, ["a", "b", "c", "d", "e"], ["c", "d", "e"]),
    (3, 1 << 20, ["a", "b", "a", "c", "d"], ["b", "c", "d"]),  # a given again, not reopened
    (0, 1 << 20, ["a", "b"], []),
    (3, len(HEADER + BODY) - 1, ["a", "b"], []),
    (3, len(HEADER + BODY), ["a", "b"], ["a", "b"]),
]


@pytest.mark.parametrize(("max_files", "max_size", "asked", "held"), BOUNDS)
def test_held_files_are_bounded(
    tmp_path: Path, max_files: int, max_size: int, asked: list[str], held: list[str]
) -> None:
    files = OpenFiles(LIFETIME, max_files, max_size)
    paths = {name: _entry(tmp_path, name) for name in "abcde"}
    given: dict[str, OpenFile] = {}
    for name in asked:
        path = paths[name]
        file = files.get(path, stamp_of(os.stat(path)))
        assert file is not None
        assert os.pread(file.fd, len(HEADER), 0) == HEADER
        if name in given:  # held all along: the same file, not opened again
            assert file is given[name]
        given[name] = file
    assert len(files) == len(held)
    for name in held:  # given again without opening
        path = paths[name]
        assert files.get(path, stamp_of(os.stat(path))) is given[name], name
    for name in set(asked) - set(held):  # opened anew
        path = paths[name]
        assert files.get(path, stamp_of(os.stat(path))) is not given[name], name


# What happens to a held file before a prune, and whether the prune keeps it.
PRUNES = [
    ("nothing", True),
    ("replaced", False),  # evicted, purged or refreshed, and published anew
    ("removed", False),  # evicted, purged, cleared: its disk space must come free
    ("touched", False),  # the LRU touch: a new stamp at the path
    ("touch due", False),  # nothing changed, but its answers stop and it can never be given
]


@pytest.mark.parametrize(("change", "kept"), PRUNES, ids=[c for c, _ in PRUNES])
def test_prune_lets_go_of_files_that_can_no_longer_be_given(
    tmp_path: Path, change: str, kept: bool
) -> None:
    files = OpenFiles(LIFETIME)
    path, other = _entry(tmp_path, "a"), _entry(tmp_path, "b")
    if change == "touch due":
        past = time.time() - LIFETIME - 5
        os.utime(path, (past, past))
    stamp = stamp_of(os.stat(path))
    held = files.get(path, stamp)
    other_held = files.get(other, stamp_of(os.stat(other)))
    assert held is not None and other_held is not None
    _make(change, path)
    files.prune(time.time())
    assert len(files) == 1 + int(kept)
    assert files.get(other, stamp_of(os.stat(other))) is other_held
    if kept:
        assert files.get(path, stamp) is held


def test_forget_drops_a_held_file(tmp_path: Path) -> None:
    files = OpenFiles(LIFETIME)
    path = _entry(tmp_path, "a")
    assert files.get(path, stamp_of(os.stat(path))) is not None
    files.forget(path)
    files.forget(path)  # twice, or never held: no error
    assert len(files) == 0


def test_a_file_is_closed_with_its_last_reference_only(tmp_path: Path) -> None:
    files = OpenFiles(LIFETIME)
    path = _entry(tmp_path, "a")
    held = files.get(path, stamp_of(os.stat(path)))
    assert held is not None
    fd = held.fd
    span = FileSpan(held, len(HEADER), len(BODY))
    del held
    files.forget(path)
    os.unlink(path)
    gc.collect()
    assert _is_open(fd)  # an answer being sent keeps its file, gone from memo and disk
    assert span.read() == BODY
    del span
    assert not _is_open(fd)


def test_a_file_with_another_stamp_is_closed_at_once(tmp_path: Path) -> None:
    files = OpenFiles(LIFETIME)
    path = _entry(tmp_path, "a")
    seen = stamp_of(os.stat(path))
    before = len(os.listdir("/proc/self/fd"))
    os.replace(_entry(tmp_path, "b"), path)
    assert files.get(path, seen) is None
    assert len(os.listdir("/proc/self/fd")) == before


# (offset, size, reads asked, bytes each read gives): a span reads its own bytes by offset.
READS = [
    (len(HEADER), len(BODY), [-1], [BODY]),
    (len(HEADER), len(BODY), [4096, 4096, 4096, 10],
     [BODY[:4096], BODY[4096:8192], BODY[8192:], b""]),
    (len(HEADER), 100, [1000, 10], [BODY[:100], b""]),
    (0, len(HEADER), [2, -1], [HEADER[:2], HEADER[2:]]),
    (len(HEADER) + 10, 0, [-1], [b""]),
]  # fmt: skip


@pytest.mark.parametrize(("offset", "size", "asked", "expected"), READS)
def test_a_span_reads_its_bytes_by_offset(
    tmp_path: Path, offset: int, size: int, asked: list[int], expected: list[bytes]
) -> None:
    path = _entry(tmp_path, "a")
    held = OpenFiles(LIFETIME).get(path, stamp_of(os.stat(path)))
    assert held is not None
    span = FileSpan(held, offset, size)
    assert [span.read(n) for n in asked] == expected
    assert os.lseek(held.fd, 0, os.SEEK_CUR) == 0  # the shared position never moves


def test_a_span_past_the_files_end_is_damage(tmp_path: Path) -> None:
    path = _entry(tmp_path, "a")
    held = OpenFiles(LIFETIME).get(path, stamp_of(os.stat(path)))
    assert held is not None
    span = FileSpan(held, len(HEADER), len(BODY) + 50)
    assert span.read(len(BODY)) == BODY
    with pytest.raises(CacheDamaged, match="50 bytes short"):
        span.read()


def test_a_span_is_not_a_file_to_gunicorn(tmp_path: Path) -> None:
    """gunicorn's own sendfile sends what has a ``fileno()`` from its position."""
    path = _entry(tmp_path, "a")
    span = FileSpan(OpenFile(os.open(path, os.O_RDONLY), stamp_of(os.stat(path))), 0, 1)
    assert not hasattr(span, "fileno")
    assert not hasattr(span, "close")  # nothing closes a held file but its last reference
