"""A span of a held file (store/open_files.py): what ``wsgi.file_wrapper`` carries for a
large body the worker keeps open. Here, beside the response writer that sends it with
``sendfile`` from its offset (gunicorn_response.py), so that the writer needs nothing
from the store.

Invariant: a span is never read by the file's position (the worker's threads share the
file): ``read`` uses ``pread`` from the span's offset, and a span has no ``fileno()``, so
gunicorn's own ``sendfile`` (which would send from the position) iterates it instead.
"""

from __future__ import annotations

import os
from typing import Protocol

from wsgi_proxy.core.errors import CacheDamaged


class HeldFile(Protocol):
    """An open file descriptor, closed when its holder goes (store/open_files.OpenFile)."""

    fd: int


class FileSpan:
    """``size`` bytes of ``file`` from ``offset``: what ``wsgi.file_wrapper`` carries for a
    held file. gunicorn_response.py sends it with ``sendfile`` from the offset; any other writer
    iterates the wrapper, which calls ``read``."""

    __slots__ = ("file", "offset", "position", "size")

    def __init__(self, file: HeldFile, offset: int, size: int) -> None:
        self.file = file
        self.offset = offset
        self.size = size
        self.position = 0  # read so far, by read()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes after those read so far (all that is left if negative);
        ``CacheDamaged`` if the file ends before the span."""
        left = self.size - self.position
        if size < 0 or size > left:
            size = left
        if size == 0:
            return b""
        data = os.pread(self.file.fd, size, self.offset + self.position)
        if not data:
            raise CacheDamaged(f"file ended {left} bytes short of the response")
        self.position += len(data)
        return data
