"""Answers from a stored entry: a 304 to the client's matching conditional, HEAD without a
body, a range, or the whole body; and the ready answer made of it (ready_answers.py).

Invariants:
- Each worker checks a body against its CRC-32 once per file (hits.py). Up to
  ``VERIFY_INLINE`` the check comes first: an unreadable or damaged body is not sent,
  ``serve`` answers None before the response starts, and the caller drops the entry and
  answers afresh. Beyond it, so that a first byte never waits for a scan of the whole
  file, the body is checked as it is sent (``CheckedStream``): its last block is held back
  until the sum matches, and a damaged body is cut short, never sent whole. A range of
  such a body is checked beside it, in the background: that one answer can carry damage.
- Bodies up to ``SMALL_BODY`` are read whole and sent with the head; larger ones by
  ``wsgi.file_wrapper``, which gunicorn sends with ``sendfile``, in flat memory (but for
  the first answer over ``VERIFY_INLINE`` in a worker: ``CheckedStream``, two blocks).
- The entry served (a ``Hit``, its file open) is the exchange's, closed when the request's
  call ends (request/exchange.py); a body sent from the file takes it over
  (``Exchange.hand_over_found``) and closes it once sent. Nothing here closes it.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor

from wsgi_proxy.core import headers as h
from wsgi_proxy.core import policy, validation
from wsgi_proxy.core.errors import CacheDamaged, RangeNotSatisfiable
from wsgi_proxy.core.model import Entry
from wsgi_proxy.flow.ready_answers import ReadyAnswers, file_body
from wsgi_proxy.request.exchange import Exchange
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.hits import Hit

# Stored bodies up to this size are read into memory and sent with the head; larger ones go
# by wsgi.file_wrapper (sendfile) with flat memory.
SMALL_BODY = 128 * 1024
# A stored body is checked against its CRC-32 on its first hit in each worker: before it is
# served up to this size; beyond, as it is sent (a first byte must not wait for a scan).
VERIFY_INLINE = 8 << 20
# Blocks a body checked as it is sent is read in: two are in memory at once. The first is
# small, as it goes out only once the second is read.
CHECK_BLOCK = 1 << 20
FIRST_BLOCK = 64 << 10


class Serving:
    """One per worker, beside the app: answers from the store's entries."""

    def __init__(
        self,
        store: Store,
        ready: ReadyAnswers,
        background: Executor,
        *,
        private_fields: tuple[str, ...],
        targeting: policy.Targeting,
        sent: Callable[[int], None],
        damaged: Callable[[CacheDamaged], None],
    ) -> None:
        self.store = store
        self.ready = ready
        self.background = background
        self.private_fields = private_fields
        self.targeting = targeting
        self.sent = sent  # counts body bytes sent from the cache
        self.damaged = damaged  # logs and counts a body cut short by its check

    def serve(
        self, ex: Exchange, found: Hit, marks: h.Headers, *, fresh: bool
    ) -> Iterable[bytes] | None:
        """Start the response to ``ex`` from ``found`` and give its body, or None (nothing
        started) when the stored body is unreadable. ``fresh``: ``found`` was read from the
        store and found fresh, so a GET served whole may be made a ready answer."""
        entry = found.entry
        fields = _client_fields(entry.head.headers, self.private_fields)
        if validation.is_not_modified(ex.req, entry.head, entry.response_time):
            ex.start_response("304 Not Modified", [*fields, *marks])
            return []
        status_line, span = entry.head.status_line, (0, entry.body_length)
        wanted = _wanted_range(ex, entry)
        if wanted is not None:
            status_line, span = "206 Partial Content", wanted
            fields = (*fields, ("Content-Range", _content_range(span, entry.body_length)))
        size = span[1] - span[0]
        body: Iterable[bytes]
        held: bytes | None = None  # the body, when read whole into memory
        if ex.req.method == "HEAD":
            body = ()
        elif size <= SMALL_BODY:
            held = self._read_whole(found, span)
            if held is None:
                return None
            body = (held,)
        else:
            wrapped = self._wrap_file(ex, found, span)
            if wrapped is None:
                return None
            body = wrapped
            ex.hand_over_found()  # the body closes the file once sent (gunicorn, CheckedStream)
        fields = (*fields, ("Content-Length", str(size)))
        if fresh and span == (0, entry.body_length):
            self._make_ready(ex, found, fields, held)
        ex.start_response(status_line, [*fields, *marks])
        if ex.req.method != "HEAD":
            self.sent(size)
        return body

    def _read_whole(self, found: Hit, span: tuple[int, int]) -> bytes | None:
        """The bytes of ``span``, checked; None if they cannot be read or fail the check.
        A small body is read whole, so that it is checked before any of it is sent."""
        try:
            data = found.read(*span)
        except OSError:
            data = b""
        intact = len(data) == span[1] - span[0] and self.store.verify(found, data)
        return data if intact else None

    def _wrap_file(self, ex: Exchange, found: Hit, span: tuple[int, int]) -> Iterable[bytes] | None:
        """The open file at ``span``'s start, for gunicorn's sendfile; or, for a whole body
        over ``VERIFY_INLINE`` not checked yet, a ``CheckedStream``; None if the body,
        checked before it is sent, is damaged."""
        # The hot set keeps bodies of at most 8 KiB, so a large one is always open.
        assert found.file is not None  # noqa: S101
        if not self.store.is_verified(found):
            if found.entry.body_length <= VERIFY_INLINE:
                if not self.store.verify(found):
                    return None
            elif span == (0, found.entry.body_length):
                return CheckedStream(found, self.store, damaged=self.damaged)
            else:
                self.background.submit(self.store.verify_later, found)
        return file_body(ex.environ, found.file, found.body_offset + span[0])

    def _make_ready(self, ex: Exchange, found: Hit, fields: h.Headers, held: bytes | None) -> None:
        """Keep the answer to a GET of a fresh entry, served whole, for the next plain
        request (ready_answers.py), once its body is checked (a large one: by a later answer)."""
        key = ex.ready_key
        if key is None or ex.req.method != "GET" or not self.store.fine_timestamps:
            return
        if not found.again:  # not looked up lately: unlikely to be asked for again soon
            return
        if self.store.is_verified(found):
            self.ready.make(key, ex.environ, found, fields, held, targeting=self.targeting)


class CheckedStream:
    """A stored body sent as it is checked, for its first answer in this worker: read in
    blocks and summed (CRC-32) on the way, with the last block held back until the sum
    matches its record. A mismatch removes the file and raises ``CacheDamaged`` before the
    last block goes out: gunicorn cuts the connection, and the client, short of the
    ``Content-Length`` it was promised, knows the body is not whole. Memory: two blocks."""

    def __init__(
        self,
        found: Hit,
        store: Store,
        block: int = CHECK_BLOCK,
        *,
        damaged: Callable[[CacheDamaged], None] | None = None,
    ) -> None:
        self.found = found
        self.store = store
        self.block = block
        self.damaged = damaged

    def __iter__(self) -> Iterator[bytes]:
        found = self.found
        assert found.file is not None  # noqa: S101 - a large body is always open
        fd, crc, held = found.file.fileno(), 0, b""
        position, end = found.body_offset, found.body_offset + found.entry.body_length
        size = min(FIRST_BLOCK, self.block)  # small first reads: an early first byte
        while position < end:
            data = os.pread(fd, min(size, end - position), position)
            size = self.block
            if not data:  # cut short since it was opened: the next lookup's length check
                raise self._damage(f"{found.location} ended early")  # removes the file
            crc = zlib.crc32(data, crc)
            position += len(data)
            if held:
                yield held
            held = data
        if not self.store.settle(found, crc):
            raise self._damage(f"{found.location} failed its checksum")
        if held:
            yield held

    def close(self) -> None:
        self.found.close()

    def _damage(self, detail: str) -> CacheDamaged:
        exc = CacheDamaged(detail)
        if self.damaged is not None:
            self.damaged(exc)
        return exc


def _wanted_range(ex: Exchange, entry: Entry) -> tuple[int, int] | None:
    """The byte range a GET asks of a stored 200 (RFC 9110 section 14.2), None for the
    whole body; ``RangeNotSatisfiable`` (416) for one that lies outside it."""
    if entry.head.status != 200 or not validation.is_range_applicable(
        ex.req, entry.head, entry.response_time
    ):
        return None
    wanted = h.parse_byte_range(ex.req.get("range"), entry.body_length)
    if wanted is False:
        raise RangeNotSatisfiable(entry.body_length)
    return wanted if isinstance(wanted, tuple) else None


@functools.lru_cache(maxsize=4096)
def _client_fields(stored: h.Headers, private: tuple[str, ...]) -> h.Headers:
    """A stored response's fields as a client gets them (memoised: the same for every hit;
    Content-Length and Age are set per response)."""
    return h.without(stored, ("content-length", "age", *private))


def _content_range(span: tuple[int, int], length: int) -> str:
    return f"bytes {span[0]}-{span[1] - 1}/{length}"
