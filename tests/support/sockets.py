"""Socket pairs with small buffers, for tests of what is sent and how: a body of a few
hundred KiB fills them many times over, so partial sends and waits really happen."""

from __future__ import annotations

import socket

BUFFER = 16 << 10  # bytes: each side's socket buffer


def small_pair(timeout: float | None = 5.0) -> tuple[socket.socket, socket.socket]:
    """(the server's end, with ``timeout`` as the proxy sets it; the client's end)."""
    server, peer = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    server.settimeout(timeout)
    peer.settimeout(5)
    return server, peer


def read_all(sock: socket.socket, into: bytearray) -> None:
    """Into ``into`` until the other end closes."""
    while data := sock.recv(1 << 16):
        into += data


def read_exactly(sock: socket.socket, size: int, into: bytearray) -> None:
    """Into ``into`` until it holds ``size`` bytes (or the other end closes)."""
    while len(into) < size and (data := sock.recv(1 << 16)):
        into += data


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a new connection to ``port`` and read until it is closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = bytearray()
        read_all(sock, received)
    return bytes(received)
