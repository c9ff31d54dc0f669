"""A programmable HTTP/1.1 origin that records every request it receives.

One server runs for the whole session in a background thread of the pytest process
(stdlib `ThreadingHTTPServer`, HTTP/1.1 with keep-alive, so the proxy's pool reuses its
connections). Each test gets an `Origin`: a view with its own path prefix, so tests that
share one proxy (and its cache) never see each other's routes, entries or requests.

Invariants:
- every request is recorded before it is answered: method, the request target exactly as
  it arrived, the header lines in order with duplicates, and the decoded body (chunked
  uploads are de-chunked and flagged);
- every request line is also recorded as soon as its head has arrived, before its body is
  read, so a request whose body never comes whole is seen too (`Origin.heads`);
- each TCP connection has a number, recorded with its requests and heads, and its end
  (the proxy closed it, or it broke) is recorded (`Origin.has_ended`);
- the answer is the `Reply` routed to (method, path), or a `no-store` 404 if none is;
- state is shared by handler threads and the test thread: one lock guards it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

from .bodies import pattern_chunks

Framing = Literal["length", "chunked", "close"]


@dataclass(frozen=True)
class Recorded:
    """One request as the origin received it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    chunked: bool
    connection: int = 0  # the number of the TCP connection it came on

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in arrival order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def header(self, name: str) -> str | None:
        """The values of `name` joined with ", ", or None when absent."""
        values = self.header_values(name)
        return ", ".join(values) if values else None


@dataclass(frozen=True)
class Head:
    """A request line as soon as its head arrived (the body not read yet), and the number
    of the TCP connection it came on."""

    connection: int
    method: str
    target: str


@dataclass(frozen=True)
class Reply:
    """How the origin answers.

    `body` is sent as given unless `generated` (a size: the body is `pattern_chunks`, made
    while sending) or `echo` (the body is the request's body). `framing`: `length` adds a
    Content-Length (unless `headers` has one), `chunked` sends Transfer-Encoding: chunked,
    `close` sends neither and closes the connection after the body. `delay` seconds pass
    before the status line.
    """

    status: int = 200
    reason: str | None = None
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    delay: float = 0.0
    framing: Framing = "length"
    generated: int | None = None
    echo: bool = False


Responder = Callable[[Recorded], Reply]

NOT_FOUND = Reply(
    status=404,
    headers=[("Content-Type", "text/plain"), ("Cache-Control", "no-store")],
    body=b"no route\n",
)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    routes: dict[tuple[str | None, str], Responder] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    heads: list[Head] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # numbers of the connections that ended
    errors: list[BaseException] = field(default_factory=list)
    connections: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # 20+ proxy connections arrive at once in the herd tests

    def __init__(self, state: _State, port: int) -> None:
        self.state = state
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A proxy that gave up (timeouts, aborted downloads) makes writes fail: keep the
        # error for debugging instead of printing a traceback into the test output.
        import sys  # noqa: PLC0415

        exc = sys.exc_info()[1]
        if exc is not None:
            with self.state.lock:
                self.state.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    connection_number = 0  # set per connection by handle()

    def log_message(self, format: str, *args: object) -> None:
        pass  # silence: the records are the log

    def handle(self) -> None:
        state = self.server.state
        with state.lock:
            self.connection_number = next(state.connections)
        try:
            super().handle()
        finally:
            with state.lock:
                state.ended.add(self.connection_number)

    def _serve(self) -> None:
        state = self.server.state
        with state.lock:
            state.heads.append(Head(self.connection_number, self.command, self.path))
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        body = self._read_chunked() if chunked else self._read_length()
        record = Recorded(
            method=self.command,
            target=self.path,
            headers=tuple((key, value) for key, value in self.headers.items()),
            body=body,
            chunked=chunked,
            connection=self.connection_number,
        )
        with state.lock:
            state.requests.append(record)
            responder = state.routes.get((record.method, record.path)) or state.routes.get(
                (None, record.path)
            )
        reply = responder(record) if responder else NOT_FOUND
        if reply.echo:
            reply = replace(reply, body=record.body)
        self._send(record, reply)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server dispatches method M to do_M: every method, known or not, is served
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _read_length(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # not a whole request: it is not recorded
            raise ConnectionError(f"the body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk

    def _send(self, record: Recorded, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        length = reply.generated if reply.generated is not None else len(reply.body)
        names = {key.lower() for key, _ in reply.headers}
        self.send_response_only(reply.status, reply.reason)
        for key, value in reply.headers:
            self.send_header(key, value)
        if reply.framing == "length" and "content-length" not in names:
            self.send_header("Content-Length", str(length))
        elif reply.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif reply.framing == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if record.method == "HEAD" or reply.status in (204, 304) or reply.status < 200:
            return
        for piece in self._pieces(reply):
            if reply.framing == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if reply.framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    @staticmethod
    def _pieces(reply: Reply) -> Iterator[bytes]:
        if reply.generated is not None:
            yield from pattern_chunks(reply.generated)
            return
        # a few pieces, so a chunked body really has several chunks
        step = max(1, len(reply.body) // 3)
        for start in range(0, len(reply.body), step):
            yield reply.body[start : start + step]


class OriginServer:
    """The session's origin server; `view(prefix)` hands a test its own part of it."""

    def __init__(self, port: int = 0) -> None:
        self._state = _State()
        self._server = _Server(self._state, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def view(self, prefix: str) -> Origin:
        return Origin(self._state, self.url, prefix)

    @classmethod
    @contextmanager
    def running(cls, port: int = 0) -> Iterator[OriginServer]:
        """A started server on `port` (0: a free one), shut down on exit."""
        server = cls(port)
        server._thread.start()
        try:
            yield server
        finally:
            server._server.shutdown()
            server._server.server_close()
            server._thread.join(timeout=5)


class Origin:
    """A test's part of the origin: routes and records under its own path prefix."""

    def __init__(self, state: _State, url: str, prefix: str) -> None:
        self._state = state
        self.url = url
        self.prefix = prefix

    @property
    def host(self) -> str:
        """`host:port` of the origin, as the proxy must send it in `Host`."""
        return self.url.removeprefix("http://")

    def route(
        self,
        path: str,
        *,
        status: int = 200,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        delay: float = 0.0,
        framing: Framing = "length",
        generated: int | None = None,
        echo: bool = False,
        method: str | None = None,
    ) -> str:
        """Answer requests for `path` (any method, or only `method`) with this reply.

        Returns the full path to request: this test's prefix + `path`.
        """
        reply = Reply(status, reason, tuple(headers), body, delay, framing, generated, echo)
        return self.respond(path, lambda _record: reply, method=method)

    def respond(self, path: str, responder: Responder, *, method: str | None = None) -> str:
        """Answer requests for `path` with `responder(request)`; returns the full path."""
        full = self.prefix + path
        with self._state.lock:
            self._state.routes[(method, full)] = responder
        return full

    def requests(self, path: str | None = None) -> list[Recorded]:
        """Requests received under this view (or for exactly the full `path`), in order."""
        with self._state.lock:
            records = list(self._state.requests)
        if path is not None:
            return [record for record in records if record.path == path]
        return [record for record in records if record.path.startswith(self.prefix + "/")]

    def heads(self) -> list[Head]:
        """Request lines under this view as their heads arrived, whether or not a whole
        request followed, in order."""
        with self._state.lock:
            heads = list(self._state.heads)
        return [head for head in heads if head.target.startswith(self.prefix + "/")]

    def has_ended(self, connection: int) -> bool:
        """Has TCP connection number `connection` ended (closed by the proxy, or broken)?"""
        with self._state.lock:
            return connection in self._state.ended

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests for the full `path` (any query) arrived, of `method` if given."""
        return sum(1 for record in self.requests(path) if method is None or record.method == method)

    def last(self, path: str) -> Recorded:
        """The latest request for the full `path`; fails the test if there is none."""
        records = self.requests(path)
        assert records, f"the origin received no request for {path}"
        return records[-1]
