"""The body bytes an answer sent, as the access log reports them: what gunicorn counts in
``resp.sent`` (and nginx in ``$body_bytes_sent``): the body only, without the head; 0 for
HEAD, 304 and any answer without a body.

gunicorn counts the bytes it writes, but not those it sends from a file with ``sendfile``
(``wsgi.file_wrapper``): there ``sent`` stays 0. The tuned writer counts them
(tuning/gunicorn_response.py); for gunicorn's own writer (the seam off), a stored body's
file is handed over as a ``CountedFile``: gunicorn sends it with the standard library's
``socket.sendfile``, which seeks the file to the end of what it sent, on return and on an
error alike (its documented way of telling how much went), and the file remembers it.

Invariant: a count is taken from one source only, gunicorn's ``sent`` when it counted
anything, else the file's: a body is either written (counted) or sent from the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, BinaryIO

# The environ key under which the flow leaves the CountedFile of a body sent from a file.
BODY_FILE = "wsgi_proxy.body_file"


class CountedFile:
    """A stored body's open file, from ``start``, for ``wsgi.file_wrapper``: reads pass
    through; a seek past ``start`` (``socket.sendfile``'s, once it has sent) is taken as
    the bytes sent so far."""

    __slots__ = ("file", "sent", "start")

    def __init__(self, file: BinaryIO, start: int) -> None:
        self.file = file
        self.start = start
        self.sent = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.sent = max(self.sent, offset - self.start)
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


def body_bytes_sent(resp: Any, environ: Mapping[str, Any]) -> int | None:
    """The body bytes the answer ``resp`` sent; None if the writer counts none."""
    sent = getattr(resp, "sent", None)
    if not sent:
        counted = environ.get(BODY_FILE)
        if isinstance(counted, CountedFile) and counted.sent:
            return counted.sent
    return sent if isinstance(sent, int) else None
