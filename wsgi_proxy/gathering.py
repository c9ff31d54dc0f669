"""gunicorn's gthread worker, with request heads gathered and connections closed in its main
loop, so that no thread waits on a slow client for either. Checked on gunicorn 27.0.1; on
a gunicorn it was not checked on (``CHECKED_ON``) it stands aside, logging so, and gunicorn's
own worker runs.

gunicorn hands a connection to its thread pool as soon as it is accepted, or readable again
after a response; the thread reads the request head with blocking reads and no time limit,
so a client sending its head a byte at a time holds a thread as long as it likes, and a few
hundred of them hold every thread. And gunicorn closes a connection (``close_graceful``)
in its main loop, waiting up to 2 s for the client to close its end: one client that keeps
it open stops the worker for that long.

Invariants:
- A plain HTTP/1 connection reaches the thread pool only with its head whole in its
  parser's buffer (``request_heads.READY``), so that the thread never reads a head from
  the socket. Until then it waits in the poller, non-blocking, its bytes kept here, until
  its deadline: ``head_timeout`` seconds after its head began to be awaited (accepted, or
  readable again after a response, or left with part of a pipelined head). At the
  deadline it is answered 408 if some of its head came, else closed without an answer; a
  head over ``HEAD_LIMIT`` is answered 431. A kept-alive connection's idle time before its
  next head is gunicorn's keep-alive timeout, as before.
- gunicorn reads the rest itself on TLS (the handshake comes first), with HTTP/2 prior
  knowledge (the preface), the PROXY protocol (a header before the head, binary in its
  version 2) and the uwsgi protocol: only a new connection's wait for its first bytes is
  done here, under the same deadline (README, Security).
- A connection to close lingers in the poller as ``close_graceful`` would (its write side
  shut, what the client still sends read and dropped, up to ``LINGER_BYTES``), until the
  client closes or ``LINGER`` seconds pass.
- Every connection closed here is subtracted once from gunicorn's ``nr_conns``, which
  counts it until then (``worker_connections``; a stopping worker waits for it to be 0).
- Once the worker stops, every deadline here is at most gunicorn's STOP_KEEPALIVE_LINGER
  away: nothing waiting here outlasts the kept-alive connections.
- All of it runs on the main loop's thread: gunicorn calls ``enqueue_req`` from its accept,
  its poller callbacks and ``finish_request``, and ``murder_pending`` every loop turn (at
  most a second apart), which enforces the deadlines.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from functools import partial
from typing import Any

import gunicorn
from gunicorn.http2 import negotiation
from gunicorn.workers import gthread

from wsgi_proxy.request_heads import TIMEOUT_ANSWER, TOO_LARGE_ANSWER, HeadScan, scan_head

# gunicorn versions whose gthread worker this class was read against (its enqueue_req,
# finish_request, murder_pending, nr_conns, poller, TConn); on others it stands aside.
CHECKED_ON = ("27.0.",)
LINGER = 2.0  # seconds a closed connection's client gets to close its end (close_graceful's)
LINGER_BYTES = 64 * 1024  # bytes read and dropped meanwhile, at most (close_graceful's)
READ_SIZE = 8192  # bytes per read (gunicorn's unreader reads as much)


class _Waiting:
    """A connection waiting in the poller until ``deadline``: for its head (what came of it in
    ``data``, if ``reads``: else gunicorn reads it), or for its client to close
    (``dropped``: the bytes read since)."""

    __slots__ = ("data", "deadline", "dropped", "reads")

    def __init__(self, deadline: float, *, reads: bool = True) -> None:
        self.data = bytearray()
        self.deadline = deadline
        self.reads = reads
        self.dropped = 0


class GatheringWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """The gthread worker, its heads gathered and its closes lingering in the main loop."""

    head_timeout = 60.0  # seconds for a whole request head (set before init_process)

    def init_process(self) -> None:
        # gunicorn's worker, read for what this class overrides, on these versions only;
        # on any other, gunicorn's own behaviour (heads read on threads, unbounded).
        self._gathers = gunicorn.__version__.startswith(CHECKED_ON)
        if not self._gathers:
            self.log.warning("gunicorn %s: request heads are read by gunicorn's threads, "
                             "without WSGI_PROXY_CLIENT_TIMEOUT's bound (checked on %s)",
                             gunicorn.__version__, ", ".join(CHECKED_ON))  # fmt: skip
        self._heads: dict[Any, _Waiting] = {}  # insertion order is deadline order
        self._closing: dict[Any, _Waiting] = {}  # likewise
        self._stopping = False  # the deadlines have been brought forward
        cfg = self.cfg
        self._plain = (
            not cfg.is_ssl
            and getattr(cfg, "protocol", "http") == "http"
            and cfg.proxy_protocol == "off"
        )
        self._prior_knowledge = cfg.http2_cleartext in ("prior-knowledge", "both")
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """gunicorn's, once the connection's head is whole; see the module's docstring."""
        if not self._gathers:
            super().enqueue_req(conn)
            return
        if conn.initialized and self._plain and not conn.is_http2 and self._at_once(conn):
            return
        if not self._reads_head(conn):
            if conn.initialized or conn.data_ready:
                super().enqueue_req(conn)
            else:
                self._wait(conn, _Waiting(self._deadline(self.head_timeout), reads=False))
            return
        head = _Waiting(self._deadline(self.head_timeout))
        if conn.parser is not None:  # what gunicorn read past the last request: pipelined
            head.data += conn.parser.unreader.take_buffered()
            if head.data and self._decide(conn, head, 0):
                return
        self._read(conn, head)

    def _at_once(self, conn: Any) -> bool:
        """The common case, quicker: a kept-alive connection, readable again, nothing held
        of its next head, which one read brings whole. Whether it went to the pool; if
        not, what the read brought is in its parser's buffer for the general way."""
        unreader = conn.parser.unreader
        sock = conn.sock
        if sock.getblocking() or unreader.buf.getvalue():
            return False
        try:
            chunk = sock.recv(READ_SIZE)
        except OSError:  # nothing after all (BlockingIOError), or a reset: the general way
            return False
        if chunk:
            unreader.unread(chunk)
            if scan_head(chunk, 0) is not HeadScan.READY:
                return False
            super().enqueue_req(conn)
        else:  # the client has gone
            self._close(conn)
        return True

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gunicorn's, but a connection to close lingers in the poller (``_linger``)
        instead of in gunicorn's blocking ``close_graceful``."""
        if self._gathers:
            try:
                keep = fs.result(0)  # done: the pool calls this once it is
            except Exception:  # noqa: BLE001 - cancelled or failed: gunicorn's own way below
                keep = True
            if not keep:
                self._linger(conn)
                return
        super().finish_request(conn, fs)

    def murder_pending(self) -> None:
        """gunicorn's, and the deadlines here (see the module's docstring)."""
        super().murder_pending()
        if not self._gathers or not (self._heads or self._closing):
            return  # called at every turn of the loop: nothing to do, the usual case
        if not self.alive and not self._stopping:
            self._stopping = True
            latest = time.monotonic() + gthread.STOP_KEEPALIVE_LINGER
            for waiting in (*self._heads.values(), *self._closing.values()):
                waiting.deadline = min(waiting.deadline, latest)
        now = time.monotonic()
        for conn in _due(self._heads, now):
            self._expire(conn, self._forget(conn))
        for conn in _due(self._closing, now):
            del self._closing[conn]
            self._unregister_and_close(conn)

    # ---- heads ----------------------------------------------------------------------------

    def _reads_head(self, conn: Any) -> bool:
        """Whether the head is gathered here: plain HTTP/1 (see the module's docstring)."""
        if not self._plain:
            return False
        return not (
            self._prior_knowledge and negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        )

    def _deadline(self, timeout: float) -> float:
        if not self.alive:
            timeout = min(timeout, gthread.STOP_KEEPALIVE_LINGER)
        return time.monotonic() + timeout

    def _read(self, conn: Any, head: _Waiting) -> None:
        """Read what has come of the head; hand it over, answer, or wait for more."""
        sock = conn.sock
        if sock.getblocking():  # after a pipelined request: the thread made it blocking
            sock.setblocking(False)
        while True:
            try:
                chunk = sock.recv(READ_SIZE)
            except BlockingIOError:
                self._wait(conn, head)
                return
            except OSError:  # reset
                chunk = b""
            if not chunk:  # the client has gone, whatever it sent
                self._forget(conn)
                self._close(conn)
                return
            start = len(head.data)
            head.data += chunk
            if self._decide(conn, head, start):
                return

    def _decide(self, conn: Any, head: _Waiting, start: int) -> bool:
        """Hand the head over or answer 431 if its bytes allow it; whether they did."""
        scan = scan_head(head.data, start)
        if scan is HeadScan.PARTIAL:
            return False
        self._forget(conn)
        if scan is HeadScan.READY:
            conn.init()  # a new connection's parser: for plain HTTP/1, no I/O
            conn.parser.unreader.unread(head.data)
            super().enqueue_req(conn)
        else:
            self.log.warning("Invalid request from ip=%s: request head over the limit",
                             _ip(conn))  # fmt: skip
            self._answer(conn, TOO_LARGE_ANSWER)
        return True

    def _wait(self, conn: Any, waiting: _Waiting) -> None:
        if conn not in self._heads:
            self._heads[conn] = waiting
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: Any, _sock: Any) -> None:
        head = self._heads[conn]
        if head.reads:
            self._read(conn, head)
            return
        self._forget(conn)
        conn.data_ready = True  # gunicorn's handle() then reads at once
        super().enqueue_req(conn)

    def _forget(self, conn: Any) -> _Waiting | None:
        """Take ``conn`` out of the heads waiting in the poller (if it was there)."""
        waiting = self._heads.pop(conn, None)
        if waiting is not None:
            self.poller.unregister(conn.sock)
        return waiting

    def _expire(self, conn: Any, head: _Waiting | None) -> None:
        if head is not None and head.data:
            self.log.info("%s: request head not received in %g s, 408", _ip(conn),
                          self.head_timeout)  # fmt: skip
            self._answer(conn, TIMEOUT_ANSWER)
        else:
            self._close(conn)

    # ---- closing --------------------------------------------------------------------------

    def _answer(self, conn: Any, answer: bytes) -> None:
        """Send ``answer`` if the socket takes it at once (it is short), then close."""
        with contextlib.suppress(OSError):
            conn.sock.setblocking(False)  # blocking after a pipelined request (the thread's)
            conn.sock.send(answer)
        self._linger(conn)

    def _linger(self, conn: Any) -> None:
        """Close ``conn`` as gunicorn's close_graceful does, without waiting here: shut its
        write side (sending what was written, then FIN, where an immediate close could
        reset what the client has not read yet), then drop what it still sends until it
        closes its end, up to LINGER_BYTES or LINGER seconds."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:  # gone already
            self._close(conn)
            return
        closing = _Waiting(self._deadline(LINGER), reads=False)
        if self._drain(conn, closing):
            self._close(conn)
            return
        self._closing[conn] = closing
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._closable, conn))

    def _closable(self, conn: Any, _sock: Any) -> None:
        if self._drain(conn, self._closing[conn]):
            del self._closing[conn]
            self._unregister_and_close(conn)

    def _drain(self, conn: Any, closing: _Waiting) -> bool:
        """Read and drop what the client sends; whether it is done (closed, or too much)."""
        while True:
            try:
                chunk = conn.sock.recv(READ_SIZE)
            except BlockingIOError:
                return False
            except OSError:
                return True
            closing.dropped += len(chunk)
            if not chunk or closing.dropped >= LINGER_BYTES:
                return True

    def _unregister_and_close(self, conn: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(conn.sock)
        self._close(conn)

    def _close(self, conn: Any) -> None:
        self.nr_conns -= 1
        conn.close()


def _due(waiting: dict[Any, _Waiting], now: float) -> list[Any]:
    """The connections of ``waiting`` (in deadline order) whose deadline has passed."""
    due = []
    for conn, entry in waiting.items():
        if entry.deadline > now:
            break
        due.append(conn)
    return due


def _ip(conn: Any) -> str:
    client = conn.client
    return str(client[0]) if isinstance(client, tuple) else str(client)
