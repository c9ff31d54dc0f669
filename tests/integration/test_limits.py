"""Size limits: the cache's total size, the largest stored object, and worker memory that
does not grow with the size of the body being proxied."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import client
from support.bodies import Digest, pattern_bytes, pattern_digest
from support.checks import assert_response, cache_breakdown, cache_bytes, poll
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, rss_bytes

CACHEABLE = [("Cache-Control", "max-age=600")]


# Disk use, as du counts it: the entries' blocks, their folders, the state and lock files.
LIMIT = 2_000_000
ENTRY = 200_000


def _fill(origin: Origin, proxy: ProxyProcess, count: int, first: int = 0) -> list[str]:
    """GET `count` distinct cacheable URLs of ENTRY bytes, one after another (all MISS),
    numbered from `first`."""
    paths = [
        origin.route(f"/e{n}", headers=CACHEABLE, body=pattern_bytes(ENTRY))
        for n in range(first, first + count)
    ]
    for path in paths:
        assert_response(proxy.get(path), cache="MISS", body=pattern_bytes(ENTRY))
    return paths


def test_cache_folder_stays_within_max_size(origin: Origin, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)})
    _fill(origin, proxy, 40)

    within = poll(lambda: cache_bytes(proxy.cache_dir) <= LIMIT * 1.05, timeout=10)

    assert within, cache_breakdown(proxy.cache_dir)


# Small entries for the LRU test: each 1 % of the limit, so that one store never takes the
# count from under the limit to over the workers' pause (102 %, eviction.py).
SMALL = LIMIT // 100


def test_eviction_removes_the_least_recently_used_entries(
    origin: Origin, proxy_factory: ProxyFactory
) -> None:
    """Four entries written together; one of them read again once its LRU touch is due;
    then as many more again as the limit holds, each stored once the folder is back within
    the limit (so that no worker pauses storing). Eviction keeps the newest by use: the
    re-read one outlives its neighbours, which a first-in, first-out eviction would have
    removed with them."""
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT), "WSGI_PROXY_TOUCH_INTERVAL": "1"})
    paths = [
        origin.route(f"/e{n}", headers=CACHEABLE, body=pattern_bytes(SMALL))
        for n in range(4 + LIMIT // SMALL)
    ]
    old, new = paths[:4], paths[4:]
    for path in old:
        assert_response(proxy.get(path), cache="MISS", body=pattern_bytes(SMALL))
    time.sleep(1.5)  # past the touch interval: the next hit refreshes the file's mtime
    assert_response(proxy.get(old[1]), cache="HIT", body=pattern_bytes(SMALL))
    for path in new:
        assert_response(proxy.get(path), cache="MISS", body=pattern_bytes(SMALL))
        within = poll(lambda: cache_bytes(proxy.cache_dir) <= LIMIT, timeout=10, interval=0.05)
        assert within, cache_breakdown(proxy.cache_dir)
    # The folder holds more than the limit's worth of entries: eviction has run. Wait until
    # it stops shrinking (the cache manager runs every tenth of a second).
    samples = [cache_bytes(proxy.cache_dir)]

    def settled() -> bool:
        time.sleep(0.3)
        samples.append(cache_bytes(proxy.cache_dir))
        return samples[-1] == samples[-2]

    assert poll(settled, timeout=10), cache_breakdown(proxy.cache_dir)
    for path in [old[1], *new[-3:]]:  # before any MISS below stores (and evicts) again
        assert_response(proxy.get(path), cache="HIT", body=pattern_bytes(SMALL))
    for path in (old[0], old[2]):
        assert_response(proxy.get(path), cache="MISS", body=pattern_bytes(SMALL))
    assert [origin.count(path) for path in [old[1], *new[-3:]]] == [1, 1, 1, 1]
    assert [origin.count(path) for path in (old[0], old[2])] == [2, 2]


def test_responses_over_max_object_size_pass_through_uncached(
    origin: Origin, proxy_factory: ProxyFactory
) -> None:
    large = origin.route("/large", headers=CACHEABLE, body=pattern_bytes(5000))
    small = origin.route("/small", headers=CACHEABLE, body=pattern_bytes(500))
    proxy = proxy_factory({"WSGI_PROXY_MAX_OBJECT_SIZE": "1000"})

    assert_response(proxy.get(large), cache="MISS", body=pattern_bytes(5000))
    assert_response(proxy.get(large), cache="MISS", body=pattern_bytes(5000))
    assert_response(proxy.get(small), cache="MISS", body=pattern_bytes(500))
    assert_response(proxy.get(small), cache="HIT", body=pattern_bytes(500))
    assert (origin.count(large), origin.count(small)) == (2, 1)


def test_size_suffix_k_means_1024(origin: Origin, proxy_factory: ProxyFactory) -> None:
    fits = origin.route("/fits", headers=CACHEABLE, body=pattern_bytes(1020))
    over = origin.route("/over", headers=CACHEABLE, body=pattern_bytes(1030), framing="chunked")
    proxy = proxy_factory({"WSGI_PROXY_MAX_OBJECT_SIZE": "1k"})

    for _ in range(2):
        proxy.get(fits)
        assert_response(proxy.get(over), cache="MISS", body=pattern_bytes(1030))
    assert_response(proxy.get(fits), cache="HIT", body=pattern_bytes(1020))
    assert (origin.count(fits), origin.count(over)) == (1, 2)


class RssSampler:
    """Samples VmRSS of the given processes in a background thread; keeps each one's peak."""

    def __init__(self, pids: list[int]) -> None:
        self.baseline = {pid: rss_bytes(pid) or 0 for pid in pids}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid) or 0)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def growth(self) -> int:
        return max(self.peak[pid] - self.baseline[pid] for pid in self.peak)


@pytest.fixture
def big_cache(tmp_path: Path) -> Iterator[Path]:
    """A cache folder removed after the test: 300 MiB must not outlive it in /tmp.
    Requested before `proxy_factory`, so it is removed after the proxy has stopped."""
    folder = tmp_path / "big-cache"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _download(proxy: ProxyProcess, path: str) -> tuple[str | None, Digest]:
    digest = Digest()
    with client.stream(proxy.port, path, timeout=60) as reply:
        assert reply.status == 200
        while piece := reply.read(1 << 20):
            digest.update(piece)
        return reply.getheader("X-Cache"), digest


def _warm_up(proxy: ProxyProcess, origin: Origin) -> None:
    """Requests on parallel connections, so that both workers have built their app."""
    path = origin.route("/warm", headers=[("Cache-Control", "no-store")], body=b"w", delay=0.1)
    threads = [threading.Thread(target=proxy.get, args=(path,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def test_large_body_streams_with_bounded_worker_memory(
    big_cache: Path, origin: Origin, proxy_factory: ProxyFactory
) -> None:
    size = 300 << 20
    limit = 64 << 20
    path = origin.route("/huge", headers=CACHEABLE, generated=size)
    proxy = proxy_factory(cache_dir=big_cache)
    workers = proxy.worker_pids(expected=2)
    _warm_up(proxy, origin)
    expected = pattern_digest(size)

    with RssSampler(workers) as miss_memory:
        miss = _download(proxy, path)
    with RssSampler(workers) as hit_memory:
        hit = _download(proxy, path)

    assert miss == ("MISS", expected)
    assert hit == ("HIT", expected)
    assert origin.count(path) == 1
    assert miss_memory.growth() < limit, miss_memory.peak
    assert hit_memory.growth() < limit, hit_memory.peak
