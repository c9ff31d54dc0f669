"""gunicorn's gthread worker, with no thread waiting on a slow client's request head, and
connections closed in its main loop. On a gunicorn the seam was not verified on (see
``VERIFIED`` in this folder's ``__init__``), gunicorn's own worker runs instead.

gunicorn hands a connection to its thread pool as soon as it is accepted, or readable again
after a response; the thread reads the request head with blocking reads and no time limit,
so a client sending its head a byte at a time holds a thread as long as it likes, and a few
hundred of them hold every thread. And gunicorn closes a connection (``close_graceful``)
in its main loop, waiting up to 2 s for the client to close its end: one client that keeps
it open stops the worker for that long.

Invariants:
- A thread reads a plain HTTP/1 connection's head only once it has come whole (``handle``):
  it first looks at what has come without taking it (``MSG_PEEK``, the usual case: a whole
  head, which gunicorn then reads as always); a head not whole yet is taken into the
  parser's buffer, and the connection goes back to the poller until more comes, then to
  a thread again. No thread waits on a head. The main loop reads none: tried there, the
  look cost some 6 % of a pass-through's throughput, side by side (each read in the loop
  gives up the interpreter's lock, and waits to get it back, with every connection
  waiting behind it); and taking a whole head into the buffer, more than looking.
- A head's deadline is ``head_timeout`` seconds after it began to be awaited (accepted,
  readable again after a response, or left with part of a pipelined head), kept while it
  comes in parts. At the deadline it is answered 408 if some of its head came, else closed
  without an answer; a head over ``HEAD_LIMIT`` is answered 431. A kept-alive
  connection's idle time before its next head is gunicorn's keep-alive timeout, as before.
- gunicorn reads the rest itself on TLS (the handshake comes first), with HTTP/2 prior
  knowledge (the preface), the PROXY protocol (a header before the head, binary in its
  version 2) and the uwsgi protocol: only a new connection's wait for its first bytes is
  done here, under the same deadline (docs/security.md).
- A connection to close lingers in the poller as ``close_graceful`` would (its write side
  shut, what the client still sends read and dropped, up to ``LINGER_BYTES``), until the
  client closes or ``LINGER`` seconds pass.
- Every connection closed here is subtracted once from gunicorn's ``nr_conns``, which
  counts it until then (``worker_connections``; a stopping worker waits for it to be 0).
- Once the worker stops, every deadline here is at most gunicorn's STOP_KEEPALIVE_LINGER
  away: nothing waiting here outlasts the kept-alive connections.
- Only ``handle`` runs on a thread; the rest runs on the main loop's: gunicorn calls
  ``enqueue_req`` from its accept, its poller callbacks and ``finish_request``, and
  ``murder_pending`` every loop turn (at most a second apart), which enforces the
  deadlines (every ``SWEEP`` seconds, so up to that late).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.http2 import negotiation
from gunicorn.workers import gthread

from wsgi_proxy.tuning import is_tuned
from wsgi_proxy.tuning.request_heads import TIMEOUT_ANSWER, TOO_LARGE_ANSWER, HeadScan, scan_head

# gunicorn versions whose gthread worker this class was read against (its enqueue_req,
# finish_request, murder_pending, nr_conns, poller, TConn); on others it stands aside.
LINGER = 2.0  # seconds a closed connection's client gets to close its end (close_graceful's)
LINGER_BYTES = 64 * 1024  # bytes read and dropped meanwhile, at most (close_graceful's)
READ_SIZE = 8192  # bytes per read (gunicorn's unreader reads as much)
LATEST = float("inf")  # no cap: ``_deadline`` caps it only for a stopping worker
# Seconds between two looks at the waiting connections' deadlines (each looks at them all).
SWEEP = 0.25
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT  # look, without taking, without waiting


# handle()'s answer for a head not whole yet: back to the poller until more comes.
GATHER = object()
# The deadline of the head a connection is sending, set on it when that head is awaited.
_DEADLINE = "wsgi_proxy_head_deadline"


class _Waiting:
    """A connection waiting in the poller until ``deadline``: for more of its head (if
    ``reads``: else for its first bytes, which gunicorn reads), or for its client to close
    (``dropped``: the bytes read since)."""

    __slots__ = ("deadline", "dropped", "reads")

    def __init__(self, deadline: float, *, reads: bool = True) -> None:
        self.deadline = deadline
        self.reads = reads
        self.dropped = 0


class GatheringWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """The gthread worker, no thread waiting on a head, its closes lingering in the loop."""

    head_timeout = 60.0  # seconds for a whole request head (set before init_process)

    def init_process(self) -> None:
        # Used only where the seam is on for this gunicorn (server/settings.py); here too, in
        # case the class is named by hand: anywhere else gunicorn's own reading of heads.
        self._gathers = is_tuned("gunicorn")
        # Connections waiting in the poller (a head's deadline is kept while it comes in
        # parts, so these are in no particular order of deadline), and those closing.
        self._heads: dict[Any, _Waiting] = {}
        self._closing: dict[Any, _Waiting] = {}
        self._next_sweep = 0.0  # when murder_pending looks at their deadlines next
        self._stop_by = LATEST  # once stopping: when everything waiting here must be gone
        cfg = self.cfg
        self._plain = (
            not cfg.is_ssl
            and getattr(cfg, "protocol", "http") == "http"
            and cfg.proxy_protocol == "off"
        )
        self._prior_knowledge = cfg.http2_cleartext in ("prior-knowledge", "both")
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """gunicorn's; a plain HTTP/1 connection's head is awaited from now on (its deadline
        set), and read by the thread (``handle``)."""
        if self._gathers:
            if not self._reads_head(conn):
                if not (conn.initialized or conn.data_ready):
                    self._wait(conn, _Waiting(self._deadline(self.head_timeout), reads=False))
                    return
            else:
                setattr(conn, _DEADLINE, self._deadline(self.head_timeout))
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        """On a thread: gunicorn's, once the head is whole (``_head_state``)."""
        deadline = getattr(conn, _DEADLINE, None)
        if deadline is not None:
            state = self._head_state(conn, deadline)
            if state is not None:
                return state
            setattr(conn, _DEADLINE, None)
        return super().handle(conn)

    def _head_state(self, conn: Any, deadline: float) -> Any:
        """Read what has come of the head, without waiting: None when it is whole (left in
        the parser's buffer), ``GATHER`` when more must come, False when the connection is
        to close (the client gone; a head over the limit, or out of time, answered)."""
        conn.init()  # a new connection's parser: for plain HTTP/1, no I/O
        unreader = conn.parser.unreader
        if not unreader.buf.getvalue() and not conn.sock.gettimeout():
            # Nothing held: the usual case, a head that came whole, is seen without being
            # read (gunicorn reads it), nor the socket's mode changed. (Not on a socket with
            # a timeout, which Python waits on first whatever the flags: the app sets one
            # for a request's life, and a pipelined head comes before gunicorn resets it.)
            try:
                peeked = conn.sock.recv(READ_SIZE, _PEEK)
            except BlockingIOError:
                peeked = None
            except OSError:  # reset
                return False
            if peeked == b"":  # the client has gone
                return False
            if peeked is not None and scan_head(peeked, 0) is HeadScan.READY:
                return None
        data = unreader.take_buffered()  # what came before, or was pipelined
        scan = scan_head(data, 0) if data else HeadScan.PARTIAL
        conn.sock.setblocking(False)
        while scan is HeadScan.PARTIAL:
            try:
                chunk = conn.sock.recv(READ_SIZE)
            except BlockingIOError:
                break
            except OSError:  # reset
                return False
            if not chunk:  # the client has gone, whatever it sent
                return False
            start, data = len(data), data + chunk
            scan = scan_head(data, start)
        if scan is HeadScan.TOO_LARGE:
            self.log.warning("Invalid request from ip=%s: request head over the limit",
                             _ip(conn))  # fmt: skip
            _send_now(conn, TOO_LARGE_ANSWER)
            return False
        unreader.unread(data)
        if scan is HeadScan.READY:
            return None
        if time.monotonic() < min(deadline, self._stop_by):
            return GATHER
        if data:
            self.log.info("%s: request head not received in %g s, 408", _ip(conn),
                          self.head_timeout)  # fmt: skip
            _send_now(conn, TIMEOUT_ANSWER)
        return False

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gunicorn's, but a head not whole yet waits in the poller (``GATHER``), and a
        connection to close lingers there (``_linger``) instead of in gunicorn's blocking
        ``close_graceful``."""
        if self._gathers:
            try:
                state = fs.result(0)  # done: the pool calls this once it is
            except Exception:  # noqa: BLE001 - cancelled or failed: gunicorn's own way below
                state = True
            if state is GATHER:
                self._wait(conn, _Waiting(min(getattr(conn, _DEADLINE), self._deadline(LATEST))))
                return
            if not state:
                self._linger(conn)
                return
        super().finish_request(conn, fs)

    def murder_pending(self) -> None:
        """gunicorn's, and the deadlines here (see the module's docstring)."""
        super().murder_pending()
        if not self._gathers or not (self._heads or self._closing):
            return  # called at every turn of the loop: nothing to do, the usual case
        if not self.alive and self._stop_by == LATEST:
            latest = self._deadline(LATEST)  # sets _stop_by
            self._next_sweep = 0.0
            for waiting in (*self._heads.values(), *self._closing.values()):
                waiting.deadline = min(waiting.deadline, latest)
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP
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
        """``timeout`` seconds from now, or sooner: a stopping worker's connections all go
        within gunicorn's STOP_KEEPALIVE_LINGER of the stop, however their clients send."""
        now = time.monotonic()
        if not self.alive and self._stop_by == LATEST:
            self._stop_by = now + gthread.STOP_KEEPALIVE_LINGER
        return min(now + timeout, self._stop_by)

    def _wait(self, conn: Any, waiting: _Waiting) -> None:
        if conn not in self._heads:
            self._heads[conn] = waiting
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: Any, _sock: Any) -> None:
        """More of a head (or a first byte) has come: to a thread, its deadline kept."""
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
        held = conn.parser is not None and conn.parser.unreader.buf.getvalue()
        if head is not None and head.reads and held:
            self.log.info("%s: request head not received in %g s, 408", _ip(conn),
                          self.head_timeout)  # fmt: skip
            self._answer(conn, TIMEOUT_ANSWER)
        else:
            self._close(conn)

    # ---- closing --------------------------------------------------------------------------

    def _answer(self, conn: Any, answer: bytes) -> None:
        """Send ``answer`` if the socket takes it at once (it is short), then close."""
        _send_now(conn, answer)
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


def _send_now(conn: Any, answer: bytes) -> None:
    """Send ``answer`` if the socket takes it at once (it is short); never wait."""
    with contextlib.suppress(OSError):
        conn.sock.setblocking(False)
        conn.sock.send(answer)


def _due(waiting: dict[Any, _Waiting], now: float) -> list[Any]:
    """The connections of ``waiting`` whose deadline has passed."""
    return [conn for conn, entry in waiting.items() if entry.deadline <= now]


def _ip(conn: Any) -> str:
    client = conn.client
    return str(client[0]) if isinstance(client, tuple) else str(client)
