"""The cache manager's deleting threads (deleter.py) and the queue's ``take``, on real files:
each file's outcome, in the order given, the same on one thread as on several."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wsgi_proxy.store.deleter import Deleter, Done, File, Outcome
from wsgi_proxy.store.lru_queue import LruQueue

NOW = int(time.time())
QUEUED = NOW - 100

# (what happened to the file since it was queued, the outcome expected)
CASES = [
    ("untouched", Outcome.DELETED),
    ("used since", Outcome.USED),
    ("removed since", Outcome.GONE),
    ("touched within the same second", Outcome.DELETED),
]


def make(folder: Path, i: int, case: str) -> str:
    rel = f"{i % 7:02x}/file-{i}"
    path = folder / rel
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"x" * 100)
    mtime = {"untouched": QUEUED - 5, "used since": NOW, "touched within the same second":
             QUEUED + 0.5}.get(case, QUEUED)  # fmt: skip
    os.utime(path, (mtime, mtime))
    if case == "removed since":
        path.unlink()
    return rel


def all_done(deleter: Deleter, files: list[File], background: bool) -> list[Done]:
    """``deleter.delete(files)``, then what an idle thread was still at, once done."""
    done = deleter.delete(files, background=background)
    deadline = time.monotonic() + 30
    while deleter.pending and time.monotonic() < deadline:
        time.sleep(0.01)
        done += deleter.delete([])
    return done


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("count", [1, 7, 300])
def test_each_file_gets_its_outcome_in_the_order_given(
    tmp_path: Path, threads: int, count: int, background: bool
) -> None:
    cases = [CASES[i % len(CASES)] for i in range(count)]
    files = [(make(tmp_path, i, case), QUEUED) for i, (case, _) in enumerate(cases)]
    deleter = Deleter(str(tmp_path), threads)
    try:
        done = all_done(deleter, files, background)
    finally:
        deleter.close()
    if background:  # what the idle thread was still at comes last
        done.sort(key=lambda item: files.index(item[0]))
    assert [file for file, _ in done] == files
    results = [result for _, result in done]
    assert [outcome for outcome, _ in results] == [expected for _, expected in cases]
    for (rel, _), (outcome, stat) in zip(files, results, strict=True):
        assert (tmp_path / rel).exists() == (outcome is Outcome.USED)
        assert (stat is None) == (outcome is Outcome.GONE)


def policies(prefix: str) -> set[int]:
    """The scheduling policies of this process's threads named ``prefix``_<n>."""
    return {os.sched_getscheduler(t.native_id or 0) for t in threading.enumerate()
            if t.name.rsplit("_", 1)[0] == prefix}  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_background_deleting_threads_run_at_the_idle_priority(tmp_path: Path) -> None:
    """Eviction nobody waits for runs on threads of its own at SCHED_IDLE; the rest at the
    caller's priority (a thread cannot be moved back without privileges)."""
    deleter = Deleter(str(tmp_path), 2)
    try:
        for background in (True, False, True):
            files = [(make(tmp_path, i, "untouched"), QUEUED) for i in range(8)]
            outcomes = {outcome for _, (outcome, _) in all_done(deleter, files, background)}
            assert outcomes == {Outcome.DELETED}
        assert policies("wsgi_proxy-evict-idle") == {os.SCHED_IDLE}
        assert policies("wsgi_proxy-evict") == {os.sched_getscheduler(0)} != {os.SCHED_IDLE}
    finally:
        deleter.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_background_deletion_goes_on_when_the_cpu_has_no_idle_time(tmp_path: Path) -> None:
    """Two busy processes on the one CPU this process is kept on: the idle thread gets next
    to no time (2,000 files would take it a minute), so the caller's thread deletes what
    it did not start; a task it was preempted in is not waited for, and its outcomes come
    with a later call once it ran."""
    cpu = min(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    files = [(make(tmp_path, i, "untouched"), QUEUED) for i in range(2000)]
    deleter = Deleter(str(tmp_path), 2)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for proc in busy:
            os.sched_setaffinity(proc.pid, {cpu})
        os.sched_setaffinity(0, {cpu})
        started = time.monotonic()
        done = [d for i in range(0, 2000, 250)
                for d in deleter.delete(files[i : i + 250], background=True)]  # fmt: skip
        took = time.monotonic() - started
    finally:
        os.sched_setaffinity(0, mine)
        for proc in busy:
            proc.kill()
            proc.wait()
    try:
        done += all_done(deleter, [], True)
    finally:
        deleter.close()
    assert took < 15, took
    assert sorted(file for file, _ in done) == sorted(files)
    assert {outcome for _, (outcome, _) in done} == {Outcome.DELETED}
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_file_that_cannot_be_deleted_is_gone_not_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "00"
    folder.mkdir()
    (folder / "sub").mkdir()  # unlink of a folder fails (EISDIR or EPERM)
    os.utime(folder / "sub", (QUEUED - 5, QUEUED - 5))
    done = Deleter(str(tmp_path), 1).delete([("00/sub", QUEUED)])
    assert done == [(("00/sub", QUEUED), (Outcome.GONE, None))]
    assert (folder / "sub").is_dir()


# (sizes queued in bytes, budget, most) -> how many are taken, oldest first
TAKE = [
    ([4096] * 10, 10_000, 100, 3),  # until the sizes reach the budget
    ([4096] * 10, 4096, 100, 1),
    ([4096] * 10, 10**9, 4, 4),  # at most ``most``
    ([4096] * 3, 10**9, 100, 3),  # the whole queue
    ([512, 100_000, 512], 1000, 100, 2),
    ([4096], 0, 100, 0),  # nothing needed
]


@pytest.mark.parametrize(("sizes", "budget", "most", "taken"), TAKE)
def test_take_removes_the_oldest_up_to_the_budget(
    sizes: list[int], budget: int, most: int, taken: int
) -> None:
    queue = LruQueue()
    digests = [f"{i + 1:02x}" * 32 for i in range(len(sizes))]
    paths = [f"{d[:2]}/{d}" for d in digests]  # as cache.py lays them out
    for i, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        queue.append(path, NOW + i, size)
    got = queue.take(budget, most)
    assert got == [(paths[i], NOW + i) for i in range(taken)]
    assert len(queue) == len(sizes) - taken
