"""The eviction scan on a real folder: which files are the oldest, and what is counted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wsgi_proxy.store.eviction import oldest_files, scan_objects

NOW = time.time()
# name: (size, age in seconds); spread over two folders, as the store's objects are.
FILES = {"aa/old": (100, 500), "bb/older": (300, 600), "aa/new": (50, 10), "bb/mid": (200, 100)}
LIVE_TMP = f"aa/.tmp.{os.getpid()}.live"  # a writer that is alive: this test's process
DEAD_TMP = "bb/.tmp.999999999.dead"  # no such process


def make_files(root: Path) -> None:
    for name, (size, age) in {**FILES, LIVE_TMP: (1000, 1), DEAD_TMP: (7, 1)}.items():
        path = root / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * size)
        os.utime(path, (NOW - age, NOW - age))


OLDEST_CASES: list[tuple[str, float, list[str]]] = [
    ("nothing to free", 0, []),
    ("the oldest file is enough", 300, ["bb/older"]),
    ("one byte more takes the next oldest", 301, ["bb/older", "aa/old"]),
    ("exactly the two oldest", 400, ["bb/older", "aa/old"]),
    ("three", 401, ["bb/older", "aa/old", "bb/mid"]),
    ("more than all holds: all of them, never a writer's temporary file", 10**6,
     ["bb/older", "aa/old", "bb/mid", "aa/new"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "excess", "expected"), OLDEST_CASES)
def test_oldest_files(case: str, excess: float, expected: list[str], tmp_path: Path) -> None:
    make_files(tmp_path)
    found = oldest_files(tmp_path, NOW, excess)
    assert [str(Path(f.path).relative_to(tmp_path)) for f in found] == expected, case
    assert [f.size for f in found] == [FILES[name][0] for name in expected], case


def test_scan_counts_stored_files_and_live_writers_bytes_and_removes_dead_ones(
    tmp_path: Path,
) -> None:
    make_files(tmp_path)
    scan = scan_objects(tmp_path, NOW)
    assert scan.entries == len(FILES)
    assert scan.total == sum(size for size, _ in FILES.values()) + 1000
    assert not (tmp_path / DEAD_TMP).exists()
    assert (tmp_path / LIVE_TMP).exists()
