"""The last purges (store/recent_purges.py) on a real folder: bounded, newest first, shared
by processes recording at once, recorded by every purge ``purge.apply`` carries out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from wsgi_proxy.store import purge as purging
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.recent_purges import KEPT, VALUE_CHARS, PurgeRecord, RecentPurges


def record(n: int, value: str = "/x") -> PurgeRecord:
    return PurgeRecord(float(n), "url", value, False, n)


def test_newest_first_and_bounded(tmp_path: Path) -> None:
    recent = RecentPurges(tmp_path)
    assert recent.read() == []
    for n in range(KEPT + 5):
        recent.record(record(n))
    assert [r.purged for r in recent.read()] == list(range(KEPT + 4, 4, -1))
    assert len(recent.path.read_text().splitlines()) == KEPT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["purges", "purges.lock"]  # no temp


def test_long_values_cut_and_bad_lines_skipped(tmp_path: Path) -> None:
    recent = RecentPurges(tmp_path)
    recent.record(record(1, "/" + "a" * 1000))
    with recent.path.open("a") as file:
        file.write("not json\n" + json.dumps({"time": 2}) + "\n")
    recent.record(record(3))
    assert [(r.purged, len(r.value)) for r in recent.read()] == [(3, 2), (1, VALUE_CHARS)]


def test_a_record_that_cannot_be_written_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    recent = RecentPurges(tmp_path / "file")  # a file, not a folder: nothing can be made in it
    recent.record(record(1))  # logged, not raised
    assert recent.read() == []


WRITER = """
import sys
from pathlib import Path
from wsgi_proxy.store.recent_purges import PurgeRecord, RecentPurges
recent = RecentPurges(Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    recent.record(PurgeRecord(float(n), "tag", sys.argv[2], False, n))
"""


def test_processes_recording_at_once_all_land(tmp_path: Path) -> None:
    """Four processes record 5 each at the same time: every record is kept (20 = KEPT),
    none torn or lost to another's replace."""
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}", "5"])
        for i in range(4)
    ]
    assert [w.wait(60) for w in writers] == [0] * 4
    kept = RecentPurges(tmp_path).read()
    assert sorted((r.value, r.purged) for r in kept) == sorted(
        (f"w{i}", n) for i in range(4) for n in range(5)
    )


def test_every_applied_purge_is_recorded(store: Store) -> None:
    for order in [purging.Purge("url", "/a"), purging.Purge("tag", "t", soft=True),
                  purging.Purge("all", "")]:  # fmt: skip
        purging.apply(store, "http://origin", order)
    purging.apply(store, "http://origin", purging.Purge("url", "no-path"))  # refused: not applied
    shown = [(r.kind, r.value, r.soft, r.purged) for r in RecentPurges(store.state).read()]
    assert shown == [("all", "", False, 0), ("tag", "t", True, 0), ("url", "/a", False, 0)]


def test_a_ban_is_pending_until_settled(tmp_path: Path) -> None:
    """A ban is recorded at once, pending; the lurker sets its count when it is done
    (store/lurker.py), in place, by its time and kind."""
    recent = RecentPurges(tmp_path)
    recent.record(PurgeRecord(1.5, "tag", "t", False, 0, pending=True))
    recent.record(record(2))
    recent.settle(1.5, "prefix", 9)  # another kind: not this one
    assert [(r.kind, r.pending, r.purged) for r in recent.read()] == [
        ("url", False, 2),
        ("tag", True, 0),
    ]
    recent.settle(1.5, "tag", 7)
    assert [(r.kind, r.pending, r.purged) for r in recent.read()] == [
        ("url", False, 2),
        ("tag", False, 7),
    ]
