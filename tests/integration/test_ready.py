"""Ready answers (ready.py): a plain fresh hit answered from the worker's memory must be the
answer the general flow gives, and must end wherever the flow's would: a purge, a new
response, an unsafe method, expiry, all made by any worker.

The first test calls the app in this process (against the real origin) to see which path
answered; the others run real gunicorn with two workers, each asked often enough on new
connections that both hold a ready answer before the change.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.checks import assert_response
from support.client import Response
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyFactory, ProxyProcess

from wsgi_proxy.core.config import Config
from wsgi_proxy.flow.proxy_app import ProxyApp
from wsgi_proxy.ops.metrics import Metrics
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.open_files import MAX_FILES
from wsgi_proxy.store.repeats import RecentLookups
from wsgi_proxy.upstream.origin_client import Upstream

CACHED = [("Cache-Control", "max-age=600"), ("ETag", '"v1"'), ("X-Kind", "ready")]
TOKEN = "t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
WARM = 12  # requests on new connections: both workers answer some


def _call(app: Any, target: str, *fields: tuple[str, str], method: str = "GET") -> Response:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "RAW_URI": target, "PATH_INFO": target.partition("?")[0],
        "QUERY_STRING": target.partition("?")[2], "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "HTTP_HOST": "proxy",
        "HTTP_ACCEPT": "*/*",
    }  # fmt: skip
    for name, value in fields:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started[:] = [status, headers]

    body: Iterable[bytes] = app(environ, start_response)
    data = b"".join(body)
    close = getattr(body, "close", None)
    if close is not None:
        close()
    code, _, reason = started[0].partition(" ")
    return Response(int(code), reason, tuple(started[1]), data)


_metrics: list[Metrics] = []


def _worker(origin: Origin, cache: Path) -> ProxyApp:
    """One worker's app, in this process, on the cache folder ``cache`` (two of them on one
    folder are two workers). Metrics are made once a process: prometheus registers them
    globally."""
    config = Config.from_env({"WSGI_PROXY_ORIGIN": origin.url,
                              "WSGI_PROXY_CACHE_DIR": str(cache),
                              "WSGI_PROXY_METRICS_DIR": str(cache.parent / "metrics"),
                              "WSGI_PROXY_ADMIN_ALLOW": "127.0.0.1"})  # fmt: skip
    if not _metrics:
        # Metrics points prometheus_client at its folder through the environment, which
        # the gunicorn processes of later tests would inherit: put it back.
        before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        try:
            _metrics.append(Metrics(config.metrics_dir, lambda: ()))
        finally:
            if before is None:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = before
    store = Store(config.cache_dir, lock_stripes=config.lock_stripes,
                  max_variants=config.max_variants)  # fmt: skip
    store.prepare()
    return ProxyApp(config, store, Upstream(config), _metrics[0])


def _without_clock(reply: Response) -> list[tuple[str, str]]:
    """The fields, with the ones that move with the clock reduced to their shape."""
    shaped = []
    for name, value in reply.headers:
        shape = value
        if name.lower() in ("age", "date"):
            shape = "..."
        elif name.lower() == "cache-status":
            shape = re.sub(r"ttl=\d+", "ttl=...", value)
        shaped.append((name, shape))
    return shaped


def test_a_hit_not_looked_up_lately_is_not_made_ready(origin: Origin, tmp_path: Path) -> None:
    """An entry asked for once in a long while (repeats.py; a window of 2 lookups here) is
    answered by the flow, and made ready from its second lookup within a while."""
    app = _worker(origin, tmp_path / "cache")
    app.store.recent = RecentLookups(2)
    path = origin.route("/seldom", headers=CACHED, body=b"seldom")
    assert_response(_call(app, path), cache="MISS", body=b"seldom")
    for other in ("/a", "/b", "/c", "/d"):  # lookups of other entries: two windows
        assert app.store.lookup(f"GET {origin.url}{other}", (), time.time()) is None
    given = app.ready.given
    for _ in range(2):  # not looked up lately, then the second lookup: both by the flow
        assert_response(_call(app, path), cache="HIT", body=b"seldom")
    assert app.ready.given == given
    assert_response(_call(app, path), cache="HIT", body=b"seldom")
    assert app.ready.given == given + 1
    assert origin.count(path) == 1


SIZES = pytest.mark.parametrize("size", [1600, 300_000], ids=["in-memory", "from-the-file"])


def test_a_ready_answer_is_the_answer_the_flow_gives(origin: Origin, tmp_path: Path) -> None:
    """A body held in memory, and one sent from the file. A file left open anywhere on the
    way would fail the test too: pytest turns its ResourceWarning into an error."""
    app = _worker(origin, tmp_path / "cache")
    for size in (1600, 300_000):
        given = app.ready.given
        body = (b"the same bytes \x00\xff" * (size // 16 + 1))[:size]
        path = origin.route(f"/same{size}", headers=[*CACHED, ("Content-Type", "text/x-same")],
                            body=body)  # fmt: skip
        assert_response(_call(app, path), cache="MISS", body=body)
        by_flow = _call(app, path)  # served by the flow, which makes the answer ready
        assert app.ready.given == given
        by_ready = _call(app, path)
        assert app.ready.given == given + 1
        assert_response(by_ready, cache="HIT", body=body)
        assert _without_clock(by_ready) == _without_clock(by_flow)
        status = by_ready.header("Cache-Status") or ""
        assert re.fullmatch(r"wsgi_proxy; hit; ttl=(599|600)", status), status
        head = _call(app, path, method="HEAD")
        assert app.ready.given == given + 2
        assert (head.body, head.header("Content-Length")) == (b"", str(size))
        # Requests that are not plain go through the flow, which answers them as it must.
        assert _call(app, path, ("If-None-Match", '"v1"')).status == 304
        ranged = _call(app, path, ("Range", "bytes=0-3"))
        assert (ranged.status, ranged.body) == (206, b"the ")
        # The origin answers the revalidation in full: a new file, so the ready answer ends.
        assert _call(app, path, ("Cache-Control", "no-cache")).x_cache == "MISS"
        assert app.ready.given == given + 2
        assert_response(_call(app, path), cache="HIT", body=body)
        assert app.ready.given == given + 2  # by the flow, which makes it ready again
        assert_response(_call(app, path), cache="HIT", body=body)
        assert app.ready.given == given + 3
        assert origin.count(path) == 2


def _purge(app: ProxyApp, path: str, soft: str = "") -> None:
    purged = _call(app, f"/_wsgi_proxy/purge?url={path}{soft}", method="POST")
    assert purged.body == b"purged 1\n", purged.describe()


CHANGES_BY_ANOTHER_WORKER: dict[str, Callable[[ProxyApp, str], object]] = {
    "purge": _purge,
    "soft purge": lambda b, path: _purge(b, path, "&soft=1"),
    "POST": lambda b, path: _call(b, path, method="POST"),
    "a new response": lambda b, path: _call(b, path, ("Cache-Control", "no-cache")),
    "clear": lambda b, path: b.store.clear(),
}


@pytest.mark.parametrize("change", list(CHANGES_BY_ANOTHER_WORKER))
@SIZES
def test_a_change_made_by_another_worker_ends_the_ready_answer(
    origin: Origin, tmp_path: Path, change: str, size: int
) -> None:
    """Two workers' apps on one cache folder, in this process: worker A holds a ready
    answer; worker B changes what is stored; A's next answer comes from the flow, with
    the origin's new body."""
    a, b = _worker(origin, tmp_path / "cache"), _worker(origin, tmp_path / "cache")
    old, new = b"o" * size, b"n" * size
    path = origin.route("/shared", headers=[("Cache-Control", "max-age=600")], body=old)
    for _ in range(3):
        assert _call(a, path).body == old
    assert a.ready.given == 1
    origin.route("/shared", headers=[("Cache-Control", "max-age=600")], body=new)
    CHANGES_BY_ANOTHER_WORKER[change](b, path)
    assert _call(a, path).body == new, change
    assert a.ready.given == 1, change
    assert _call(a, path).body == new


@pytest.fixture
def coarse_disk(tmp_path: Path) -> Iterator[Path]:
    """An ext4 filesystem with 128-byte inodes, whose mtimes are whole seconds (needs root
    and a loop device, as CI and tests/run.sh have)."""
    image, mount_point = tmp_path / "coarse.img", tmp_path / "coarse"
    mount_point.mkdir()
    with image.open("wb") as file:
        file.truncate(16 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(image)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    mounted = made.returncode == 0 and subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True, check=False
    ).returncode == 0  # fmt: skip
    if not mounted:
        pytest.skip(f"cannot make and mount a small ext4 here: {made.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_without_nanosecond_mtimes_nothing_is_answered_from_memory(
    origin: Origin, coarse_disk: Path
) -> None:
    """Whole-second mtimes cannot tell a new file from a purged one in the same inode: the
    memos stay off there, and the flow answers every request."""
    app = _worker(origin, coarse_disk / "cache")
    assert not app.store.fine_timestamps
    path = origin.route("/coarse", headers=CACHED, body=b"from the disk")
    assert_response(_call(app, path), cache="MISS", body=b"from the disk")
    for _ in range(3):
        assert_response(_call(app, path), cache="HIT", body=b"from the disk")
    assert (app.ready.given, len(app.ready), len(app.store.hot)) == (0, 0, 0)
    assert origin.count(path) == 1


def _warm(proxy: ProxyProcess, path: str, body: bytes) -> None:
    assert_response(proxy.get(path), cache="MISS", body=body)
    for _ in range(WARM):
        assert_response(proxy.get(path), cache="HIT", body=body)


@SIZES
def test_a_purge_ends_the_ready_answers_of_every_worker(
    proxy_factory: ProxyFactory, origin: Origin, size: int
) -> None:
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    old, new = b"o" * size, b"n" * size
    path = origin.route("/purged", headers=CACHED, body=old)
    _warm(proxy, path, old)
    origin.route("/purged", headers=CACHED, body=new)
    assert proxy.request("PURGE", path, AUTH).status == 200
    assert_response(proxy.get(path), cache="MISS", body=new)
    for _ in range(WARM):
        assert_response(proxy.get(path), cache="HIT", body=new)
    assert origin.count(path) == 2


@SIZES
def test_a_new_response_from_any_worker_replaces_every_ready_answer(
    proxy: ProxyProcess, origin: Origin, size: int
) -> None:
    v1, v2 = b"1" * size, b"2" * size  # the same length: only the file tells them apart
    path = origin.route("/replaced", headers=[("Cache-Control", "max-age=600")], body=v1)
    _warm(proxy, path, v1)
    origin.route("/replaced", headers=[("Cache-Control", "max-age=600")], body=v2)
    # The client's no-cache makes one worker fetch and store the new response (no validator).
    assert_response(proxy.get(path, [("Cache-Control", "no-cache")]), cache="MISS", body=v2)
    for _ in range(WARM):
        assert_response(proxy.get(path), cache="HIT", body=v2)
    assert origin.count(path) == 2


def test_an_unsafe_method_ends_every_ready_answer(proxy: ProxyProcess, origin: Origin) -> None:
    path = origin.route("/posted", headers=CACHED, body=b"before")
    _warm(proxy, path, b"before")
    origin.route("/posted", headers=CACHED, body=b"after")
    assert proxy.request("POST", path, body=b"x").status == 200
    assert_response(proxy.get(path), cache="MISS", body=b"after")
    for _ in range(WARM):
        assert proxy.get(path).body == b"after"
    assert origin.count(path, "GET") == 2


def test_a_ready_answer_ends_when_its_response_goes_stale(
    proxy: ProxyProcess, origin: Origin
) -> None:
    versions = iter([b"first", b"second"])

    def respond(record: Recorded) -> Reply:
        return Reply(headers=[("Cache-Control", "max-age=1")], body=next(versions))

    path = origin.respond("/expiring", respond)
    _warm(proxy, path, b"first")
    time.sleep(1.2)
    assert_response(proxy.get(path), cache="MISS", body=b"second")
    assert origin.count(path) == 2


@pytest.mark.parametrize("accept", ["text/a", "text/b"])
def test_a_response_that_varies_is_never_answered_ready(
    proxy: ProxyProcess, origin: Origin, accept: str
) -> None:
    def respond(record: Recorded) -> Reply:
        wanted = record.header("Accept") or "-"
        return Reply(headers=[("Cache-Control", "max-age=600"), ("Vary", "Accept")],
                     body=wanted.encode())  # fmt: skip

    path = origin.respond("/varies", respond)
    other = "text/b" if accept == "text/a" else "text/a"
    for _ in range(WARM // 2):
        assert proxy.get(path, [("Accept", accept)]).body == accept.encode()
        assert proxy.get(path, [("Accept", other)]).body == other.encode()
    assert origin.count(path) == 2


def _open_files(proxy: ProxyProcess) -> dict[int, list[str]]:
    """Per worker, the cache entries it has open, as /proc names them (a removed one ends
    in " (deleted)"), once two listings 0.1 s apart agree: a file the general flow opened
    for an answer is closed just after the client has read it."""
    objects = str(proxy.cache_dir / "v1" / "objects")
    last: dict[int, list[str]] | None = None
    for _ in range(50):
        listed: dict[int, list[str]] = {}
        for pid in proxy.worker_pids():
            names = []
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    name = os.readlink(fd)
                except OSError:  # closed since the listing
                    continue
                if name.startswith(objects):
                    names.append(name)
            listed[pid] = sorted(names)
        if listed == last:
            return listed
        last = listed
        time.sleep(0.1)
    pytest.fail(f"the workers' open files never settled: {last}")


def _until_every_worker_holds(proxy: ProxyProcess, path: str, body: bytes) -> None:
    """GETs of ``path`` on new connections until every worker holds one file open, not
    removed (it answers ``path`` from it); fails after 100."""
    for _ in range(100):
        held = _open_files(proxy).values()
        if all(len(names) == 1 and not names[0].endswith(" (deleted)") for names in held):
            return
        assert_response(proxy.get(path), cache="HIT", body=body)
    pytest.fail(f"workers hold {_open_files(proxy)}")


def test_a_removed_body_is_let_go_by_every_worker(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """Every worker holds the file of a large ready answer open; once the entry is purged,
    every worker lets it go within about half a second, with no request (its disk space is
    freed), and then holds the new one."""
    proxy = proxy_factory({"WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    old, new = b"o" * 300_000, b"n" * 300_000
    path = origin.route("/held", headers=CACHED, body=old)
    assert_response(proxy.get(path), cache="MISS", body=old)
    _until_every_worker_holds(proxy, path, old)
    origin.route("/held", headers=CACHED, body=new)
    assert proxy.request("PURGE", path, AUTH).status == 200
    deadline = time.monotonic() + 5
    while any(_open_files(proxy).values()):
        assert time.monotonic() < deadline, _open_files(proxy)
    assert_response(proxy.get(path), cache="MISS", body=new)
    _until_every_worker_holds(proxy, path, new)
    assert origin.count(path) == 2


def test_each_worker_holds_a_bounded_number_of_files(proxy: ProxyProcess, origin: Origin) -> None:
    paths = [origin.route(f"/many{n}", headers=CACHED, body=bytes([n]) * 200_000)
             for n in range(100)]  # fmt: skip
    for n, path in enumerate(paths):
        for _ in range(6):
            assert proxy.get(path).body == bytes([n]) * 200_000
        if n % 10 == 9:
            counts = [len(names) for names in _open_files(proxy).values()]
            assert max(counts) <= MAX_FILES, counts
    counts = [len(names) for names in _open_files(proxy).values()]
    assert max(counts) == MAX_FILES, counts  # reached, never passed
