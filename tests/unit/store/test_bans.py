"""Bans (store/bans.py): which stored responses a ban covers (tables), the ban list on a
real folder (appended, read back by another process's view, dropped, the generation it is
read at), and the lurker's steps (store/lurker.py) on a real store."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from wsgi_proxy.core import keys
from wsgi_proxy.core.headers import Headers
from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store import lurker
from wsgi_proxy.store.bans import Ban, Bans, ban_list, matches
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.hits import Hit, identity_of
from wsgi_proxy.store.lurker import lurk
from wsgi_proxy.store.recent_purges import PurgeRecord, RecentPurges

ORIGIN = "http://origin:8080"
A = "http://a.example"
B = "https://b.example"


def key(target: str, site: str = A, origin: str = ORIGIN) -> str:
    return keys.primary_key(origin, target, site)


MATCHES: list[tuple[str, Ban, str, tuple[str, ...], bool]] = [
    # what, ban, key, tags, covered
    ("prefix, every site", Ban(1, "prefix", "/p/", None, ORIGIN), key("/p/x"), (), True),
    ("prefix, other path", Ban(1, "prefix", "/p/", None, ORIGIN), key("/q/x"), (), False),
    ("prefix is a string prefix", Ban(1, "prefix", "/p", None, ORIGIN), key("/pq"), (), True),
    ("prefix, query", Ban(1, "prefix", "/p?a", None, ORIGIN), key("/p?a=1"), (), True),
    ("prefix, its host", Ban(1, "prefix", "/p", "b.example", ORIGIN), key("/p", B), (), True),
    ("prefix, its host by http", Ban(1, "prefix", "/p", "b.example", ORIGIN),
     key("/p", "http://b.example"), (), True),
    ("prefix, another host", Ban(1, "prefix", "/p", "b.example", ORIGIN), key("/p", A), (), False),
    ("prefix, another origin", Ban(1, "prefix", "/p", None, ORIGIN), key("/p", A, "http://x"),
     (), False),
    ("url, exact", Ban(1, "url", "/p/x", None, ORIGIN), key("/p/x"), (), True),
    ("url, not a prefix", Ban(1, "url", "/p/x", None, ORIGIN), key("/p/xy"), (), False),
    ("url, query differs", Ban(1, "url", "/p/x", None, ORIGIN), key("/p/x?a"), (), False),
    ("tag", Ban(1, "tag", "red"), key("/p"), ("blue", "red"), True),
    ("tag, not a substring", Ban(1, "tag", "re"), key("/p"), ("red",), False),
    ("tag, untagged", Ban(1, "tag", "red"), key("/p"), (), False),
    ("all", Ban(1, "all", "", soft=True), key("/anything", B, "http://x"), (), True),
    ("a key without site", Ban(1, "prefix", "/", None, ORIGIN), f"GET {ORIGIN}/p", (), False),
]  # fmt: skip


@pytest.mark.parametrize(("ban", "key", "tags", "covered"), [m[1:] for m in MATCHES],
                         ids=[m[0] for m in MATCHES])  # fmt: skip
def test_matches(ban: Ban, key: str, tags: tuple[str, ...], covered: bool) -> None:
    assert matches(ban, key, tags) is covered


def meta(target: str, response_time: float, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"key": key(target), "response_time": response_time, "tags": list(tags)}


T = 1_000_000_000  # one second, in ns

VERDICTS: list[tuple[str, list[Ban], dict[str, Any], Ban | None]] = [
    # what, bans, stored response, the ban that covers it
    ("no ban", [], meta("/p", 1.0), None),
    ("older than the ban", [Ban(5 * T, "prefix", "/", None, ORIGIN)], meta("/p", 4.0),
     Ban(5 * T, "prefix", "/", None, ORIGIN)),
    ("fetched after the ban", [Ban(5 * T, "prefix", "/", None, ORIGIN)], meta("/p", 5.5), None),
    ("after one ban, before another",
     [Ban(2 * T, "prefix", "/", None, ORIGIN), Ban(5 * T, "tag", "x")], meta("/p", 3.0), None),
    ("hard wins over soft", [Ban(2 * T, "tag", "x", soft=True), Ban(3 * T, "tag", "x")],
     meta("/p", 1.0, ("x",)), Ban(3 * T, "tag", "x")),
    ("soft only", [Ban(2 * T, "tag", "x", soft=True)], meta("/p", 1.0, ("x",)),
     Ban(2 * T, "tag", "x", soft=True)),
    ("refreshed after the soft ban", [Ban(2 * T, "tag", "x", soft=True)],
     meta("/p", 2.5, ("x",)), None),
]  # fmt: skip


@pytest.mark.parametrize(("bans", "stored", "found"), [v[1:] for v in VERDICTS],
                         ids=[v[0] for v in VERDICTS])  # fmt: skip
def test_verdict(bans: list[Ban], stored: dict[str, Any], found: Ban | None) -> None:
    assert ban_list(0, bans).verdict(stored) == found


def test_the_list_is_shared_through_the_folder(tmp_path: Path) -> None:
    """Another process's view (a ``Bans`` of its own) sees a ban as soon as ``add``
    returns, by the generation; a drop keeps the bans added since."""
    writer, reader = Bans(tmp_path), Bans(tmp_path)
    assert reader.current().bans == ()
    start = reader.generation()
    first, second = Ban(1, "tag", "a"), Ban(2, "prefix", "/é", "b.example", ORIGIN, soft=True)
    writer.add(first)
    assert reader.generation() == start + 1
    assert reader.current().bans == (first,)
    writer.add(second)
    assert reader.current().bans == (first, second)
    writer.drop([first])
    assert reader.current().bans == (second,)
    assert reader.generation() == start + 3
    assert Bans(tmp_path).read() == [second]  # as a restarted process reads it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bans", "bans.gen", "bans.lock"]


def test_an_unreadable_line_is_skipped(tmp_path: Path) -> None:
    bans = Bans(tmp_path)
    bans.add(Ban(1, "tag", "a"))
    with bans.path.open("a") as file:
        file.write('not json\n{"t": 2, "kind": "nope", "value": ""}\n')
    bans.add(Ban(3, "tag", "b"))
    assert [b.value for b in Bans(tmp_path).current().bans] == ["a", "b"]


def publish(store: Store, target: str, tags: tuple[str, ...] = ()) -> Path:
    now = time.time()
    head = ResponseHead(200, "OK", (("Cache-Control", "max-age=600"),))
    entry = Entry(key(target), head, now, now, (), 2, tags)
    pending = store.begin(entry, expected_length=2, max_body=2)
    assert pending is not None
    pending.write(b"ok")
    assert pending.commit()
    return store.primary_path(entry.key)


def found(store: Store, target: str) -> Hit | None:
    hit = store.lookup(key(target), Headers(), time.time())
    assert hit is None or isinstance(hit, Hit)
    return hit


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(tmp_path, lock_stripes=4, max_variants=4)
    made.prepare()
    return made


def test_lookup_hides_hard_banned_and_marks_soft_banned(store: Store) -> None:
    publish(store, "/h/1")
    publish(store, "/s/1")
    publish(store, "/k/1")
    for target in ("/h/1", "/s/1", "/k/1"):
        hit = found(store, target)
        assert hit is not None
        hit.close()
    Bans(store.state).add(Ban(time.time_ns(), "prefix", "/h/", None, ORIGIN))
    Bans(store.state).add(Ban(time.time_ns(), "prefix", "/s/", None, ORIGIN, soft=True))
    assert found(store, "/h/1") is None
    soft = found(store, "/s/1")
    assert soft is not None and soft.entry.soft_purged
    soft.close()
    kept = found(store, "/k/1")
    assert kept is not None and not kept.entry.soft_purged
    kept.close()
    publish(store, "/h/1")  # fetched after the ban
    again = found(store, "/h/1")
    assert again is not None
    again.close()


def test_the_lurker_removes_marks_counts_and_drops(store: Store) -> None:
    hard = [publish(store, f"/h/{n}", ("x",)) for n in range(5)]
    soft = publish(store, "/s/1")
    kept = publish(store, "/k/1", ("y",))
    purge_time = time.time_ns()
    Bans(store.state).add(Ban(purge_time, "tag", "x"))
    Bans(store.state).add(Ban(purge_time + 1, "prefix", "/s/", None, ORIGIN, soft=True))
    recent = RecentPurges(store.state)
    recent.record(PurgeRecord(purge_time / 1e9, "tag", "x", False, 0, pending=True))
    counted: list[tuple[str, int]] = []
    steps = 0
    while lurk(store, lambda label, n: counted.append((label, n)), budget=0.0):
        steps += 1
    assert steps >= 255  # with no budget, a folder (or one response) a step
    assert not any(path.exists() for path in hard)
    assert soft.exists() and kept.exists()
    hit = found(store, "/s/1")
    assert hit is not None and hit.entry.soft_purged  # marked in the file: the ban is gone
    hit.close()
    assert Bans(store.state).read() == []
    totals: dict[str, int] = {}
    for label, n in counted:
        totals[label] = totals.get(label, 0) + n
    assert totals == {"tag": 5, "prefix-soft": 1}
    assert recent.read()[0].purged == 5 and not recent.read()[0].pending
    assert not (store.state / "lurker").exists()


@pytest.mark.parametrize("soft", [True, False])
def test_a_response_refreshed_after_the_lurker_judged_it_is_left_alone(
    store: Store, soft: bool
) -> None:
    """The lurker reads a response's header and finds it banned; before it acts, a worker
    publishes the URL anew (after a soft ban, the 304 that refreshes it). The new file came
    after the ban: it is neither marked stale nor removed."""
    path = publish(store, "/r/1")
    judged = identity_of(os.stat(path))
    publish(store, "/r/1")
    ban = Ban(time.time_ns(), "prefix", "/r/", None, ORIGIN, soft=soft)
    assert not lurker._apply(store, path, judged, ban)
    hit = found(store, "/r/1")
    assert hit is not None and not hit.entry.soft_purged
    hit.close()


def test_a_step_stops_within_a_folder_and_the_next_goes_on_by_name(store: Store) -> None:
    """With no time budget each step takes one response: a folder of k responses takes k
    steps, an empty one a step; none is skipped, none done twice."""
    paths = [publish(store, f"/many/{n}", ("m",)) for n in range(40)]
    Bans(store.state).add(Ban(time.time_ns(), "tag", "m"))
    per_folder = [0] * 256
    for path in paths:
        per_folder[int(path.parent.name, 16)] += 1
    counted: list[int] = []
    steps = 1
    while lurk(store, lambda _label, n: counted.append(n), budget=0.0):
        steps += 1
    assert steps == sum(max(k, 1) for k in per_folder)
    assert max(per_folder) > 1  # 40 in 256 folders: some share one (fixed keys)
    assert sum(counted) == 40 and not any(path.exists() for path in paths)
