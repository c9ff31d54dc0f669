"""The ceilings: bare WSGI callables that any gunicorn app can reach at most on this machine.

``gunicorn --chdir tests/bench -k gthread -w 2 --threads 4 bench_app:app`` (or
``bench_app:passthru``):

- ``app``, the ceiling for a HIT: with ``BENCH_WWW`` naming the folder the origin serves,
  ``/c/<name>`` answers the bytes of ``$BENCH_WWW/c/<name>``, read once at import, with the
  origin's fields. No framework, no disk, no parsing.
- ``filewrap``, the same answer with the body from disk by ``wsgi.file_wrapper``, which
  gunicorn sends with ``sendfile``: what the issue asks of a large HIT, in a bare app.
- ``passthru``, the ceiling for a request that cannot be cached: every GET is forwarded to
  ``BENCH_ORIGIN`` (``http://host:port``) through one pooled ``urllib3.HTTPConnectionPool``
  per worker, created on the worker's first request (after the fork); the status and the
  end-to-end fields are copied and the body streamed back as it comes. No cache, no
  policy, no header rewriting: as the shared benchmark's ``ceiling_apps.passthru``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

StartResponse = Callable[..., Any]

_NOT_FOUND = [("Content-Type", "text/plain"), ("Content-Length", "9")]


def _load(folder: Path) -> dict[str, tuple[bytes, list[tuple[str, str]]]]:
    served: dict[str, tuple[bytes, list[tuple[str, str]]]] = {}
    if not folder.is_dir():
        return served
    for file in sorted(folder.iterdir()):
        body = file.read_bytes()
        mtime = file.stat().st_mtime
        served[f"/c/{file.name}"] = (
            body,
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "max-age=3600"),
                ("Last-Modified", formatdate(mtime, usegmt=True)),
                ("ETag", f'"{int(mtime):x}-{len(body):x}"'),
            ],
        )
    return served


_WWW = Path(os.environ.get("BENCH_WWW", "www"))
_SERVED = _load(_WWW / "c")


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    found = _SERVED.get(environ["PATH_INFO"])
    if found is None:
        start_response("404 Not Found", _NOT_FOUND)
        return [b"not found"]
    body, fields = found
    start_response("200 OK", fields)
    return [body]


def filewrap(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``app``'s answer with the body read from ``$BENCH_WWW`` by ``wsgi.file_wrapper``
    (gunicorn sends it with ``sendfile``): the ceiling for a large HIT sent that way."""
    found = _SERVED.get(environ["PATH_INFO"])
    if found is None:
        start_response("404 Not Found", _NOT_FOUND)
        return [b"not found"]
    file = (_WWW / environ["PATH_INFO"].lstrip("/")).open("rb")
    start_response("200 OK", found[1])
    wrapper: Callable[[Any, int], Iterable[bytes]] = environ["wsgi.file_wrapper"]
    return wrapper(file, 256 * 1024)


# Hop-by-hop fields (RFC 9110 section 7.6.1): not copied to the client.
_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade"}
)  # fmt: skip
_STREAM_BLOCK = 1 << 16
_pool: urllib3.HTTPConnectionPool | None = None
_pool_lock = threading.Lock()


def _origin_pool() -> urllib3.HTTPConnectionPool:
    """This worker's pool, made on its first request: a pool made before the fork would
    share its sockets between workers."""
    global _pool  # noqa: PLW0603 - one pool per process, made once
    pool = _pool
    if pool is not None:
        return pool
    with _pool_lock:
        if _pool is None:
            origin = urlsplit(os.environ.get("BENCH_ORIGIN", "http://127.0.0.1:8000"))
            _pool = urllib3.HTTPConnectionPool(
                origin.hostname or "127.0.0.1",
                origin.port or 80,
                maxsize=64,
                block=False,
                retries=False,
            )
        return _pool


def passthru(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    target = environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        target += "?" + environ["QUERY_STRING"]
    resp = _origin_pool().urlopen(
        "GET",
        target,
        headers={"Host": environ.get("HTTP_HOST", "")},
        preload_content=False,
        decode_content=False,
        redirect=False,
    )
    fields = [(k, v) for k, v in resp.headers.items() if k.lower() not in _HOP]
    start_response(f"{resp.status} {resp.reason or ''}", fields)

    def body() -> Iterator[bytes]:
        try:
            yield from resp.stream(_STREAM_BLOCK, decode_content=False)
        finally:
            resp.release_conn()

    return body()
