"""An origin that writes exact bytes: for responses no well-behaved server would send.

For each connection: read the request head, record it, write the bytes routed to its path
(as given, framing errors included), then close the connection. Runs in background
threads of the pytest process on a free loopback port.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nCache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n"
)
IO_TIMEOUT = 5.0


class RawOrigin:
    """Routes a path to the exact bytes written back; records each request head."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        self._lock = threading.Lock()
        self._routes: dict[str, bytes] = {}
        self._heads: list[bytes] = []
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, path: str, data: bytes) -> None:
        """Answer requests whose path (before any `?`) is `path` with exactly `data`."""
        with self._lock:
            self._routes[path] = data

    def heads(self) -> list[bytes]:
        """The request heads received, request line first, in arrival order."""
        with self._lock:
            return list(self._heads)

    def count(self, path: str) -> int:
        """Requests received whose path is `path`."""
        return sum(1 for head in self.heads() if _path_of(head) == path)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[RawOrigin]:
        origin = cls()
        origin._acceptor.start()
        try:
            yield origin
        finally:
            origin._closing.set()
            origin._acceptor.join(timeout=5)
            origin._listener.close()
            for thread in origin._threads:
                thread.join(timeout=IO_TIMEOUT)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(IO_TIMEOUT)
            head = b""
            with suppress(OSError):
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        break
                    head += data
            if not head:
                return
            with self._lock:
                self._heads.append(head)
                reply = self._routes.get(_path_of(head), _NOT_FOUND)
            with suppress(OSError):  # the proxy may close first; nothing to report
                conn.sendall(reply)
                conn.shutdown(socket.SHUT_RDWR)


def _path_of(head: bytes) -> str:
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    target = parts[1].decode("latin-1") if len(parts) > 1 else ""
    return target.split("?", 1)[0]
