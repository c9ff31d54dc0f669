"""Purges by prefix and tag are bans (store/bans.py): answered at once, applied by every
worker from the very next request (their memos included), kept across a restart, and
carried out in the background by the lurker (store/lurker.py); real gunicorn with two
workers in front of a real origin."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.checks import poll
from support.client import Response
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyFactory, ProxyProcess, proxy_env

from wsgi_proxy.core import keys
from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.store.bans import Bans
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.purge import BANNED, read_meta
from wsgi_proxy.store.walk import walk_files

TOKEN = "t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
CACHED = [("Cache-Control", "max-age=600"), ("ETag", '"v1"')]
UNSTORED = [("Cache-Control", "no-store")]
WARM = 16  # requests on new connections: both workers answer several (SO_REUSEPORT)
AFTER = 12
HOST = [("Host", "bans.example")]


def admin_proxy(factory: ProxyFactory, cache: Path | None = None) -> ProxyProcess:
    return factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN}, cache_dir=cache)


def warm(proxy: ProxyProcess, paths: list[str], body: bytes) -> None:
    """Fill every worker's memos (hot set, ready answers): HITs on new connections."""
    for path in paths:
        assert proxy.get(path).body == body
    for _ in range(WARM):
        for path in paths:
            reply = proxy.get(path)
            assert (reply.x_cache, reply.body) == ("HIT", body), reply.describe()


def ban(proxy: ProxyProcess, query: str) -> Response:
    answer = proxy.request("POST", f"/_wsgi_proxy/purge?{query}", AUTH)
    assert (answer.status, answer.body.decode()) == (200, BANNED + "\n"), answer.describe()
    return answer


@pytest.mark.parametrize(("kind", "size"), [("prefix", 3), ("tag", 3), ("prefix", 300_000)])
def test_a_hard_ban_takes_effect_in_every_worker_at_once(
    proxy_factory: ProxyFactory, origin: Origin, kind: str, size: int
) -> None:
    """After the ban's answer, no request is served from a banned entry, memo or file:
    the origin now answers ``no-store``, so the old files stay in place and any worker
    that still trusted them would answer the old body. A response fetched after the ban
    is then cached as usual. Small bodies are answered from memory (hot set, ready
    answers), a large one from the file each worker holds open (open_files.py)."""
    proxy = admin_proxy(proxy_factory)
    tagged = [*CACHED, ("Surrogate-Key", "grp")]
    old = b"o" * size
    paths = [origin.route(f"/hb/{n}", headers=tagged, body=old) for n in range(2)]
    kept = origin.route("/other", headers=CACHED, body=b"kept")
    warm(proxy, paths, old)
    warm(proxy, [kept], b"kept")
    for path in paths:
        origin.route(path.removeprefix(origin.prefix), headers=UNSTORED, body=b"new")
    before = {path: origin.count(path) for path in paths}
    ban(proxy, "tag=grp" if kind == "tag" else f"prefix={origin.prefix}/hb/")
    for _ in range(AFTER):
        for path in paths:
            assert proxy.get(path).body == b"new"
    assert all(origin.count(path) == before[path] + AFTER for path in paths)
    assert proxy.get(kept).x_cache == "HIT"
    # Fetched after the ban: stored and served as usual.
    for path in paths:
        origin.route(path.removeprefix(origin.prefix), headers=tagged, body=b"newer")
        assert proxy.get(path).body == b"newer"
        for _ in range(6):
            reply = proxy.get(path)
            assert (reply.x_cache, reply.body) == ("HIT", b"newer"), reply.describe()


@pytest.mark.parametrize("kind", ["prefix", "tag"])
def test_a_soft_ban_revalidates_in_every_worker_at_once(
    proxy_factory: ProxyFactory, origin: Origin, kind: str
) -> None:
    """After a soft ban, every request revalidates (the origin sees ``If-None-Match``);
    the origin fails meanwhile, so the stored file stays as it is (served stale, as
    ``stale-if-error`` allows) and a worker that skipped the ban would answer from its
    memo without asking. Once a 304 refreshed the entry, it is a HIT again."""
    proxy = admin_proxy(proxy_factory)
    answers = {"status": 304}
    fields = [("Cache-Control", "max-age=600, stale-if-error=600"), ("ETag", '"v1"'),
              ("Surrogate-Key", "soft")]  # fmt: skip

    def respond(record: Recorded) -> Reply:
        if answers["status"] == 500:
            return Reply(500, body=b"down")
        if record.header("If-None-Match") == '"v1"':
            return Reply(304, headers=fields)
        return Reply(200, headers=fields, body=b"body")

    path = origin.respond("/sb/x", respond)
    warm(proxy, [path], b"body")
    answers["status"] = 500
    before = origin.count(path)
    ban(proxy, ("tag=soft" if kind == "tag" else f"prefix={origin.prefix}/sb/") + "&soft=1")
    for _ in range(AFTER):
        assert proxy.get(path).body == b"body"
    asked = origin.requests(path)[before:]
    assert len(asked) == AFTER
    assert all(r.header("If-None-Match") == '"v1"' for r in asked)
    answers["status"] = 304
    assert proxy.get(path).body == b"body"  # revalidated: refreshed after the ban
    for _ in range(6):
        assert proxy.get(path).x_cache == "HIT"
    assert origin.count(path) == before + AFTER + 1


def test_bans_survive_a_restart_and_the_lurker_carries_them_out(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """A ban the CLI records while the proxy is down applies when it is back (it answers
    at once, exit 0); the lurker then removes the banned files, drops the ban, and the
    status page and metrics show its count. The requests name one ``Host``: the site is
    part of the key, and the proxy comes back on another port."""
    cache = tmp_path / "cache"
    proxy = admin_proxy(proxy_factory, cache)
    banned = [origin.route(f"/lk/{n}", headers=CACHED, body=b"old") for n in range(3)]
    kept = origin.route("/lk-kept", headers=CACHED, body=b"kept")
    for path in [*banned, kept]:
        proxy.get(path, HOST)
    files = _responses(cache)
    proxy.stop()
    env = proxy_env(origin.url, cache)
    done = subprocess.run([sys.executable, "-m", "wsgi_proxy", "purge", "--prefix",
                           f"{origin.prefix}/lk/"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, BANNED + "\n"), done.stderr
    assert len(Bans(cache / "v1" / "state").read()) == 1
    assert set(_entry_files(cache)) == set(files)  # nothing removed yet
    origin.route(banned[0].removeprefix(origin.prefix), headers=UNSTORED, body=b"new")
    proxy = admin_proxy(proxy_factory, cache)
    # Not stored: a pass marker replaces the banned response; the lurker removes the others.
    assert proxy.get(banned[0], HOST).body == b"new"
    assert proxy.get(kept, HOST).x_cache == "HIT"

    def carried_out() -> bool:
        return not Bans(cache / "v1" / "state").read() and len(_responses(cache)) == 1

    assert poll(carried_out, timeout=20), (_responses(cache), _ban_lines(cache))
    assert list(_responses(cache).values()) == [
        k for k in files.values() if k.startswith(f"GET {origin.url}{origin.prefix}/lk-kept")
    ]
    assert proxy.get(kept, HOST).x_cache == "HIT"
    status = json.loads(proxy.get("/_wsgi_proxy/status.json", AUTH).body)
    recent = status["purges"]["recent"][0]
    assert (recent["kind"], recent["pending"], recent["purged"]) == ("prefix", False, 2)
    assert status["purges"]["purged"] == {"prefix": 2}


def test_a_purge_answers_at_once_however_many_entries(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """50,000 entries written through the store: a prefix purge and a tag purge answer
    in a small part of the time a scan of their headers takes (the scan every purge made
    before bans)."""
    cache = tmp_path / "cache"
    store = Store(cache, lock_stripes=16, max_variants=4)
    store.prepare()
    now = time.time()
    head = ResponseHead(200, "OK", (("Cache-Control", "max-age=600"),))
    for n in range(50_000):
        key = keys.primary_key(origin.url, f"{origin.prefix}/bulk/{n}", "http://bulk.example")
        entry = Entry(key, head, now, now, (), 1, ("bulk",))
        pending = store.begin(entry, expected_length=1, max_body=1)
        assert pending is not None
        pending.write(b"x")
        assert pending.commit()
    started = time.monotonic()
    assert sum(1 for p in _entry_files(cache) if read_meta(p) is not None) == 50_000
    scan = time.monotonic() - started
    proxy = admin_proxy(proxy_factory, cache)
    for _ in range(20):  # each worker builds its app at its first request: not timed
        assert proxy.get("/_wsgi_proxy/metrics", AUTH).status == 200
    timings = []
    for query in (f"prefix={origin.prefix}/bulk/1", "tag=bulk&soft=1"):
        started = time.monotonic()
        ban(proxy, query)
        timings.append(time.monotonic() - started)
    assert max(timings) * 10 < scan, (timings, scan)


def _entry_files(cache: Path) -> list[Path]:
    objects = cache / "v1" / "objects"
    return sorted(Path(f.path) for f in walk_files(objects) if not f.name.startswith(".tmp."))


def _responses(cache: Path) -> dict[Path, str]:
    """The stored responses (not markers) in ``cache``: their keys by file."""
    found = {p: read_meta(p) for p in _entry_files(cache)}
    return {p: m["key"] for p, m in found.items() if m and m.get("kind") == "response"}


def _ban_lines(cache: Path) -> str:
    try:
        return (cache / "v1" / "state" / "bans").read_text()
    except FileNotFoundError:
        return ""
