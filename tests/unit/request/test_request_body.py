"""client_body.request_body over gunicorn's own body readers (its ``Body`` on an iterable of
received pieces): what is read before the origin is asked, what is sent and how, and which
client failures become which ``ProxyError``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import IterUnreader

from wsgi_proxy.core.errors import (
    BadRequest,
    ClientTimeout,
    PayloadTooLarge,
    ProxyError,
    UnsupportedCoding,
)
from wsgi_proxy.request.client_body import LimitedBody, request_body

BLOCK = LimitedBody.BLOCK
LIMIT = 1 << 20
BIG = bytes(range(256)) * 400  # 102,400 bytes: more than one block
Pieces = Sequence[bytes | BaseException]


def received(pieces: Pieces) -> Iterator[bytes]:
    """The client's bytes as the socket hands them out; an exception is raised there."""
    for piece in pieces:
        if isinstance(piece, BaseException):
            raise piece
        yield piece


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def environ(framing: str, pieces: Pieces) -> dict[str, object]:
    """A WSGI environ whose ``wsgi.input`` is gunicorn's Body, chunked or of a length."""
    unreader = IterUnreader(received(pieces))
    if framing.startswith("length="):
        length = framing.removeprefix("length=")
        reader: object = LengthReader(unreader, int(length) if length.isdigit() else 0)
        return {"CONTENT_LENGTH": length, "wsgi.input": Body(reader)}
    reader = ChunkedReader(SimpleNamespace(), unreader)
    return {"HTTP_TRANSFER_ENCODING": framing, "wsgi.input": Body(reader)}


# (framing, received pieces) -> (what is sent: bytes, "stream" or None; chunked; the body)
WHOLE_OR_STREAMED: dict[str, tuple[str, Pieces, str | None, bool, bytes]] = {
    "no body": ("length=0", [], None, False, b""),
    "length, small": ("length=5", [b"hel", b"lo"], "bytes", False, b"hello"),
    "length, exactly a block": ("length=65536", [b"a" * BLOCK], "bytes", False, b"a" * BLOCK),
    "length, past a block": (f"length={len(BIG)}", [BIG], "stream", False, BIG),
    "chunked, small": ("chunked", [chunked(b"ab", b"cd")], "bytes", False, b"abcd"),
    "chunked, empty": ("chunked", [chunked()], None, False, b""),
    "chunked, past a block": ("chunked", [chunked(BIG[:70000], BIG[70000:])], "stream", True, BIG),
    "chunked, exactly a block": ("chunked", [chunked(b"z" * BLOCK)], "stream", True, b"z" * BLOCK),
}


@pytest.mark.parametrize("case", sorted(WHOLE_OR_STREAMED))
def test_a_body_whole_in_its_first_block_is_sent_as_bytes(case: str) -> None:
    framing, pieces, kind, want_chunked, want = WHOLE_OR_STREAMED[case]
    body, is_chunked = request_body(environ(framing, pieces), LIMIT)
    assert is_chunked == want_chunked
    if kind is None:
        assert body is None
    elif kind == "bytes":
        assert body == want
    else:
        assert isinstance(body, LimitedBody)
        assert body.first == want[: len(body.first)]
        assert len(body.first) >= BLOCK  # read before the origin is asked
        assert b"".join(body) == want


# (framing, received pieces) -> the error, raised before anything is returned
REFUSED_AT_ONCE: dict[str, tuple[str, Pieces, type[ProxyError]]] = {
    "invalid first chunk size": ("chunked", [b"zz\r\nab\r\n0\r\n\r\n"], BadRequest),
    "invalid size after a chunk": ("chunked", [b"5\r\nhello\r\nzz\r\n"], BadRequest),
    "chunk without its CRLF": ("chunked", [b"5\r\nhelloXX0\r\n\r\n"], BadRequest),
    "chunked, cut short": ("chunked", [b"5\r\nhel"], BadRequest),
    "chunked, no last chunk": ("chunked", [b"5\r\nhello\r\n"], BadRequest),
    "length, cut short": ("length=100", [b"only ten b"], BadRequest),
    "invalid length": ("length=4x", [b"abcd"], BadRequest),
    "length over the limit": (f"length={LIMIT + 1}", [], PayloadTooLarge),
    "another coding": ("gzip, chunked", [chunked(b"ab")], UnsupportedCoding),
    "stalled client": ("length=100", [b"ten bytes.", TimeoutError()], ClientTimeout),
    "connection reset": ("chunked", [b"5\r\nhe", ConnectionResetError(104, "reset")], BadRequest),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_ONCE))
def test_a_bad_first_block_is_refused_before_the_origin_is_asked(case: str) -> None:
    framing, pieces, error = REFUSED_AT_ONCE[case]
    with pytest.raises(error) as raised:
        request_body(environ(framing, pieces), LIMIT)
    assert raised.type is error  # converted once: never gunicorn's or an OSError


# (framing, received pieces) -> the error, raised while the rest is sent
REFUSED_LATER: dict[str, tuple[str, Pieces, type[ProxyError]]] = {
    "invalid chunk size": (
        "chunked", [b"%x\r\n%s\r\n" % (BLOCK, BIG[:BLOCK]), b"zz\r\n"], BadRequest
    ),
    "chunked, cut short": (
        "chunked", [b"%x\r\n%s\r\n" % (BLOCK, BIG[:BLOCK]), b"5\r\nab"], BadRequest
    ),
    "length, cut short": (f"length={len(BIG)}", [BIG[:80000]], BadRequest),
    "connection reset": (
        f"length={len(BIG)}", [BIG[:80000], ConnectionResetError(104, "x")], BadRequest
    ),
    "chunked over the limit": ("chunked", [chunked(b"x" * (LIMIT + 1))], PayloadTooLarge),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED_LATER))
def test_a_body_failing_after_its_first_block_raises_a_proxy_error(case: str) -> None:
    framing, pieces, error = REFUSED_LATER[case]
    body, _ = request_body(environ(framing, pieces), LIMIT)
    assert isinstance(body, LimitedBody)
    blocks = iter(body)
    assert len(next(blocks)) >= BLOCK
    with pytest.raises(ProxyError) as raised:
        list(blocks)
    assert raised.type is error
