"""Many clients at once across two workers, and the cache cleared while it serves."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from support import client
from support.bodies import Digest, pattern_bytes, pattern_digest
from support.checks import assert_response, poll
from support.origin import Origin, Recorded, Reply
from support.proxy import REPO, ProxyFactory, ProxyProcess, proxy_env

HERD = 20
SLOW = 0.5
# One request runs at a time in each worker, unless it waits (wsgi_proxy/pool.py).
ONE_ACTIVE = {"WSGI_PROXY_THREADS": "48", "WSGI_PROXY_ACTIVE_THREADS": "1"}


def _all_at_once(count: int, call: Callable[[], client.Response]) -> list[client.Response]:
    """`count` calls of `call`, each in its own thread, released together."""
    barrier = threading.Barrier(count, timeout=10)

    def released() -> client.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(released) for _ in range(count)]
        return [future.result(timeout=60) for future in futures]


def test_concurrent_misses_for_one_url_reach_the_origin_once(
    origin: Origin, proxy: ProxyProcess
) -> None:
    body = pattern_bytes(50_000)
    path = origin.route("/herd", headers=[("Cache-Control", "max-age=60")], body=body, delay=SLOW)
    replies = _all_at_once(HERD, lambda: proxy.get(path, timeout=30))

    for reply in replies:
        assert reply.status == 200, reply.describe()
        assert reply.body == body, reply.describe()
    assert origin.count(path) == 1
    assert_response(proxy.get(path), cache="HIT", body=body)
    assert origin.count(path) == 1


def test_concurrent_requests_for_an_uncacheable_url_all_reach_the_origin(
    origin: Origin, proxy: ProxyProcess
) -> None:
    count = 10
    nostore = [("Cache-Control", "no-store")]
    path = origin.route("/herd-nostore", headers=nostore, body=b"fresh each time", delay=SLOW)
    replies = _all_at_once(count, lambda: proxy.get(path, timeout=30))

    for reply in replies:
        assert_response(reply, cache="MISS", body=b"fresh each time")
    assert origin.count(path) == count


def _clear_cache(proxy: ProxyProcess, origin_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgi_proxy", "--clear-cache"],
        cwd=REPO,
        env=proxy_env(origin_url, proxy.cache_dir),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _download(proxy: ProxyProcess, path: str) -> tuple[str | None, Digest]:
    """X-Cache and the digest of the body of GET `path`, read a MiB at a time."""
    digest = Digest()
    with client.stream(proxy.port, path) as reply:
        assert reply.status == 200
        while piece := reply.read(1 << 20):
            digest.update(piece)
        return reply.getheader("X-Cache"), digest


def test_clear_cache_while_serving(origin: Origin, proxy_factory: ProxyFactory) -> None:
    size = 32 << 20  # larger than the loopback socket buffers: still in flight when cleared
    expected = pattern_digest(size)
    cacheable = [("Cache-Control", "max-age=60")]
    small = origin.route("/small", headers=cacheable, body=b"small body")
    big = origin.route("/big", headers=cacheable, generated=size)
    fresh_big = origin.route("/big-miss", headers=cacheable, generated=size)
    proxy = proxy_factory()

    assert_response(proxy.get(small), cache="MISS", body=b"small body")
    assert_response(proxy.get(small), cache="HIT", body=b"small body")
    assert _download(proxy, big) == ("MISS", expected)

    hit_digest, miss_digest = Digest(), Digest()
    with (
        client.stream(proxy.port, big) as hit,
        client.stream(proxy.port, fresh_big) as miss,
    ):
        assert (hit.getheader("X-Cache"), miss.getheader("X-Cache")) == ("HIT", "MISS")
        hit_digest.update(hit.read(1 << 20))
        miss_digest.update(miss.read(1 << 20))

        cleared = _clear_cache(proxy, origin.url)
        assert cleared.returncode == 0, cleared.stderr

        while piece := hit.read(1 << 20):
            hit_digest.update(piece)
        while piece := miss.read(1 << 20):
            miss_digest.update(piece)
    assert hit_digest == expected
    assert miss_digest == expected

    assert_response(proxy.get(small), cache="MISS", body=b"small body")
    assert origin.count(small) == 2
    assert _download(proxy, big) == ("MISS", expected)
    assert origin.count(big) == 2


def test_a_url_does_not_wait_for_another_urls_fetch_on_its_lock_stripe(
    origin: Origin, proxy_factory: ProxyFactory
) -> None:
    """With one lock stripe every URL shares one lock file: a miss for /other must still go
    to the origin while /slow is being fetched, not after it. The origin holds /slow until
    /other has arrived (up to 10 s, the lock timeout): if /other queued behind /slow's
    lock, /slow would give up waiting."""
    other_arrived = threading.Event()
    slow_saw_other: list[bool] = []
    cacheable = (("Cache-Control", "max-age=60"),)

    def slow(_record: Recorded) -> Reply:
        slow_saw_other.append(other_arrived.wait(10))
        return Reply(headers=cacheable, body=b"slow body")

    def other(_record: Recorded) -> Reply:
        other_arrived.set()
        return Reply(headers=cacheable, body=b"other body")

    slow_path = origin.respond("/slow", slow)
    other_path = origin.respond("/other", other)
    proxy = proxy_factory({"WSGI_PROXY_LOCK_STRIPES": "1"})

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow_reply = pool.submit(proxy.get, slow_path, timeout=30)
        while origin.count(slow_path) == 0:
            assert not slow_reply.done(), slow_reply.result().describe()
            time.sleep(0.01)
        assert_response(proxy.get(other_path, timeout=30), cache="MISS", body=b"other body")
        assert_response(slow_reply.result(timeout=30), cache="MISS", body=b"slow body")
    assert slow_saw_other == [True]
    assert (origin.count(slow_path), origin.count(other_path)) == (1, 1)
    # Both were stored, each under its own key, despite the shared lock file.
    assert_response(proxy.get(slow_path), cache="HIT", body=b"slow body")
    assert_response(proxy.get(other_path), cache="HIT", body=b"other body")


def test_requests_waiting_on_the_origin_leave_room_for_others(
    origin: Origin, proxy_factory: ProxyFactory
) -> None:
    """With one active thread per worker, 40 slow misses still overlap (one at a time, two
    workers would take 10 s; starting one more each time a request has run for 50 ms, about
    a second), and a hit is answered while they wait on the origin."""
    count = 40
    cacheable = [("Cache-Control", "max-age=60")]
    paths = [
        origin.route(f"/slow-{i}", headers=cacheable, body=b"slow %d" % i, delay=SLOW)
        for i in range(count)
    ]
    hot = origin.route("/hot", headers=cacheable, body=b"hot")
    proxy = proxy_factory(ONE_ACTIVE)
    assert_response(proxy.get(hot), cache="MISS", body=b"hot")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(proxy.get, path, timeout=30) for path in paths]
        assert poll(lambda: sum(origin.count(p) for p in paths) == count, 0.5, 0.01)
        hit_started = time.monotonic()
        hit = proxy.get(hot, timeout=10)
        hit_took = time.monotonic() - hit_started
        replies = [future.result(timeout=30) for future in futures]
    took = time.monotonic() - started

    for i, reply in enumerate(replies):
        assert_response(reply, cache="MISS", body=b"slow %d" % i)
    assert_response(hit, cache="HIT", body=b"hot")
    assert hit_took < 0.3, hit_took  # not behind the misses, which still wait
    assert took < 1.5, took
    assert [origin.count(p) for p in paths] == [1] * count


def test_clients_that_stop_reading_do_not_stall_a_worker(
    origin: Origin, proxy_factory: ProxyFactory
) -> None:
    """With one active thread per worker, eight clients that stop reading a large body
    hold their threads (in sendfile, until the client timeout), not the worker: a request
    that has run for over 50 ms no longer counts, so the next one starts."""
    size = 32 << 20  # larger than the loopback socket buffers
    cacheable = [("Cache-Control", "max-age=60")]
    big = origin.route("/big", headers=cacheable, generated=size)
    small = origin.route("/small", headers=cacheable, body=b"small body")
    proxy = proxy_factory(ONE_ACTIVE)
    assert _download(proxy, big) == ("MISS", pattern_digest(size))
    assert_response(proxy.get(small), cache="MISS", body=b"small body")

    with ExitStack() as stack:
        stalled = [stack.enter_context(client.stream(proxy.port, big)) for _ in range(8)]
        assert [reply.getheader("X-Cache") for reply in stalled] == ["HIT"] * 8
        for _ in range(5):  # on new connections, whichever worker takes them
            started = time.monotonic()
            reply = proxy.get(small, timeout=10)
            assert_response(reply, cache="HIT", body=b"small body")
            assert time.monotonic() - started < 1.0
    assert origin.count(big) == 1
