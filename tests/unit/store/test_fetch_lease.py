"""The fetch lease's ownership rules, on a real store and real lock files: a lease is given
back once and never again; the request's exchange gives back what it holds when its block
ends, returned or raised, but for what it handed over; a body that streams into the cache
holds the lease until the entry is published (before its last chunk goes out), or until it
is closed, however it ends.

The origin's responses are urllib3's own ``HTTPResponse`` reading from memory: its framing
checks (a body shorter than its Content-Length) run as they do on a socket."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import urllib3

from wsgi_proxy.core import keys
from wsgi_proxy.core.errors import OriginBroken, ProxyError
from wsgi_proxy.core.model import Entry, RequestHead, ResponseHead
from wsgi_proxy.core.sites import Site
from wsgi_proxy.request.body_stream import StreamingBody
from wsgi_proxy.request.exchange import Exchange
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.entry_file import EntryWriter
from wsgi_proxy.store.fetch_locks import FetchLease, key_lock, try_lease, wait_for_fetch
from wsgi_proxy.store.hits import Hit
from wsgi_proxy.store.pending_entry import PendingEntry
from wsgi_proxy.upstream.origin_client import CHUNK_SIZE, OriginResponse

KEY = keys.primary_key("http://origin", "/lease", "http://example")
MINE = "a" * 64
BODY = bytes(range(256)) * (3 * CHUNK_SIZE // 256) + b"tail"  # four chunks, the last short
HEAD = ResponseHead(200, "OK", (("Cache-Control", "max-age=60"),))


def is_free(store: Store) -> bool:
    """Could another request take KEY's lease now? (If so it is given back at once.)"""
    lease = store.try_lease(KEY)
    if lease is None:
        return False
    lease.release()
    return True


def is_published(store: Store) -> bool:
    found = store.lookup(KEY, (), time.time())
    if isinstance(found, Hit):
        found.close()
        return True
    return False


def origin_response(body: bytes, length: int | None = None) -> OriginResponse:
    declared = len(body) if length is None else length
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(body),
        headers={"Content-Length": str(declared)},
        status=200,
        preload_content=False,
        decode_content=False,
        enforce_content_length=True,
    )
    return OriginResponse(raw)


def writer_for(store: Store, length: int) -> PendingEntry:
    writer = store.begin(
        Entry(KEY, HEAD, time.time(), time.time(), (), 0), expected_length=length, max_body=length
    )
    assert writer is not None
    return writer


def stored_hit(store: Store) -> Hit:
    writer = writer_for(store, 5)
    writer.write(b"hello")
    assert writer.commit()
    found = store.lookup(KEY, (), time.time())
    assert isinstance(found, Hit)
    assert found.file is not None
    return found


def _ignored(*_args: object) -> None:
    """start_response: nothing is answered in these tests."""


def exchange() -> Exchange:
    return Exchange(
        RequestHead("GET", "/lease", ()), {}, _ignored, Site("http", "example"), None, KEY
    )


@pytest.fixture
def lease(store: Store) -> Iterator[FetchLease]:
    taken = store.try_lease(KEY)
    assert taken is not None
    yield taken
    taken.release()


# ---- the lease ----------------------------------------------------------------------------


def test_a_lease_is_given_back_once_and_never_again(tmp_path: Path) -> None:
    path = tmp_path / "0.lock"
    lock = key_lock(str(path), MINE, 0)
    first = try_lease(lock)
    assert first is not None
    assert first.is_held
    assert try_lease(key_lock(str(path), MINE, 0)) is None  # held: nobody else takes it
    first.release()
    assert not first.is_held
    assert path.read_bytes() == b""
    second = try_lease(lock)  # the same lock, taken by its next owner
    assert second is not None
    first.release()  # a late second release of the first lease leaves the second's hold
    assert try_lease(key_lock(str(path), MINE, 0)) is None
    assert path.read_bytes() == MINE.encode()
    second.release()
    assert try_lease(key_lock(str(path), MINE, 0)) is not None


def test_a_lock_that_cannot_be_taken_is_not_waited_for(tmp_path: Path) -> None:
    """A lock file the disk refuses (read only; here its folder is a file): no fetch can
    hold it, so the caller goes on at once, with a lease holding nothing, and a waiter does
    not poll until its timeout."""
    (tmp_path / "locks").write_text("")
    lock = key_lock(str(tmp_path / "locks" / "0.lock"), MINE, 0)
    lease = try_lease(lock)
    assert lease is not None
    assert not lease.is_held
    lease.release()
    started = time.monotonic()
    assert wait_for_fetch(lock, MINE, timeout=30.0)
    assert time.monotonic() - started < 10.0


def test_a_with_block_gives_the_lease_back_on_an_error(store: Store, lease: FetchLease) -> None:
    with pytest.raises(OriginBroken), lease:
        assert not is_free(store)
        raise OriginBroken("the origin went away")
    assert not lease.is_held
    assert is_free(store)


# ---- the exchange -------------------------------------------------------------------------


@pytest.mark.parametrize("raised", [False, True])
def test_the_exchange_gives_back_what_it_holds_when_the_request_ends(
    store: Store, lease: FetchLease, raised: bool
) -> None:
    found = stored_hit(store)
    assert found.file is not None
    ends = pytest.raises(ProxyError) if raised else contextlib.nullcontext()
    with ends, exchange() as ex:
        ex.keep_found(found)
        ex.hold(lease)
        if raised:
            raise OriginBroken("the origin went away")
    assert is_free(store)
    assert found.file.closed
    assert (ex.found, ex.lease) == (None, None)
    ex.release()  # again: nothing left to give back


def test_what_the_exchange_hands_over_outlives_the_request(store: Store, lease: FetchLease) -> None:
    found = stored_hit(store)
    assert found.file is not None
    with exchange() as ex:
        ex.keep_found(found)
        ex.hold(lease)
        taken, kept = ex.hand_over_lease(), ex.hand_over_found()
    assert taken is lease
    assert lease.is_held
    assert not is_free(store)
    assert kept is found
    assert not found.file.closed
    found.close()


def test_keeping_another_entry_closes_the_one_held_but_not_its_freshened_self(
    store: Store,
) -> None:
    first, second = stored_hit(store), stored_hit(store)
    assert first.file is not None
    assert second.file is not None
    with exchange() as ex:
        ex.keep_found(first)
        ex.keep_found(second)
        assert first.file.closed
        ex.keep_found(replace(second, early=b""))  # after a 304: the same open file
        assert not second.file.closed
    assert second.file.closed


# ---- the body stream ----------------------------------------------------------------------


class WatchedEntry(PendingEntry):
    """The store's entry writer, noting whether the lease was still held once it published:
    a waiter woken by the lease's release must find the entry."""

    held_after_publishing: bool | None = None

    def __init__(self, store: Store, writer: EntryWriter) -> None:
        super().__init__(store, writer)
        self.whole_store = store

    def commit(self) -> bool:
        published = super().commit()
        self.held_after_publishing = not is_free(self.whole_store)
        return published


def streaming(
    store: Store, lease: FetchLease, resp: OriginResponse
) -> tuple[StreamingBody, WatchedEntry]:
    """A body made as the app makes it: inside the request's block, taking its lease."""
    writer = WatchedEntry(store, writer_for(store, len(BODY)).writer)
    with exchange() as ex:
        ex.hold(lease)
        body = StreamingBody(resp, writer, ex.hand_over_lease(), None)
        body.prefetch()
    assert not is_free(store)  # the request's call is over: the body holds the lease
    return body, writer


def test_a_body_releases_its_lease_once_published_before_its_last_chunk(
    store: Store, lease: FetchLease
) -> None:
    body, writer = streaming(store, lease, origin_response(BODY))
    seen = []
    with contextlib.closing(body):
        for chunk in body:
            seen.append((chunk, is_published(store), is_free(store)))
    assert b"".join(chunk for chunk, _, _ in seen) == BODY
    # Every chunk but the last goes out before the entry is published, the lease held; the
    # last only once the entry is published and the lease given back.
    states = [(published, free) for _, published, free in seen]
    assert states == [(False, False), (False, False), (False, False), (True, True)]
    assert writer.held_after_publishing is True


def test_a_body_closed_before_its_end_releases_its_lease_and_publishes_nothing(
    store: Store, lease: FetchLease
) -> None:
    body, _ = streaming(store, lease, origin_response(BODY))
    chunks = iter(body)
    next(chunks)
    assert not is_free(store)
    body.close()  # the client went away: the WSGI server closes the body
    assert not lease.is_held
    assert is_free(store)
    assert not is_published(store)


def test_a_body_cut_short_by_the_origin_releases_its_lease_when_closed(
    store: Store, lease: FetchLease
) -> None:
    body, _ = streaming(store, lease, origin_response(BODY[:-10], length=len(BODY)))
    with pytest.raises(OriginBroken), contextlib.closing(body):
        for _ in body:
            pass
    assert is_free(store)
    assert not is_published(store)
