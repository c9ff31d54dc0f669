"""The worker's HTTP/1 response writer: gunicorn's, with four per-response costs taken off.

- ``Date`` is formatted once a second, not on every response (nginx does the same):
  ``email.utils.formatdate`` was about 3 % of a worker's time on cache hits.
- The head goes in one ``writev`` with the first body bytes written from memory, where
  gunicorn sends each alone, polling the socket before each: three system calls and a
  packet fewer (socket_writes.py). A head sent alone (before a file) is not polled for either.
- Each field line goes through gunicorn's checks once: a line that passed them unchanged
  is remembered (a bounded set) and appended unchecked the next time. The checks took 12
  microseconds for a hit's 12 fields (timeit).
- A body from ``wsgi.file_wrapper`` goes by ``os.sendfile`` straight away, and the socket
  is polled only when its buffer is full. The standard library's ``socket.sendfile``, which
  gunicorn calls, builds a selector and polls before every call (the client socket has a
  timeout), and gunicorn seeks the file back after it: about 5 % of a worker's time on
  1 MiB hits. The benchmark's figures: docs/performance.md.

Invariants:
- A field line is appended unchecked only if gunicorn's checks appended that very line
  (a tuple of two ``str``) before, and it is neither Content-Length (which sets the
  response's length) nor hop-by-hop: the outcome is the one the checks would give again.
- The bytes on the wire are gunicorn's: the same status line and fields in the same order
  (``default_headers`` and the head's making are gunicorn 27's, with the cached date; unit
  tests compare the bytes), the same body. A write gunicorn would check, trim or frame
  (chunked, no body allowed, longer than ``Content-Length``) is gunicorn's own.
- TLS sockets are written by gunicorn's own ``write``. Anything but the plain case for a
  file (TLS, sendfile turned off, chunked framing, a response that omits its body, a
  socket without a timeout or a non-blocking one) goes to gunicorn's own ``sendfile``. A
  file the kernel refuses to ``sendfile`` from (before any byte went) is sent by the
  standard library's ``socket.sendfile``, which falls back to ``send``.
- A span of a held file (store/open_files.py), which the worker's threads share, is never sent
  from the file's position: by ``os.sendfile`` from its offset in the plain case (read by
  ``pread`` and sent if the kernel refuses it), and in any other case, or when the length
  differs from the span's, iterated: gunicorn's ``write`` sends what ``pread`` reads.
- ``headers_sent`` and ``sent`` change only once bytes went, as in gunicorn; ``sent``
  counts a file's bytes too (gunicorn's own ``sendfile`` leaves it at 0, so its access log
  says 0 bytes).
- The client's timeout holds for each wait on a full buffer, as in ``socket.sendfile``: a
  client that stops reading gets ``TimeoutError`` and gunicorn closes the connection.
- A body shorter on disk than its ``Content-Length`` is never passed off as whole:
  ``CacheDamaged`` is raised once the file's bytes are sent, and gunicorn cuts the
  connection (gunicorn's own ``sendfile`` would send it short and keep the connection).

Used by the tuned worker (gthread_worker.py) for each of its HTTP/1 responses, one
response at a time (``LeanResponses``); gunicorn's HTTP/2 writer is not touched.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
from collections.abc import Callable
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

from wsgi_proxy.core.errors import CacheDamaged
from wsgi_proxy.tuning.file_spans import FileSpan
from wsgi_proxy.tuning.per_second import PerSecond
from wsgi_proxy.tuning.socket_writes import write_now

COPY_BLOCK = 256 * 1024  # a refused span's reads
# Field lines remembered as passing gunicorn's checks (LeanResponse.process_headers); the
# set is emptied when full (an Age or a Cache-Status ttl differs from second to second).
PLAIN_FIELDS_MAX = 4096
_plain_fields: set[tuple[str, str]] = set()

# os.sendfile's errors for a file it cannot send from: the standard library's send() path
# takes over. Any other error (a client gone: EPIPE, ECONNRESET) is raised.
_REFUSED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ESPIPE})


# util.http_date(), formatted again only when the second changes.
http_date = PerSecond(lambda second: str(util.http_date(second)))


class LeanResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's ``Response`` with the cached ``Date``, the head sent with a body from
    memory, and the direct ``sendfile``."""

    headers_sent: bool  # gunicorn's (untyped) attribute

    def default_headers(self) -> list[str]:
        # gunicorn 27's, but for the date (requirements.txt pins gunicorn; a unit test
        # compares the two).
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = self.req.version
        headers = [
            f"HTTP/{version[0]}.{version[1]} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            f"Date: {http_date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def process_headers(self, headers: Any) -> None:
        # gunicorn's, but a remembered line is appended unchecked (module docstring).
        kept: list[tuple[str, str]] = self.headers
        plain = _plain_fields
        for field in headers:
            if type(field) is tuple and field in plain:
                kept.append(field)
                continue
            before = len(kept)
            super().process_headers((field,))
            if len(kept) == before + 1 and _plain(field, kept[-1]):
                if len(plain) >= PLAIN_FIELDS_MAX:
                    plain.clear()
                plain.add(kept[-1])

    def send_headers(self) -> None:
        if not self.headers_sent:
            head = self._head()
            if type(self.sock) is socket.socket:  # not TLS: see write()
                # Without the poll before the send, as in write(): the buffer nearly
                # always has room for a head.
                sent = write_now(self.sock, [head])
                if sent < len(head):
                    self.sock.sendall(memoryview(head)[sent:])
            else:
                self.sock.sendall(head)
            self.headers_sent = True

    def _head(self) -> bytes:
        # gunicorn 27's send_headers, but for the sending.
        lines = self.default_headers()
        lines.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        return f"{''.join(lines)}\r\n".encode("latin-1")

    def write(self, arg: bytes) -> None:
        # The head and the first bytes written in one send, without a poll first: three
        # system calls fewer than gunicorn's two polled sends, and one packet fewer.
        # (gunicorn's _emit_body, which only its HTTP/2 writer overrides, is skipped for
        # those bytes.)
        if (
            self.headers_sent
            or type(self.sock) is not socket.socket  # TLS: SSLSocket has no sendmsg
            or self._omits_body
            or self.chunked
            or not isinstance(arg, bytes)
            or not arg
            or (self.response_length is not None and len(arg) > self.response_length)
        ):
            super().write(arg)  # gunicorn's checks and framing
            return
        head = self._head()
        first = write_now(self.sock, [head, arg])
        # Marked only once bytes went, as gunicorn's send_headers and write do.
        self.headers_sent = True
        self.sent += len(arg)
        send_rest(self.sock, head, arg, first)

    def sendfile(self, respiter: Any) -> bool:
        timeout = self.sock.gettimeout()
        file = respiter.filelike
        direct = (
            timeout  # not None (blocking) nor 0 (non-blocking): those go gunicorn's way
            and type(self.sock) is socket.socket  # not TLS, as in write()
            and self.can_sendfile()
            and not self._omits_body
            and not self.is_chunked()
        )
        if type(file) is FileSpan:
            # A held file is shared by the threads: gunicorn's sendfile would send it from
            # its position, so a span goes from its offset here, or is read (iterated).
            if self._omits_body:
                self.send_headers()  # as gunicorn's sendfile: nothing of the file is read
                return True
            return bool(direct) and self._send_span(file, timeout)
        if not direct or not util.has_fileno(file):
            return bool(super().sendfile(respiter))
        fileno = file.fileno()
        try:
            offset = os.lseek(fileno, 0, os.SEEK_CUR)
            size = self.response_length
            if size is None:  # not chunked, so the connection's end frames the body
                size = os.fstat(fileno).st_size - offset
        except OSError:
            return False  # gunicorn then iterates the wrapper
        # Refused, the file goes by the stdlib's sendfile, which falls back to send().
        copy = functools.partial(self.sock.sendfile, file, offset=offset, count=size)
        return self._send_from(fileno, offset, size, timeout, copy)

    def _send_span(self, span: FileSpan, timeout: float) -> bool:
        size = span.size - span.position
        if self.response_length is not None and self.response_length != size:
            return False  # iterated: gunicorn's write() keeps to the length
        copy = functools.partial(self._copy_span, span)  # refused: read by pread
        return self._send_from(span.file.fd, span.offset + span.position, size, timeout, copy)

    def _send_from(
        self, fileno: int, offset: int, size: int, timeout: float, copy: Callable[[], int]
    ) -> bool:
        """The head, then ``size`` bytes of ``fileno`` from ``offset`` by ``send_file``, or
        by ``copy()`` (which returns the bytes it sent) if the kernel refuses the file."""
        self.send_headers()
        if size > 0:
            # Counted as gunicorn's write() counts, for the access log; as they go.
            sent = send_file(
                self.sock.fileno(), fileno, offset, size, timeout, progress=self._count
            )
            if sent == 0:
                sent = copy()
                self.sent += sent
            if sent < size:
                raise CacheDamaged(f"file ended {size - sent} bytes short of the response")
        return True

    def _count(self, sent: int) -> None:
        self.sent += sent

    def _copy_span(self, span: FileSpan) -> int:
        sent = 0
        while chunk := span.read(COPY_BLOCK):
            self.sock.sendall(chunk)
            sent += len(chunk)
        return sent


def _plain(given: Any, appended: tuple[str, str]) -> bool:
    """Whether gunicorn's checks appended the field line ``given`` as it was (a tuple of
    two ``str``, nothing stripped) and would do only that again: not Content-Length (it
    sets the response's length), not hop-by-hop (dropped, or an upgrade)."""
    if type(given) is not tuple or given != appended:
        return False
    name, value = appended
    return (
        type(name) is str
        and type(value) is str
        and name.lower() != "content-length"
        and not util.is_hoppish(name)
    )


def send_file(
    sockno: int,
    fileno: int,
    offset: int,
    size: int,
    timeout: float,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``size`` bytes of ``fileno`` from ``offset`` on the non-blocking socket
    ``sockno``, polling only when its buffer is full, each wait at most ``timeout``
    seconds (then ``TimeoutError``). Returns the bytes sent: ``size``, fewer when the file
    ends early, or 0 when the kernel refused the file before any byte went (the caller
    falls back). ``progress(n)`` is told of each ``n`` bytes as they go, so a send cut
    short by an error is counted too."""
    position, end = offset, offset + size
    while position < end:
        try:
            sent = os.sendfile(sockno, fileno, position, end - position)
        except BlockingIOError:
            _wait_writable(sockno, timeout)
            continue
        except OSError as exc:
            if position == offset and exc.errno in _REFUSED:
                return 0
            raise
        if sent == 0:  # the end of the file
            break
        position += sent
        if progress is not None:
            progress(sent)
    return position - offset


def send_rest(sock: socket.socket, head: bytes, body: bytes, sent: int) -> None:
    """What a ``sendmsg([head, body])`` that sent ``sent`` bytes left, sent in full
    (as by ``sendall``, without copying ``body``)."""
    if sent < len(head):
        sock.sendall(memoryview(head)[sent:])
        sock.sendall(body)
    elif sent < len(head) + len(body):
        sock.sendall(memoryview(body)[sent - len(head) :])


def _wait_writable(sockno: int, timeout: float) -> None:
    poller = select.poll()
    poller.register(sockno, select.POLLOUT)
    if not poller.poll(timeout * 1000):
        raise TimeoutError("timed out")


class LeanResponses:
    """WSGI middleware, put around the app by the tuned worker (gthread_worker.py): the
    response each request is written with becomes a ``LeanResponse``. That one object's
    class changes (gunicorn's ``start_response`` is a bound method of it); gunicorn's
    ``Response`` stays what it is for any other code in the process."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        response = getattr(start_response, "__self__", None)
        if type(response) is wsgi.Response:
            response.__class__ = LeanResponse
        return self.app(environ, start_response)
