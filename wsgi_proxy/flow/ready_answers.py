"""Ready answers: each worker keeps the last answer it gave to a plain fresh hit, and gives
it again without running the general flow, with ``Age`` and ``Cache-Status`` brought up to
date. They are kept by the request's scheme, ``Host`` and target as they arrived
(``sites.raw_key``), which tell its site and so its cache key.

A plain request is a GET or HEAD in origin form with none of the fields a reuse decision
reads (``reuse.REUSE_REQUEST_FIELDS``); for a stored response that does not vary, the flow
would then decide by the time alone (``reuse.plain_freshness``), read the same file and
send the same fields.

Not a cache per worker: the shared store stays the only cache, and every answer is checked
against the file it came from; this only spares the request parsing, the lookup and the
decision for the common request.

Invariants:
- An answer is made ready only from a stored response that the flow read from the store,
  found fresh and served whole to a plain request, from a body this worker checked
  against its CRC-32 (never from a stale answer, nor from one refreshed after a 304), and
  looked up lately (store/repeats.py: not an entry asked for once in a long while).
- Only where the filesystem keeps nanosecond mtimes (the store's probe, as for store/hot_set.py).
- It is given only while the file it came from is still in place and unchanged (one
  ``stat`` per answer: device, inode, size and mtime, as in store/hot_set.py), while fresh,
  until the file's LRU touch is due, and while no ban was added since the lookup it came
  from (store/bans.py: one read of a mapped counter); otherwise the flow answers, and may
  make it anew.
- A body over 128 KiB is not kept in memory: its answer is sent from the file
  (``sendfile``), which the worker holds open (store/open_files.py; a file over 8 MiB is opened
  per answer) and sends only while the path's ``stat`` shows that very file.
- Bounded by the bytes of the bodies it holds and by a number of answers, per worker; the
  oldest made goes first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from werkzeug.wsgi import FileWrapper

from wsgi_proxy.core import policy, reuse
from wsgi_proxy.core.headers import Headers
from wsgi_proxy.ops.body_bytes import BODY_FILE, CountedFile
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.hits import Hit
from wsgi_proxy.store.hot_set import Stamp
from wsgi_proxy.store.open_files import OpenFile
from wsgi_proxy.tuning.file_spans import FileSpan

log = logging.getLogger(__name__)

FILE_BLOCK = 256 * 1024  # what gunicorn reads a file by when it cannot use sendfile

# Environ keys of the request fields that make a request not plain.
_NOT_PLAIN = tuple(f"HTTP_{name.upper().replace('-', '_')}" for name in reuse.REUSE_REQUEST_FIELDS)


@dataclass(frozen=True, slots=True)
class Ready:
    """The answer to a plain request for one stored response, minus its per-request
    fields (``Age``, ``Via``, ``X-Cache``, ``Cache-Status``)."""

    stamp: Stamp  # of the file the body was read from
    location: str
    status_line: str
    fields: Headers  # the stored fields a client gets, and Content-Length
    body: bytes | None  # None: a large body, sent from the file by wsgi.file_wrapper
    body_offset: int  # where the body begins in the file
    size: int
    response_time: float
    freshness: reuse.PlainFreshness
    bans: int  # the ban generation its lookup was checked at (store/bans.py)


def _still_good(
    ready: Ready, store: Store, now: float, *, fresh: bool, opened: bool
) -> tuple[bool, OpenFile | None]:
    """Whether ``ready`` may be given (fresh, its file the same), and, for a body sent from
    the file when ``opened`` (not for HEAD), that file, open."""
    if not fresh or ready.bans < 0 or store.bans.generation() != ready.bans:
        return False, None  # stale, or a ban was added since its lookup: look again
    if ready.body is None and opened:
        file = store.hold_unchanged(ready.location, ready.stamp, now)
        return file is not None, file
    return store.is_unchanged(ready.location, ready.stamp, now), None


def file_body(environ: MutableMapping[str, Any], file: BinaryIO, offset: int) -> Iterable[bytes]:
    """``file`` from ``offset``, by ``wsgi.file_wrapper``: gunicorn sends as many bytes as
    the response's Content-Length with ``sendfile``, then closes the file. Handed over as a
    ``CountedFile`` left in ``environ``, so the access log learns the bytes sent
    (ops/body_bytes.py)."""
    file.seek(offset)
    counted = environ[BODY_FILE] = CountedFile(file, offset)
    return wrapped(environ, counted)


def wrapped(environ: Mapping[str, Any], filelike: CountedFile | FileSpan) -> Iterable[bytes]:
    """``filelike`` by ``wsgi.file_wrapper``. A held file's span is sent by the worker's
    writer with ``sendfile`` from its offset (tuning/gunicorn_response.py), read by
    ``pread`` by any other."""
    wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
    body: Iterable[bytes] = wrapper(filelike, FILE_BLOCK)
    return body


def is_plain(environ: Mapping[str, object]) -> bool:
    """A GET or HEAD in origin form without any of the reuse fields."""
    method = environ.get("REQUEST_METHOD")
    if method not in ("GET", "HEAD"):
        return False
    target = environ.get("RAW_URI")
    if not isinstance(target, str) or not target.startswith("/"):
        return False
    return not any(key in environ for key in _NOT_PLAIN)


class ReadyAnswers:
    """Ready answers by raw site and target. Reads take no lock; changes take one."""

    def __init__(self, max_bytes: int, max_answers: int) -> None:
        self.max_bytes = max_bytes
        self.max_answers = max_answers
        self.held = 0  # bytes of the bodies held
        # Answers given: a statistic for tests and profiles, which threads may undercount.
        self.given = 0
        self._by_target: dict[str, Ready] = {}
        self._lock = threading.Lock()

    def get(self, target: str) -> Ready | None:
        return self._by_target.get(target)

    def answer(
        self,
        key: str,
        environ: Mapping[str, Any],
        start_response: Callable[..., Any],
        clock: Callable[[], float],
        store: Store,
        *,
        marks: Callable[[float, float], Headers],
        sent: Callable[[int], None],
    ) -> Iterable[bytes] | None:
        """The ready answer kept under ``key`` (the request's ``sites.raw_key``) for
        ``environ``'s request, or None when there is none, or it ran stale, or its file
        changed (it is then forgotten), or the store lost its nanosecond mtimes.
        ``marks(age, ttl)`` gives the per-request fields and counts the hit; ``sent(size)``
        counts the body's bytes."""
        ready = self._by_target.get(key)
        if ready is None or not is_plain(environ) or not store.fine_timestamps:
            return None
        now = clock()
        age = ready.freshness.initial_age + max(0.0, now - ready.response_time)
        ttl = ready.freshness.lifetime - age
        head = environ["REQUEST_METHOD"] == "HEAD"
        unchanged, file = _still_good(ready, store, now, fresh=ttl > 0, opened=not head)
        if not unchanged:
            self.forget(key)
            return None
        log.debug("hit %s (ready) age=%.0f ttl=%.0f", key, age, ttl)
        self.given += 1
        start_response(ready.status_line, [*ready.fields, *marks(age, ttl)])
        if head:
            return []
        sent(ready.size)
        if file is None:
            return [ready.body or b""]
        # The file needs no closing: store/open_files.py closes it with its last reference.
        return wrapped(environ, FileSpan(file, ready.body_offset, ready.size))

    def make(
        self,
        key: str,
        environ: Mapping[str, object],
        found: Hit,
        fields: Headers,
        body: bytes | None,
        *,
        targeting: policy.Targeting,
    ) -> None:
        """Keep under ``key`` the answer just given to ``environ``'s request from ``found``
        (read from the store, fresh, its body checked), if the next plain request may be
        given the same: whole, or with ``body`` None to be sent from the file again."""
        freshness = reuse.plain_freshness(found.entry, targeting)
        if freshness is None or not is_plain(environ):
            return
        entry = found.entry
        self.add(key, Ready(found.stamp, found.location, entry.head.status_line, fields,
                               body, found.body_offset, entry.body_length,
                               entry.response_time, freshness, found.bans))  # fmt: skip

    def add(self, target: str, ready: Ready) -> None:
        weight = _held(ready)
        if weight > self.max_bytes or self.max_answers <= 0:
            return
        with self._lock:
            self._drop(target)
            while self._by_target and (
                self.held + weight > self.max_bytes or len(self._by_target) >= self.max_answers
            ):
                self._drop(next(iter(self._by_target)))
            self._by_target[target] = ready
            self.held += weight

    def forget(self, target: str) -> None:
        with self._lock:
            self._drop(target)

    def _drop(self, target: str) -> None:
        dropped = self._by_target.pop(target, None)
        if dropped is not None:
            self.held -= _held(dropped)

    def __len__(self) -> int:
        return len(self._by_target)


def _held(ready: Ready) -> int:
    return 0 if ready.body is None else len(ready.body)
