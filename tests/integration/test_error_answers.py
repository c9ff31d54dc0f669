"""Error answers are short text/plain (README, "Errors of the proxy itself"): gunicorn's own,
for a request its parser refused before the app ran (they were text/html pages), and the
502s for an origin that failed, which say so in the client's terms instead of the errno
text of the proxy's socket (that goes to the log). Real gunicorn with two workers."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
from support.checks import poll
from support.proxy import ProxyFactory, ProxyProcess, free_port
from support.raw_origin import RawOrigin
from support.sockets import exchange

from wsgi_proxy.tuning import is_at_least

PLAIN = "text/plain; charset=utf-8"
HOST = b"Host: shop.example\r\n"
LONG_LINE = 414 if is_at_least("gunicorn", "27.0") else 400  # README, the errors table

# What gunicorn's parser refuses, before the app runs: (request, status).
REFUSED = {
    "bad request line": (b"GARBAGE\r\n\r\n", 400),
    "bad method": (b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "bad header name": (b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n", 400),
    "URI too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", LONG_LINE),
    "field too large": (b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    "too many fields": (
        b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",
        431,
    ),
}


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in lines)}
    return int(status_line.split()[1]), fields, body


@pytest.mark.parametrize("case", REFUSED)
def test_gunicorns_own_error_answers_are_short_plain_text(proxy: ProxyProcess, case: str) -> None:
    request, expected = REFUSED[case]
    answer = exchange(proxy.port, request)
    status, fields, body = _parse(answer)
    assert status == expected, answer[:400]
    assert fields.get("content-type") == PLAIN, answer[:400]
    assert int(fields["content-length"]) == len(body)
    assert body.startswith(f"{status} ".encode()) and body.endswith(b"\n"), body
    assert len(body) < 300 and b"<" not in body, body
    proxy.assert_alive()


@contextmanager
def _resetting_origin() -> Iterator[int]:
    """An origin that reads a request head, then resets the connection (RST: SO_LINGER 0)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    closing = threading.Event()

    def serve() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with suppress(OSError):
                conn.settimeout(5)
                conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        closing.set()
        thread.join(5)
        listener.close()


def _assert_origin_failed(proxy: ProxyProcess, statement: str, logged: str) -> None:
    reply = proxy.get("/page")
    assert reply.status == 502, reply.describe()
    assert reply.header("Content-Type") == PLAIN, reply.describe()
    assert reply.body == f"502 Bad Gateway: {statement}\n".encode(), reply.describe()
    # The socket's own words are for the operator, in the log.
    assert poll(lambda: logged in proxy.stderr(200), 5), proxy.stderr()


def test_a_refused_origin_connection_is_told_as_such(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(origin=f"http://127.0.0.1:{free_port()}")
    _assert_origin_failed(proxy, "the origin refused the connection", "Connection refused")


def test_an_origin_that_resets_the_connection_is_told_as_such(proxy_factory: ProxyFactory) -> None:
    with _resetting_origin() as port:
        proxy = proxy_factory(origin=f"http://127.0.0.1:{port}")
        _assert_origin_failed(proxy, "the origin reset the connection", "reset by peer")


def test_an_origin_that_closes_without_answering_is_told_as_such(
    proxy_factory: ProxyFactory, raw_origin: RawOrigin
) -> None:
    raw_origin.route("/page", b"")
    proxy = proxy_factory(origin=raw_origin.url)
    _assert_origin_failed(
        proxy, "the origin closed the connection without answering", "Remote end closed"
    )
