"""Writes to a socket with a timeout, without the poll CPython makes before each one.

A Python socket with a timeout has a non-blocking descriptor, and its ``send``,
``sendall`` and ``sendmsg`` poll the socket before every system call, even when its buffer
has room, as it nearly always has for a response head or a request head: a system call,
and a release and retaking of the GIL, for nothing. ``write_now`` writes first and leaves
the waiting, when the buffer is full, to the caller's ``sendall``.

Invariants:
- Only a socket with a timeout is written directly; a blocking one gets its own
  ``sendmsg``. Callers pass plain sockets only (TLS sockets have no ``sendmsg``).
- The errors are the socket's: ``os.writev`` raises the same ``OSError`` subclasses
  (a client gone: ``BrokenPipeError``, ``ConnectionResetError``); SIGPIPE stays ignored
  (Python ignores it at start, and gunicorn does not restore it).
"""

from __future__ import annotations

import os
import socket
import sys


def write_now(sock: socket.socket, parts: list[bytes]) -> int:
    """As ``sock.sendmsg(parts)``: the bytes the kernel took, which may be fewer than
    given, or none (0) when the buffer of a socket with a timeout was full; the caller
    sends the rest."""
    if not sock.gettimeout():  # blocking (or non-blocking without a timeout): sendmsg's way
        return sock.sendmsg(parts)
    sys.audit("socket.sendmsg", sock, None)  # as sendmsg
    try:
        return os.writev(sock.fileno(), parts)
    except BlockingIOError:
        return 0
