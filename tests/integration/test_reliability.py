"""The proxy keeps serving through faults: slow or vanishing clients, kill -9 in the middle
of writes, a full or read-only disk, damaged entries, and many clients at once. Each test
asserts on what a second, clean client is served and on what the origin received."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import client
from support.bodies import Digest, pattern_bytes, pattern_digest
from support.checks import assert_response, poll
from support.disks import DiskUnavailable, SmallDisk, small_disk
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, gunicorn_command, manager_pids

CACHED = [("Cache-Control", "max-age=600")]
BIG = 16 * 1024 * 1024


def download(proxy: ProxyProcess, path: str) -> tuple[str | None, Digest]:
    """GET `path` reading the body in pieces: (X-Cache, length and CRC of the body)."""
    digest = Digest()
    with client.stream(proxy.port, path) as reply:
        cache = reply.getheader("X-Cache")
        while piece := reply.read(1 << 20):
            digest.update(piece)
    return cache, digest


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 1 MiB tmpfs for the cache folder: in a namespace of its own where unprivileged user
    namespaces are allowed, else mounted by root (support/disks.py). Proxies on it are
    started with ``proxy_on``."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    try:
        disk = small_disk(mount_point, "1m")
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield disk
    finally:
        disk.close()


def proxy_on(disk: SmallDisk) -> Callable[[int], list[str]]:
    """The gunicorn command line, run where ``disk`` is mounted."""
    return lambda port: [*disk.enter(), *gunicorn_command(port)]


def test_slow_readers_do_not_hold_the_threads(proxy_factory: ProxyFactory, origin: Origin) -> None:
    proxy = proxy_factory({"WSGI_PROXY_THREADS": "1", "WSGI_PROXY_CLIENT_TIMEOUT": "1"})
    big = origin.route("/big", headers=CACHED, generated=BIG)
    assert download(proxy, big)[1].length == BIG
    stalled = []
    for _ in range(4):  # more than the two threads of the two workers
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stalled.append(sock)  # never read: the proxy's sends block
    try:
        small = origin.route("/small", headers=CACHED, body=b"served anyway")
        reply = client.request(proxy.port, "GET", small, timeout=20)
        assert_response(reply, cache="MISS", body=b"served anyway")
    finally:
        for sock in stalled:
            sock.close()
    proxy.assert_alive()


def test_a_client_that_stops_sending_its_body_gets_408(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = proxy_factory({"WSGI_PROXY_THREADS": "1", "WSGI_PROXY_CLIENT_TIMEOUT": "1"})
    path = origin.route("/upload", method="POST", echo=True)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b"only ten b")  # then nothing more
        answer = sock.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 408 "), answer
    assert "X-Cache: MISS" in answer
    reply = client.request(proxy.port, "POST", path, body=b"whole body", timeout=10)
    assert (reply.status, reply.body) == (200, b"whole body")
    # The stalled body was waited for before the origin was asked: it saw one request.
    assert [(h.method, h.target) for h in origin.heads()] == [("POST", path)]
    proxy.assert_alive()


def test_a_client_leaving_mid_body_stores_nothing_partial(
    proxy: ProxyProcess, origin: Origin
) -> None:
    path = origin.route("/leave", headers=CACHED, generated=BIG)
    with client.stream(proxy.port, path) as reply:
        assert reply.getheader("X-Cache") == "MISS"
        reply.read(1 << 20)  # then hang up
    cache, digest = download(proxy, path)
    assert digest == pattern_digest(BIG)
    assert download(proxy, path) == ("HIT", pattern_digest(BIG))
    assert cache in ("MISS", "HIT")  # MISS, or HIT if the proxy finished the first download
    assert origin.count(path) <= 2


def test_the_body_holds_the_fetch_lock_and_gives_it_back_when_its_client_leaves(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """A miss being stored holds the URL's lock until its entry is published, after the
    request's call is over: the body stream owns it then. Its client leaves mid-body: the
    stream, closed, gives the lock back, and the next request for the URL fetches it at
    once, not after the lock timeout (an hour here: it would run out of time first). One
    lock stripe, so the test can read the lock's mark (the URL's digest while held)."""
    proxy = proxy_factory({"WSGI_PROXY_LOCK_STRIPES": "1", "WSGI_PROXY_LOCK_TIMEOUT": "3600"})
    lock_file = proxy.cache_dir / "v1" / "locks" / "0.lock"
    path = origin.route("/left-midway", headers=CACHED, generated=BIG)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as leaving:
        leaving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the proxy soon blocks
        leaving.settimeout(10)
        leaving.connect(("127.0.0.1", proxy.port))
        host = f"127.0.0.1:{proxy.port}"  # as the client below sends it: the same URL
        leaving.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or received.endswith(b"\r\n\r\n"):
            piece = leaving.recv(4096)
            assert piece, received
            received += piece
        assert received.startswith(b"HTTP/1.1 200 "), received[:200]
        # Body bytes came: the call that started the response is over, its body streams on
        # (16 MiB cannot all be in the socket buffers), and the lock is still held for it.
        assert len(lock_file.read_bytes()) == 64
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            after = pool.submit(download, proxy, path)  # waits for the lock
            leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            leaving.close()  # a reset: the proxy's next send fails, the body is closed
            assert after.result(timeout=60) == ("MISS", pattern_digest(BIG))
    assert origin.count(path) == 2  # the first was dropped, not stored
    # The second published its entry and gave the lock back before its last byte.
    assert lock_file.read_bytes() == b""
    assert download(proxy, path) == ("HIT", pattern_digest(BIG))
    assert origin.count(path) == 2


def kill_server(proxy: ProxyProcess) -> None:
    pids = [proxy.pid, *proxy.worker_pids(expected=1)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proxy.wait_exit(10)


def test_kill_9_during_writes_never_leaves_a_short_entry(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "crash-cache"
    want = pattern_digest(BIG)
    for round_ in range(3):
        path = origin.route(f"/crash{round_}", headers=CACHED, generated=BIG)
        proxy = proxy_factory(cache_dir=cache_dir)
        with client.stream(proxy.port, path) as reply:
            reply.read((round_ + 1) * 3 * 1024 * 1024)  # part of the body is on disk by now
            kill_server(proxy)
        survivor = proxy_factory(cache_dir=cache_dir)
        assert download(survivor, path) == ("MISS", want)
        assert download(survivor, path) == ("HIT", want)
        assert poll(lambda: list(cache_dir.rglob(".tmp.*")) == [], 10), list(
            cache_dir.rglob(".tmp.*")
        )
        survivor.stop()


def test_a_damaged_entry_is_a_miss_and_is_replaced(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "damaged"
    proxy = proxy_factory(cache_dir=cache_dir)
    body = pattern_bytes(50_000)
    path = origin.route("/damaged", headers=CACHED, body=body)
    proxy.get(path)
    (entry,) = [p for p in (cache_dir / "v1" / "objects").rglob("*") if p.is_file()]
    entry.write_bytes(entry.read_bytes()[:-1000])  # a short file, as a crash could leave
    assert_response(proxy.get(path), cache="MISS", body=body)
    assert_response(proxy.get(path), cache="HIT", body=body)
    assert origin.count(path) == 2


@pytest.mark.parametrize(
    "size",
    [50_000, 2 << 20, BIG],
    ids=["read-whole", "sendfile-checked-first", "checked-as-sent"],
)
def test_a_body_failing_its_checksum_is_a_miss_and_is_removed(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path, size: int
) -> None:
    """Same length, other bytes, as a machine crash can leave a file that was not fsynced.
    Up to 8 MiB the body is checked before it is served; beyond, as it is sent, and the
    answer is cut short before its last bytes: never taken for whole. The entry goes."""
    cache_dir = tmp_path / "flipped"
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": "t0ken"}, cache_dir=cache_dir)
    body = pattern_bytes(size)
    path = origin.route("/flipped", headers=CACHED, body=body)
    assert_response(proxy.get(path), cache="MISS", body=body)
    (entry,) = [p for p in (cache_dir / "v1" / "objects").rglob("*") if p.is_file()]
    with entry.open("r+b") as file:
        file.seek(-size // 2, os.SEEK_END)
        file.write(b"\0" * 64)
    if size <= 8 << 20:
        assert_response(proxy.get(path), cache="MISS", body=body)
    else:
        cache, cut = download(proxy, path)  # http.client's read(n) ends quietly when cut
        assert (cache, cut.length < size) == ("HIT", True)  # never taken for whole
        assert not entry.exists()
        metrics = proxy.get("/_wsgi_proxy/metrics", (("Authorization", "Bearer t0ken"),))
        assert 'wsgi_proxy_errors_total{kind="CacheDamaged"} 1.0' in metrics.body.decode()
        assert download(proxy, path) == ("MISS", pattern_digest(size))
    assert download(proxy, path) == ("HIT", pattern_digest(size))
    assert origin.count(path) == 2


def test_a_full_disk_degrades_to_pass_through(
    proxy_factory: ProxyFactory, origin: Origin, tiny_disk: SmallDisk
) -> None:
    proxy = proxy_factory(
        {"WSGI_PROXY_MAX_SIZE": "64M", "WSGI_PROXY_METRICS_DIR": str(tiny_disk.path.parent / "m")},
        cache_dir=tiny_disk.path / "cache",
        command=proxy_on(tiny_disk),
    )
    bodies = {i: pattern_bytes(300_000 + i) for i in range(6)}  # 1.8 MB for a 1 MiB disk
    paths = {i: origin.route(f"/full{i}", headers=CACHED, body=b) for i, b in bodies.items()}
    for i, path in paths.items():
        assert_response(proxy.get(path), cache="MISS", body=bodies[i])
    for i, path in paths.items():  # served whole, from the cache or from the origin
        reply = proxy.get(path)
        assert (reply.status, reply.body) == (200, bodies[i]), reply.describe()
    proxy.assert_alive()
    assert "cache write failed" in proxy.stderr(400) or "No space left" in proxy.stderr(400)


def test_a_disk_full_before_the_size_limit_is_made_room_on(
    proxy_factory: ProxyFactory, origin: Origin, tiny_disk: SmallDisk
) -> None:
    """The disk (1 MiB) fills long before WSGI_PROXY_MAX_SIZE (64 MiB): a write that finds
    no room makes the proxy evict as if the limit were reached, and it stores again."""
    proxy = proxy_factory(
        {"WSGI_PROXY_MAX_SIZE": "64M", "WSGI_PROXY_METRICS_DIR": str(tiny_disk.path.parent / "m")},
        cache_dir=tiny_disk.path / "cache",
        command=proxy_on(tiny_disk),
    )
    bodies = {i: pattern_bytes(300_000 + i) for i in range(6)}  # three fill the disk
    paths = {i: origin.route(f"/fill{i}", headers=CACHED, body=b) for i, b in bodies.items()}
    for i, path in paths.items():
        assert_response(proxy.get(path), cache="MISS", body=bodies[i])
    answers: list[client.Response] = []

    def stored_again() -> bool:  # each MISS tries to store it: once there is room, it is
        answers.append(proxy.get(paths[5]))
        return answers[-1].x_cache == "HIT"

    assert poll(stored_again, timeout=20, interval=0.5), proxy.stderr(40)
    for i, path in paths.items():  # whole, from the cache or from the origin: never partial
        reply = proxy.get(path)
        assert (reply.status, reply.body) == (200, bodies[i]), reply.describe()
    assert all((a.status, a.body) == (200, bodies[5]) for a in answers)
    proxy.assert_alive()


def read_only_to_be(proxy_factory: ProxyFactory, tiny_disk: SmallDisk) -> ProxyProcess:
    """A proxy whose cache folder is on ``tiny_disk``, which the test remounts read only."""
    return proxy_factory(
        # A fetch lock that cannot be taken is no fetch under way: nothing to wait for, so
        # a MISS is answered long before this timeout (the client gives up at 20 s).
        {"WSGI_PROXY_METRICS_DIR": str(tiny_disk.path.parent / "m"),
         "WSGI_PROXY_LOCK_TIMEOUT": "60"},
        cache_dir=tiny_disk.path / "cache",
        command=proxy_on(tiny_disk),
    )  # fmt: skip


def test_a_read_only_cache_folder(
    proxy_factory: ProxyFactory, origin: Origin, tiny_disk: SmallDisk
) -> None:
    """A cache disk remounted read only: stored entries still hit, new ones pass through,
    in the workers running then and in those started after; a server started on it is
    refused with an error naming the setting."""
    proxy = read_only_to_be(proxy_factory, tiny_disk)
    stored = origin.route("/ro-stored", headers=CACHED, body=b"stored before")
    proxy.get(stored)
    tiny_disk.remount_read_only()
    fresh = origin.route("/ro-new", headers=CACHED, body=b"passed through")
    for _ in range(2):
        reply = proxy.get(fresh, timeout=20)
        assert_response(reply, cache="MISS", body=b"passed through")
    assert_response(proxy.get(stored), cache="HIT", body=b"stored before")
    assert origin.count(fresh) == 2
    # Workers started after the disk went read only (a crash, a timeout, max_requests, a
    # reload) serve the same way: the folder's state is no reason to stop the server.
    old = proxy.worker_pids()
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    assert poll(lambda: not set(old) & set(proxy.worker_pids()), 30), proxy.stderr(40)
    assert_response(proxy.get(fresh, timeout=20), cache="MISS", body=b"passed through")
    assert_response(proxy.get(stored), cache="HIT", body=b"stored before")
    proxy.assert_alive()
    refused = proxy_factory(
        {"WSGI_PROXY_METRICS_DIR": str(tiny_disk.path.parent / "m2")},
        cache_dir=tiny_disk.path / "other",
        command=proxy_on(tiny_disk),
        ready=False,
    )
    assert refused.wait_exit(30) not in (None, 0)
    assert "WSGI_PROXY_CACHE_DIR" in refused.stderr(80)


# The cache manager writes its figures every 5 s at least (a failed round each, on a read
# only disk), and one that could not open the folder exited after 5 s, to be started again
# a second later: each is watched for longer than that.
MANAGER_WATCH = 8.0
# The lines counted in the proxy's stderr.
RO_LINES = ("lock failed", "cannot write to the cache", "round failed",
            "cannot open the cache folder", "exited")  # fmt: skip


def test_a_read_only_cache_folder_is_logged_once_not_per_request(
    proxy_factory: ProxyFactory, origin: Origin, tiny_disk: SmallDisk
) -> None:
    """Every MISS on a read-only cache disk fails its fetch lock and its write, and every
    few seconds the cache manager's round fails: each process logs each kind of failure
    once (then once a minute, with a count), not once a request or a round. A cache
    manager started on the folder then (its predecessor crashed) waits for the folder
    instead of exiting, so the master does not start it again every few seconds. Once the
    disk is writable again, that is logged, and responses are stored again."""
    proxy = read_only_to_be(proxy_factory, tiny_disk)
    proxy.get(origin.route("/ro-before", headers=CACHED, body=b"stored before"))
    # The manager has opened the folder and counted it ("N files, B bytes on disk in ..."):
    # its rounds are to fail, not its start.
    assert poll(lambda: "bytes on disk in" in proxy.stderr(100), 20), proxy.stderr()
    start = proxy.stderr_path.stat().st_size

    def logged() -> str:  # what the proxy wrote to stderr since the disk went read only
        return proxy.stderr_path.read_bytes()[start:].decode(errors="replace")

    tiny_disk.remount_read_only()
    for i in range(50):
        path = origin.route(f"/ro-miss{i}", headers=CACHED, body=b"passed through")
        assert_response(proxy.get(path, timeout=20), cache="MISS", body=b"passed through")
    assert poll(lambda: "round failed" in logged(), 20), logged()
    time.sleep(MANAGER_WATCH)
    (crashed,) = manager_pids(proxy.pid)
    os.kill(crashed, signal.SIGKILL)
    assert poll(lambda: "cannot open the cache folder" in logged(), 20), logged()
    (manager,) = manager_pids(proxy.pid)
    time.sleep(MANAGER_WATCH)
    text = logged()
    counts = {line: text.count(line) for line in RO_LINES}
    # Each failure once in each worker that served a MISS (two at most) and in each
    # manager; one exit, the crash. Before: two lines a MISS, a failed round every 1 to 5 s,
    # and a replacement manager exiting every 6 s.
    assert counts["lock failed"] in (1, 2), (counts, text)
    assert counts["cannot write to the cache"] in (1, 2), (counts, text)
    assert [counts[line] for line in RO_LINES[2:]] == [1, 1, 1], (counts, text)
    assert manager_pids(proxy.pid) == [manager], text
    tiny_disk.remount_read_write()
    fresh = origin.route("/ro-after", headers=CACHED, body=b"stored after")
    assert poll(lambda: proxy.get(fresh).x_cache == "HIT", 20), logged()
    assert "cache writes work again" in logged()
    assert poll(lambda: "the cache folder is usable again" in logged(), 20), logged()
    proxy.assert_alive()


# Run where the disk is mounted (its namespace): the entry ending in c's cut short (a
# corrupt entry), the one ending in u's turned into a folder (a file that cannot be opened:
# EISDIR, as EIO or EACCES would be). Prints how many it changed.
DAMAGE = """
import sys
from pathlib import Path
changed = 0
for entry in sorted(Path(sys.argv[1]).rglob("*")):
    if not entry.is_file():
        continue
    data = entry.read_bytes()
    if data.endswith(b"c" * 100):
        entry.write_bytes(data[:-1000])
    elif data.endswith(b"u" * 100):
        entry.unlink()
        entry.mkdir()
    else:
        continue
    changed += 1
print(changed)
"""
# The lines counted in the proxy's stderr, each with the cause it must tell.
DAMAGED_LINES = {"corrupt cache entry": "length mismatch",
                 "cannot remove": "Read-only file system",
                 "cache read failed": "Is a directory"}  # fmt: skip


def test_entries_that_fail_on_a_read_only_disk_are_logged_once_not_per_request(
    proxy_factory: ProxyFactory, origin: Origin, tiny_disk: SmallDisk
) -> None:
    """A corrupt entry the read-only disk will not let go is found corrupt again by every
    request for it, and an entry that cannot be opened fails every request for it: each is
    answered from the origin, and each kind of failure (corrupt, cannot remove, cannot
    open) is logged once by each worker, with its path and cause, not once a request.
    Once the disk is writable again, the corrupt entry is removed, and that is told."""
    proxy = read_only_to_be(proxy_factory, tiny_disk)
    corrupt = origin.route("/ro-corrupt", headers=CACHED, body=b"c" * 5000)
    unreadable = origin.route("/ro-unreadable", headers=CACHED, body=b"u" * 5000)
    for path in (corrupt, unreadable):
        assert_response(proxy.get(path), cache="MISS")
        assert_response(proxy.get(path), cache="HIT")
    objects = str(tiny_disk.path / "cache" / "v1" / "objects")
    command = [*tiny_disk.enter(), sys.executable, "-c", DAMAGE, objects]
    done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    assert done.stdout.split() == ["2"], done
    start = proxy.stderr_path.stat().st_size
    tiny_disk.remount_read_only()
    for _ in range(50):
        assert_response(proxy.get(corrupt, timeout=20), cache="MISS", body=b"c" * 5000)
        assert_response(proxy.get(unreadable, timeout=20), cache="MISS", body=b"u" * 5000)
    assert (origin.count(corrupt), origin.count(unreadable)) == (51, 51)
    text = proxy.stderr_path.read_bytes()[start:].decode(errors="replace")
    counts = {line: text.count(line) for line in DAMAGED_LINES}
    # Once in each worker that served the requests (two at most). Before: once a request.
    assert all(count in (1, 2) for count in counts.values()), (counts, text)
    for line in text.splitlines():  # the first of each kind, with its file and cause
        for kind, cause in DAMAGED_LINES.items():
            assert kind not in line or (objects in line and cause in line), line
    tiny_disk.remount_read_write()  # the corrupt entry goes at its next request, told once
    assert_response(proxy.get(corrupt), cache="MISS", body=b"c" * 5000)
    assert_response(proxy.get(corrupt), cache="HIT", body=b"c" * 5000)
    text = proxy.stderr_path.read_bytes()[start:].decode(errors="replace")
    assert text.count("removed corrupt cache entry") == 1, text
    proxy.assert_alive()


# Two URLs on one fetch-lock stripe are not coalesced while the other's fetch holds it
# (store/fetch_locks.py): with the default 65,536 stripes, 22 URLs share one in about
# 0.35 % of runs, and each of five requests for one of them then goes to the origin (CI saw
# it once). The 32-bit stripes the digest allows make that about 1 in 20 million.
ALL_STRIPES = str(1 << 32)


def test_hundreds_of_clients_on_hits_misses_and_slow_answers(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = proxy_factory({"WSGI_PROXY_LOCK_STRIPES": ALL_STRIPES})
    hot = origin.route("/hot", headers=CACHED, body=b"hot" * 100)
    slow = [origin.route(f"/slow{i}", headers=CACHED, body=b"slow", delay=0.3) for i in range(20)]
    passing = origin.route("/pass", headers=[("Cache-Control", "no-store")], body=b"pass")
    plan = [hot] * 200 + slow * 5 + [passing] * 100  # 400 requests
    expected = {hot: b"hot" * 100, passing: b"pass", **{s: b"slow" for s in slow}}

    def fetch(path: str) -> tuple[str, int, bytes]:
        reply = client.request(proxy.port, "GET", path, timeout=60)
        return path, reply.status, reply.body

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(fetch, plan))
    failed = [(p, s) for p, s, b in results if s != 200 or b != expected[p]]
    assert failed == [], failed[:5]
    assert origin.count(hot) == 1
    assert [origin.count(s) for s in slow] == [1] * len(slow)
    assert origin.count(passing) == 100


@pytest.mark.parametrize("tuning", ["on", "off"])
def test_a_worker_told_to_quit_while_connections_arrive_exits_at_once(
    proxy_factory: ProxyFactory, origin: Origin, tuning: str
) -> None:
    """SIGQUIT (gunicorn's quick exit for one worker) while new connections keep arriving:
    the signal often lands while the worker's main thread hands a connection to its thread
    pool. Each worker told to quit is gone within seconds, not when the master's timeout
    kills it, and the proxy keeps answering. With tuning off this is gunicorn's own gthread
    worker, whose handler shut the pool down from inside the signal and could hang there."""
    proxy = proxy_factory({"WSGI_PROXY_TUNING": tuning})
    path = origin.route("/quit/churn", headers=CACHED, body=b"q")
    stop = False

    def churn() -> None:
        while not stop:
            with contextlib.suppress(OSError):
                client.request(proxy.port, "GET", path, timeout=5.0)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        clients = [pool.submit(churn) for _ in range(16)]
        try:
            seen: set[int] = set()
            for round_ in range(12):
                # A new worker starts its pool's threads as the connections come: the
                # moments the race is likeliest in. (A signal before the worker has set its
                # handlers is lost: gunicorn's, not this test's, so wait for them.)
                assert poll(lambda: bool(proxy.quittable_workers() - seen), 15.0, interval=0.005)
                pid = min(proxy.quittable_workers() - seen)
                seen.add(pid)
                time.sleep(0.02 * (round_ % 4))
                os.kill(pid, signal.SIGQUIT)
                assert poll(lambda: pid not in proxy.worker_pids(expected=0), 5.0), (  # noqa: B023
                    f"worker {pid} still runs 5 s after SIGQUIT"
                )
        finally:
            stop = True
            for future in clients:
                future.result()
    assert proxy.get(path).status == 200
