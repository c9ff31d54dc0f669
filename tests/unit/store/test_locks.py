"""The URL lock stripes: marked with the URL they are held for, emptied on release."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from wsgi_proxy.store import fetch_locks as locks
from wsgi_proxy.store.fetch_locks import (
    FetchWaits,
    KeyLock,
    held_for_other,
    key_lock,
    try_acquire,
    wait_for_fetch,
)

MINE = "a" * 64
OTHER = "b" * 64


def test_a_held_lock_names_its_url_and_is_emptied_on_release(tmp_path: Path) -> None:
    path = tmp_path / "0.lock"
    lock = key_lock(str(path), MINE, 0)
    assert try_acquire(lock, 0)
    assert path.read_bytes() == MINE.encode()
    lock.release()
    assert path.read_bytes() == b""


@pytest.mark.parametrize(
    ("holder", "asker", "expected"),
    [
        (None, MINE, False),  # free: nothing to tell
        (MINE, MINE, False),  # held for the asker's URL: wait
        (OTHER, MINE, True),  # held for another URL: do not wait
    ],
)
def test_held_for_other(tmp_path: Path, holder: str | None, asker: str, expected: bool) -> None:
    path = str(tmp_path / "0.lock")
    lock = key_lock(path, holder or MINE, 0)
    if holder is not None:
        assert try_acquire(lock, 0)
    try:
        assert held_for_other(key_lock(path, asker, 0), asker) is expected
    finally:
        if holder is not None:
            lock.release()


def test_a_stale_mark_of_a_dead_holder_does_not_stop_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "0.lock"
    path.write_bytes(OTHER.encode())  # left by a process that died holding the lock
    lock = key_lock(str(path), MINE, 0)
    assert wait_for_fetch(lock, MINE, 0)  # free: the wait is over at once
    assert try_acquire(lock, 0)
    assert path.read_bytes() == MINE.encode()
    lock.release()


def test_waiting_for_a_fetch_of_the_same_url_times_out(tmp_path: Path) -> None:
    path = str(tmp_path / "0.lock")
    holder = key_lock(path, MINE, 0)
    assert try_acquire(holder, 0)
    try:
        assert not wait_for_fetch(key_lock(path, MINE, 0), MINE, 0.05)
        assert wait_for_fetch(key_lock(path, OTHER, 0), OTHER, 0.05)  # another URL's
    finally:
        holder.release()


@pytest.mark.parametrize(("released", "expected"), [(True, True), (False, False)])
def test_waiters_in_one_worker_share_one_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, released: bool, expected: bool
) -> None:
    path = str(tmp_path / "0.lock")
    holder = key_lock(path, MINE, 0)
    assert try_acquire(holder, 0)
    polls: list[float] = []

    def counted(lock: KeyLock, digest: str, timeout: float) -> bool:
        polls.append(timeout)
        return wait_for_fetch(lock, digest, timeout)

    monkeypatch.setattr(locks, "wait_for_fetch", counted)  # the real poll, counted
    waits = FetchWaits()
    answers: list[tuple[bool, float]] = []

    def wait() -> None:
        begun = time.monotonic()
        over = waits.wait(key_lock(path, MINE, 0), MINE, 0.5)
        answers.append((over, time.monotonic() - begun))

    threads = [threading.Thread(target=wait) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    if released:
        holder.release()
    for thread in threads:
        thread.join(5)
    if not released:
        holder.release()
    assert [over for over, _ in answers] == [expected] * 5
    slowest = max(took for _, took in answers)
    assert slowest < 0.3 if released else slowest >= 0.5
    # One poll for all five; a timed-out wait polls again for those with time left.
    assert len(polls) == 1 if released else 1 <= len(polls) <= 5
    assert waits.wait(key_lock(path, MINE, 0), MINE, 0)  # nothing left over: free, at once


def test_a_waiter_that_joined_late_waits_until_its_own_deadline(tmp_path: Path) -> None:
    path = str(tmp_path / "0.lock")
    holder = key_lock(path, MINE, 0)
    assert try_acquire(holder, 0)
    waits = FetchWaits()
    early = threading.Thread(target=waits.wait, args=(key_lock(path, MINE, 0), MINE, 0.3))
    early.start()
    time.sleep(0.2)
    begun = time.monotonic()
    late: list[bool] = []
    thread = threading.Thread(
        target=lambda: late.append(waits.wait(key_lock(path, MINE, 0), MINE, 0.6))
    )
    thread.start()
    time.sleep(0.3)  # the early one gave up meanwhile; the late one still waits
    assert late == []
    holder.release()
    thread.join(5)
    early.join(5)
    assert late == [True]
    assert time.monotonic() - begun < 0.55
