"""An HTTP client that sends exactly the headers given and returns exactly what came back.

Built on `http.client` with `skip_host`/`skip_accept_encoding`, so nothing is added
except the `Host` (and `Content-Length` for a bytes body) this module writes on purpose.
Every call has a timeout and closes its connection.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

TIMEOUT = 15.0
Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Response:
    """What the client received: status line, header lines in order, body bytes."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def header(self, name: str) -> str | None:
        """The values of `name` joined with ", ", or None when absent."""
        values = self.header_values(name)
        return ", ".join(values) if values else None

    @property
    def x_cache(self) -> str | None:
        return self.header("X-Cache")

    def describe(self) -> str:
        """Status, headers and the start of the body, for assertion messages."""
        lines = [f"{self.status} {self.reason}"]
        lines += [f"{key}: {value}" for key, value in self.headers]
        return "\n".join(lines) + f"\n\n{self.body[:200]!r}"


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: Headers,
    body: bytes | Iterable[bytes] | None,
) -> None:
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    names = {key.lower() for key, _ in headers}
    if "host" not in names:
        conn.putheader("Host", f"{conn.host}:{conn.port}")
    for key, value in headers:
        conn.putheader(key, value)
    if isinstance(body, bytes) and "content-length" not in names:
        conn.putheader("Content-Length", str(len(body)))
    elif body is not None and not isinstance(body, bytes) and "transfer-encoding" not in names:
        conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    if isinstance(body, bytes):
        conn.send(body)
    elif body is not None:
        for piece in body:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")


def request(
    port: int,
    method: str,
    target: str,
    headers: Headers = (),
    body: bytes | Iterable[bytes] | None = None,
    timeout: float = TIMEOUT,
    source: str | None = None,
) -> Response:
    """Send one request on a new connection to 127.0.0.1:`port` and read the whole answer.

    A bytes `body` gets a Content-Length; any other iterable is sent chunked. `Host` is
    127.0.0.1:`port` unless `headers` has one. The connection comes from `source` if given
    (another loopback address). Framing errors (a short body, a cut connection) raise
    `http.client.HTTPException` or `OSError`.
    """
    address = None if source is None else (source, 0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=address)
    try:
        _send(conn, method, target, headers, body)
        reply = conn.getresponse()
        data = reply.read()
        return Response(reply.status, reply.reason, tuple(reply.getheaders()), data)
    finally:
        conn.close()


def get(port: int, target: str, headers: Headers = (), timeout: float = TIMEOUT) -> Response:
    return request(port, "GET", target, headers, timeout=timeout)


@contextmanager
def stream(
    port: int, target: str, headers: Headers = (), timeout: float = TIMEOUT
) -> Iterator[http.client.HTTPResponse]:
    """GET `target` and hand over the response unread, to read the body piece by piece."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        _send(conn, "GET", target, headers, None)
        reply = conn.getresponse()
        try:
            yield reply
        finally:
            reply.close()
    finally:
        conn.close()
