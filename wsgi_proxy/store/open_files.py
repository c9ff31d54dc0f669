"""Each worker's open files for the large bodies of its ready answers
(flow/ready_answers.py): a repeat answer costs the one ``stat`` of every ready answer,
instead of ``open``, ``fstat``, ``lseek`` and ``close`` per request, as nginx's
``open_file_cache`` spares them.

Invariants:
- A file is held by its path and the stamp (device, inode, size, mtime) its ``fstat`` gave
  when it was opened, and given only for that stamp. The caller has just seen that stamp at
  the path (``Store.hold_unchanged``), and published files never change in place
  (entry_file.py), so a file given is the file at the path. While it is held, its inode
  cannot be freed, so no other file can take its number.
- Shared by the worker's threads, so never read by its position: spans are sent with
  ``sendfile`` from their offset and read with ``pread``, and nothing seeks it. A span
  therefore never exposes ``fileno()``: gunicorn's own ``sendfile`` would send from the
  position, so it iterates the span instead (``FileSpan.read``).
- Never closed under a request: nothing calls ``close``. A file is closed when the last
  reference to it goes (the memo's or a span's), by CPython's reference counting, so an
  answer being sent keeps its file open after the memo drops it, and a descriptor number
  is never reused while a ``sendfile`` may still use it.
- Bounded per worker: at most ``MAX_FILES`` files, each of at most ``MAX_BODY`` bytes
  (a larger one is opened per answer and closed after it: its ``open`` costs nothing next
  to its sending); the oldest opened goes first.
- A file that can no longer be given is let go: at once when a ready answer's check
  finds its path changed, gone or due for its LRU touch, and otherwise by ``prune``,
  which the worker's evictor thread calls every half second (eviction.py). So a file
  removed from the cache (evicted, purged, replaced, cleared) keeps its disk blocks for
  about half a second at most after its removal, and a file whose touch is due (the
  touch gives the path a new stamp) is not kept.

Part of the store (cache.py holds one per worker), as hot_set.py is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from wsgi_proxy.store.hot_set import Stamp, stamp_of

MAX_FILES = 32
MAX_BODY = 8 << 20


class OpenFile:
    """One held descriptor, closed with its last reference."""

    __slots__ = ("fd", "stamp")

    def __init__(self, fd: int, stamp: Stamp) -> None:
        self.fd = fd
        self.stamp = stamp

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        # A default argument: the function is still at hand while the interpreter exits.
        _close(self.fd)


class OpenFiles:
    """Held files by path. Reads take no lock; changes take one."""

    def __init__(
        self, lifetime: float, max_files: int = MAX_FILES, max_size: int = MAX_BODY
    ) -> None:
        self.lifetime = lifetime  # seconds after its mtime that a file may be given (LRU)
        self.max_files = max_files
        self.max_size = max_size
        self._by_path: dict[str, OpenFile] = {}
        self._lock = threading.Lock()

    def get(self, path: str, stamp: Stamp) -> OpenFile | None:
        """The file at ``path`` with ``stamp``, held, or opened now (and held if it is not
        too large); None if what opens there has another stamp (it changed since the
        caller's ``stat``) or cannot be opened."""
        held = self._by_path.get(path)
        if held is not None:
            if held.stamp == stamp:
                return held
            self.forget(path)
        opened = _open(path)
        if opened is None or opened.stamp != stamp:
            return None  # closed with its last reference, now
        if opened.stamp[2] <= self.max_size and self.max_files > 0:
            with self._lock:
                self._by_path.pop(path, None)
                while len(self._by_path) >= self.max_files:
                    del self._by_path[next(iter(self._by_path))]
                self._by_path[path] = opened
        return opened

    def forget(self, path: str) -> None:
        if path in self._by_path:
            with self._lock:
                self._by_path.pop(path, None)

    def prune(self, now: float) -> None:
        """Let go of the files that can no longer be given: their LRU touch is due, or their
        path shows another file or none. One ``stat`` per file held."""
        oldest = (now - self.lifetime) * 1e9
        for path, held in list(self._by_path.items()):  # a copy: other threads change it
            if held.stamp[3] >= oldest and _shows(path, held.stamp):
                continue
            with self._lock:
                if self._by_path.get(path) is held:
                    del self._by_path[path]

    def __len__(self) -> int:
        return len(self._by_path)


def _shows(path: str, stamp: Stamp) -> bool:
    try:
        return stamp_of(os.stat(path)) == stamp
    except OSError:
        return False


def _open(path: str) -> OpenFile | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    return OpenFile(fd, stamp_of(stat))
