"""Ready answers (ready.py): a plain fresh hit answered from the worker's memory must be the
answer the general flow gives, and must end wherever the flow's would: a purge, a new
response, an unsafe method, expiry, all made by any worker.

The first test calls the app in this process (against the real origin) to see which path
answered; the others run real gunicorn with two workers, each asked often enough on new
connections that both hold a ready answer before the change.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from support.checks import assert_response
from support.client import Response
from support.origin import Origin, Recorded, Reply
from support.proxy import ProxyFactory, ProxyProcess

from wsgi_proxy import create_app
from wsgi_proxy.config import Config

CACHED = [("Cache-Control", "max-age=600"), ("ETag", '"v1"'), ("X-Kind", "ready")]
TOKEN = "t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
WARM = 12  # requests on new connections: both workers answer some


def _call(app: Any, target: str, *fields: tuple[str, str], method: str = "GET") -> Response:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "RAW_URI": target, "PATH_INFO": target.partition("?")[0],
        "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "HTTP_HOST": "proxy", "HTTP_ACCEPT": "*/*",
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


SIZES = pytest.mark.parametrize("size", [1600, 300_000], ids=["in-memory", "from-the-file"])


def test_a_ready_answer_is_the_answer_the_flow_gives(origin: Origin, tmp_path: Path) -> None:
    """One app per process (its metrics register once): both sizes in one test, a body
    held in memory and one sent from the file."""
    config = Config.from_env({"WSGI_PROXY_ORIGIN": origin.url,
                              "WSGI_PROXY_CACHE_DIR": str(tmp_path / "cache"),
                              "WSGI_PROXY_METRICS_DIR": str(tmp_path / "metrics")})  # fmt: skip
    app = create_app(config)
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
