"""Clients slow to send their request head: WSGI_PROXY_CLIENT_TIMEOUT bounds the whole head
(408, then the connection is closed; a connection that sent nothing is closed without an
answer), a head over the limit gets 431, and while hundreds of heads trickle in, ordinary
clients are served and a graceful stop is not held up; real gunicorn with two workers and
the repository's settings.

The bounds on when a connection is closed only tell a missing bound (a hang) from a
premature cut: each is a third of the timeout or several times it away from the deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest
from support import client
from support.checks import assert_response, poll
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, gunicorn_command

CACHED = [("Cache-Control", "max-age=600")]
HEAD = b"GET /slow HTTP/1.1\r\nHost: example.test\r\nX-Trickle: " + b"t" * 200 + b"\r\n\r\n"
HEAD_LIMIT = 64 * 1024  # bytes: the largest head the proxy reads (docs/security.md)
# Where it is off, gunicorn's own gthread worker reads each head on a thread, unbounded.
GUARD = pytest.mark.tuned("gunicorn", "the slow-head guard (tuning/head_gathering.py)")


class Trickler:
    """Connections each sending ``head`` a byte every ``interval`` seconds (nothing if it is
    empty), all from one thread: what each received, and when the proxy closed it (EOF or
    reset)."""

    def __init__(
        self, socks: list[socket.socket], head: bytes = HEAD, interval: float = 1.0
    ) -> None:
        self.socks = socks
        self.head = head
        self.interval = interval
        self.opened: list[float] | None = None  # each from its first byte, unless connect()
        self.answers = [bytearray() for _ in socks]
        self.closed: list[float | None] = [None] * len(socks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def connect(cls, port: int, count: int, head: bytes = HEAD, interval: float = 1.0) -> Trickler:
        """``count`` new connections to ``port``, each timed from its connection."""
        socks, opened = [], []
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            opened.append(time.monotonic())
        trickler = cls(socks, head, interval)
        trickler.opened = opened
        return trickler

    def __enter__(self) -> Trickler:
        for sock in self.socks:
            sock.setblocking(False)
        if self.opened is None:
            self.opened = [time.monotonic()] * len(self.socks)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.socks:
            sock.close()

    def all_closed(self) -> bool:
        return None not in self.closed

    def open_count(self) -> int:
        return self.closed.count(None)

    def lifetimes(self) -> list[float]:
        """Seconds from each closed connection's start to its closing by the proxy."""
        opened = self.opened or []
        return [end - start for start, end in zip(opened, self.closed, strict=True) if end]

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for index, sock in enumerate(self.socks):
                selector.register(sock, selectors.EVENT_READ, index)
            sent = 0
            tick = time.monotonic()
            while not self._stop.is_set():
                if time.monotonic() >= tick:
                    if sent < len(self.head):
                        self._send(self.head[sent : sent + 1])
                        sent += 1
                    tick += self.interval
                timeout = max(0.0, min(tick - time.monotonic(), 0.2))
                for key, _ in selector.select(timeout):
                    self._receive(selector, key.data)

    def _send(self, byte: bytes) -> None:
        for index, sock in enumerate(self.socks):
            if self.closed[index] is None:
                with contextlib.suppress(OSError):  # closed by the proxy: the reader sees it
                    sock.send(byte)

    def _receive(self, selector: selectors.BaseSelector, index: int) -> None:
        try:
            data = self.socks[index].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # reset
        if data:
            self.answers[index] += data
            return
        self.closed[index] = time.monotonic()
        selector.unregister(self.socks[index])


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read whole off the blocking ``sock``."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
    length = int(next(value for name, value in lines if name.strip().lower() == b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, received
        body += chunk
    return head + b"\r\n\r\n" + body


def assert_408_then_closed(trickler: Trickler, timeout: float) -> None:
    """Every connection of ``trickler`` was answered 408 (Connection: close) and closed
    once ``timeout`` had passed, not long after."""
    assert poll(trickler.all_closed, 3 * timeout + 5), f"{trickler.open_count()} still open"
    for answer in trickler.answers:
        assert answer.startswith(b"HTTP/1.1 408 "), bytes(answer[:300])
        assert b"\r\nConnection: close\r\n" in answer, bytes(answer[:300])
    lifetimes = trickler.lifetimes()
    assert min(lifetimes) > 0.9 * timeout, lifetimes
    assert max(lifetimes) < 3 * timeout, lifetimes


@GUARD
def test_hundreds_of_slow_heads_leave_ordinary_clients_served(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """300 connections send their heads a byte a second; meanwhile 4 clients make 5 requests
    each (hits and misses), every one answered within 5 s. Then each slow head is answered
    408 and closed, once WSGI_PROXY_CLIENT_TIMEOUT has passed."""
    timeout = 10.0
    proxy = proxy_factory({"WSGI_PROXY_CLIENT_TIMEOUT": str(timeout)})
    hit = origin.route("/hit", headers=CACHED, body=b"hit body")
    assert_response(proxy.get(hit), cache="MISS", body=b"hit body")
    misses = [origin.route(f"/miss{i}", headers=CACHED, body=b"miss body") for i in range(20)]

    def ordinary(index: int) -> list[tuple[int, bytes]]:
        replies = []
        for path in [hit, misses[index], hit, misses[index + 4], hit]:
            reply = client.request(proxy.port, "GET", path, timeout=5)
            replies.append((reply.status, reply.body))
        return replies

    with Trickler.connect(proxy.port, 300) as slow:
        time.sleep(1.5)  # every slow head has started
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            served = list(pool.map(ordinary, range(4)))
        assert slow.open_count() == 300  # the slow heads were still coming in throughout
        expected = [(200, b"hit body"), (200, b"miss body")] * 2 + [(200, b"hit body")]
        assert served == [expected] * 4
        assert_408_then_closed(slow, timeout)
    assert origin.count(misses[0]) == 1
    proxy.assert_alive()


@GUARD
def test_a_head_not_complete_in_time_gets_408_and_a_silent_connection_is_closed(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    timeout = 2.0
    proxy = proxy_factory({"WSGI_PROXY_CLIENT_TIMEOUT": str(timeout)})
    with (
        Trickler.connect(proxy.port, 2, interval=0.25) as slow,
        Trickler.connect(proxy.port, 2, head=b"") as silent,
    ):
        assert_408_then_closed(slow, timeout)
        assert poll(silent.all_closed, 3 * timeout), f"{silent.open_count()} still open"
        assert silent.answers == [b"", b""]
        assert min(silent.lifetimes()) > 0.9 * timeout, silent.lifetimes()
    path = origin.route("/after", headers=CACHED, body=b"still serving")
    assert_response(proxy.get(path), cache="MISS", body=b"still serving")
    assert origin.requests() == [origin.last(path)]  # the slow heads never reached it


@GUARD
def test_the_next_head_on_a_kept_alive_connection_is_bounded_too(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """After one request answered on a connection, a second head sent a byte at a time gets
    408 once the timeout has passed since its first byte."""
    timeout = 2.0
    proxy = proxy_factory({"WSGI_PROXY_CLIENT_TIMEOUT": str(timeout)})
    path = origin.route("/first", headers=CACHED, body=b"first body")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
    assert read_response(sock).endswith(b"\r\n\r\nfirst body")
    with Trickler([sock], interval=0.25) as slow:
        assert_408_then_closed(slow, timeout)


@GUARD
def test_pipelined_heads_split_anywhere_are_answered_and_a_stalled_one_is_bounded(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """Two requests in one write, the second cut in the middle of its head: the rest sent
    half a second later, both are answered in order; never sent, the first is answered and
    the second gets 408 once the timeout has passed."""
    timeout = 2.0
    proxy = proxy_factory({"WSGI_PROXY_CLIENT_TIMEOUT": str(timeout)})
    one = origin.route("/one", headers=CACHED, body=b"body one")
    two = origin.route("/two", headers=CACHED, body=b"body two")
    second = f"GET {two} HTTP/1.1\r\nHost: example.test\r\nX-Split: here\r\n\r\n".encode()
    first = f"GET {one} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(first + second[:30])
        assert read_response(sock).endswith(b"\r\n\r\nbody one")
        time.sleep(0.5)
        sock.sendall(second[30:])
        assert read_response(sock).endswith(b"\r\n\r\nbody two")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(first + second[:30])
    assert read_response(sock).endswith(b"\r\n\r\nbody one")
    with Trickler([sock], head=b"") as stalled:
        assert poll(stalled.all_closed, 3 * timeout), "the stalled head is still open"
        assert stalled.answers[0].startswith(b"HTTP/1.1 408 "), bytes(stalled.answers[0])
    assert [origin.count(one), origin.count(two)] == [1, 1]


@GUARD
def test_a_head_over_the_limit_gets_431(proxy_factory: ProxyFactory, origin: Origin) -> None:
    """A head larger than the limit, whole or still coming, is refused with 431 and never
    forwarded; fields each within gunicorn's limits, fewer than WSGI_PROXY_MAX_HEADERS."""
    proxy = proxy_factory()
    path = origin.route("/big-head", headers=CACHED, body=b"small body")
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(70))
    head = f"GET {path} HTTP/1.1\r\nHost: example.test\r\n".encode() + fields
    assert len(head) > HEAD_LIMIT
    for data in (head + b"\r\n", head):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(data)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert origin.requests() == []
    assert_response(proxy.get(path), cache="MISS", body=b"small body")


@GUARD
def test_a_graceful_stop_is_not_held_up_by_slow_heads(proxy_factory: ProxyFactory) -> None:
    """With the shipped timeouts (60 s for a head, 30 s to stop), 40 heads trickling in do
    not keep the workers: the server has exited well before the graceful timeout, and
    every slow connection is closed."""
    proxy = proxy_factory()
    proxy.worker_pids()
    with Trickler.connect(proxy.port, 40) as slow, Trickler.connect(proxy.port, 4, b"") as idle:
        time.sleep(1.5)
        started = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.wait_exit(10) is not None, "still running 10 s after SIGTERM"
        assert poll(lambda: slow.all_closed() and idle.all_closed(), 5)
    assert time.monotonic() - started < 15


def test_clients_holding_their_connection_after_an_error_do_not_stall_the_workers(
    proxy: ProxyProcess, origin: Origin
) -> None:
    """20 clients each send a head gunicorn refuses (400) and keep their connection open:
    gunicorn would wait up to 2 s for each to close, in the worker's only loop. Others are
    served meanwhile."""
    path = origin.route("/meanwhile", headers=CACHED, body=b"served")
    held = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n")  # bare LF: 400
            held.append(sock)
        for sock in held:
            assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")
        for _ in range(3):
            reply = client.request(proxy.port, "GET", path, timeout=5)
            assert (reply.status, reply.body) == (200, b"served")
    finally:
        for sock in held:
            sock.close()


@GUARD
def test_on_tls_gunicorn_reads_the_head_and_a_silent_connection_is_closed_in_time(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """gunicorn's own TLS (--certfile), whose heads gunicorn reads itself: requests are
    served kept alive, and closed when asked; a connection that never starts its handshake
    waits for it in the main loop, closed once the timeout has passed (docs/security.md)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    timeout = 2.0
    proxy = proxy_factory(
        {"WSGI_PROXY_CLIENT_TIMEOUT": str(timeout)},
        command=lambda port: [
            *gunicorn_command(port), "--certfile", str(cert), "--keyfile", str(key)
        ],
    )  # fmt: skip
    path = origin.route("/tls", headers=CACHED, body=b"over tls")
    context = ssl.create_default_context(cafile=str(cert))
    request = f"GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode()
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        for cache in (b"MISS", b"HIT"):
            sock.sendall(request)
            answer = read_response(sock)
            assert answer.endswith(b"\r\n\r\nover tls"), answer
            assert b"\r\nX-Cache: " + cache + b"\r\n" in answer, answer
        sock.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        assert read_response(sock).endswith(b"\r\n\r\nover tls")
        assert sock.recv(100) == b""
    with Trickler.connect(proxy.port, 2, head=b"") as silent:
        assert poll(silent.all_closed, 3 * timeout), f"{silent.open_count()} still open"
        assert silent.answers == [b"", b""]
        lifetimes = silent.lifetimes()
        assert 0.9 * timeout < min(lifetimes) <= max(lifetimes) < 3 * timeout, lifetimes
    assert origin.count(path) == 1
