"""head_parser: the origin's response heads give the message http.client's own parser gives,
by the quick path for plain heads and by the email package for the rest."""

from __future__ import annotations

import http.client
import io
import random
import socket
from typing import Any

import pytest

from wsgi_proxy.tuning import origin_heads as head_parser
from wsgi_proxy.tuning.origin_heads import (
    PlainHeadsResponse,
    PlainMessage,
    parse_headers,
    plain_fields,
    stdlib_parse_headers,
)

NGINX = (
    b"Server: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 17:11:50 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b'Connection: keep-alive\r\nETag: "abc-400"\r\nAccept-Ranges: bytes\r\n\r\n'
)

# (head, plain: taken by the quick path)
HEADS = [
    (NGINX, True),
    (b"\r\n", True),  # no fields at all
    (b"\n", True),
    (b"A: 1\nB: 2\n\n", True),  # LF line ends
    (b"A: 1\r\nB: 2\n\r\n", True),  # mixed
    (b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nSET-COOKIE: c=3\r\n\r\n", True),  # repeats, cases
    (b"X:\r\nY:  \t \r\nZ:\tv\r\n\r\n", True),  # empty values, leading blanks taken off
    (b"X: v  \t\r\n\r\n", True),  # trailing blanks kept
    (b"X: a: b : c\r\n\r\n", True),  # colons in the value
    (b"X: caf\xe9 \xff\x00\x7f\r\n\r\n", True),  # latin-1 and control bytes in the value
    (b"~!#$%&'*+-.^_`|{}\"(),/;<=>?@[\\]: odd\r\n\r\n", True),  # every name character
    (b"Content-Type: text/html; charset=utf-8\r\n\r\n", True),
    (b"Content-Type: multipart/byteranges; boundary=x\r\n\r\n", False),  # parts looked for
    (b"content-type: Message/HTTP\r\n\r\n", False),
    (b"Content-Type: text/plain\r\nCONTENT-TYPE: multipart/mixed\r\n\r\n", False),
    (b"X-Content-Type: multipart/x\r\n\r\n", True),  # not the Content-Type
    (b"A: 1\r\n folded\r\n\r\n", False),  # obs-fold
    (b"A: 1\r\n\tfolded\r\n\r\n", False),
    (b"A : 1\r\n\r\n", False),  # space before the colon: not a field to the email parser
    (b": no name\r\nB: 2\r\n\r\n", False),
    (b"no colon\r\nB: 2\r\n\r\n", False),
    (b"From nobody\r\nB: 2\r\n\r\n", False),  # an mbox envelope line to the email parser
    (b"A: 1\rB: 2\r\n\r\n", False),  # a bare CR ends a line for the email parser
    (b"A: 1\r\r\n\r\n", False),
    (b"Caf\xe9: 1\r\n\r\n", False),  # a name byte outside ASCII
    (b"A\x7f: 1\r\n\r\n", False),
    (b"A: 1\r\nB: 2\r\n", False),  # ended by the connection's end, not an empty line
    (b"", False),
    (b"A: 1\r\n \r\n", False),  # the "empty" line is a continuation
]


def view(message: Any) -> tuple[Any, ...]:
    """What a message is, to its users (http.client, urllib3); parts compared by theirs."""
    payload = message.get_payload()
    return (
        # its class, a PlainMessage counted as the HTTPMessage it stands for
        http.client.HTTPMessage if type(message) is PlainMessage else type(message),
        message.items(),
        [type(defect) for defect in message.defects],
        [view(part) for part in payload] if isinstance(payload, list) else payload,
        message.get_unixfrom(),
        message.is_multipart(),
        message.get_content_type(),
        message.preamble,
        message.epilogue,
    )


def both(head: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(stdlib's, ours) for ``head`` followed by a body, with what each left to read."""
    results = []
    for parse in (stdlib_parse_headers, parse_headers):
        stream = io.BytesIO(head + b"BODY")
        results.append((*view(parse(stream)), stream.read()))
    return results[0], results[1]


@pytest.mark.parametrize(("head", "plain"), HEADS)
def test_the_message_is_the_email_parsers(head: bytes, plain: bool) -> None:
    stdlib, ours = both(head)
    assert ours == stdlib
    lines = http.client._read_headers(io.BytesIO(head + b"BODY"))  # type: ignore[attr-defined]
    assert (plain_fields(lines) is not None) == plain


@pytest.mark.parametrize(("head", "plain"), HEADS)
def test_a_plain_heads_message_lists_its_fields_as_the_email_policy_does(
    head: bytes, plain: bool
) -> None:
    message = parse_headers(io.BytesIO(head))
    assert (type(message) is PlainMessage) is plain
    assert message.items() == http.client.HTTPMessage.items(message)  # the policy's way
    assert type(parse_headers(io.BytesIO(head), _class=_OwnMessage)) is _OwnMessage


class _OwnMessage(http.client.HTTPMessage):
    """A caller's own message class, which the parser must build as asked."""


def test_random_heads_give_the_email_parsers_message() -> None:
    """Heads made of the pieces that trip parsers up, in random order: each one's message
    is the stdlib's, by either path."""
    names = ["A", "content-type", "Content-Type", "", " A", "A ", "From ", "\xe9", "a\tb", "x\x1f"]
    values = ["", " ", "\t", "v", " v ", "\r", ":", "multipart/x", "MESSAGE", "\xe9", "a\x00b",
              "\x0b\x0c", "\x1c\x85"]  # fmt: skip  # line breaks to str.splitlines, not to email
    ends = ["\r\n", "\n", "\r\r\n", "\r"]
    rng = random.Random(20261129)
    plain = 0
    for _ in range(3000):
        lines = []
        for _ in range(rng.randrange(4)):
            line = rng.choice(names) + rng.choice([":", ": ", "", " :"])
            line += "".join(rng.choice(values) for _ in range(rng.randrange(3)))
            lines.append(line + rng.choice(ends))
        head = ("".join(lines) + rng.choice(["\r\n", "\n", "", " \r\n"])).encode("latin-1")
        stdlib, ours = both(head)
        assert ours == stdlib, head
        plain += plain_fields(http.client._read_headers(io.BytesIO(head))) is not None  # type: ignore[attr-defined]
    assert 300 < plain < 2700  # both paths were taken, often


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"A: " + b"x" * 70_000 + b"\r\n\r\n", http.client.LineTooLong),
        (b"A: 1\r\n" * 101 + b"\r\n", http.client.HTTPException),
    ],
    ids=["line-too-long", "too-many-fields"],
)
def test_http_clients_limits_hold(head: bytes, error: type[Exception]) -> None:
    for parse in (stdlib_parse_headers, parse_headers):
        with pytest.raises(error):
            parse(io.BytesIO(head))


# Responses for PlainHeadsResponse.begin against http.client's: (method, bytes on the wire).
BEGIN_CASES = {
    "nginx": ("GET", b"HTTP/1.1 200 OK\r\n" + NGINX.replace(b"1024", b"4") + b"BODY"),
    "continue-first": (
        "GET",
        b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    "chunked": (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    "chunked-and-length": (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n"
        b"Content-Length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    "http10-keep-alive": (
        "GET",
        b"HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
    ),
    "http10-close": ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "close": ("GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"),
    "no-length": ("GET", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end"),
    "negative-length": ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc"),
    "bad-length": ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nabc"),
    "head": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
    "no-content": ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    "not-modified": ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n'),
    "early-hints": ("GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
    "folded": ("GET", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  more\r\nContent-Length: 2\r\n\r\nok"),
    "multipart": (
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed; boundary=b\r\n"
        b"Content-Length: 2\r\n\r\nok",
    ),
    "reason-spaces": ("GET", b"HTTP/1.1 200  Fine  \r\nContent-Length: 0\r\n\r\n"),
}


def _begun(cls: type[http.client.HTTPResponse], method: str, wire: bytes) -> Any:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(wire)
        theirs.shutdown(socket.SHUT_WR)
        response = cls(ours, method=method)
        try:
            response.begin()
        except http.client.HTTPException as exc:
            return type(exc)
        state = (response.status, response.reason, response.version, response.chunked,
                 response.length, response.will_close, response.msg.items())  # fmt: skip
        return state, response.read()


@pytest.mark.parametrize("case", sorted(BEGIN_CASES))
def test_plain_heads_response_begins_as_http_client(case: str) -> None:
    method, wire = BEGIN_CASES[case]
    assert _begun(PlainHeadsResponse, method, wire) == _begun(
        http.client.HTTPResponse, method, wire
    )


@pytest.mark.parametrize("wire", [b"HTTP/2.0 200 OK\r\n\r\n", b"nonsense\r\n\r\n", b""])
def test_plain_heads_response_refuses_as_http_client(wire: bytes) -> None:
    assert _begun(PlainHeadsResponse, "GET", wire) == _begun(http.client.HTTPResponse, "GET", wire)


def test_plain_heads_response_parses_with_the_seam_and_leaves_http_client_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def counted(fp: Any, _class: Any = http.client.HTTPMessage) -> Any:
        calls.append(1)
        return parse_headers(fp, _class)

    monkeypatch.setattr(head_parser, "parse_headers", counted)
    assert _begun(PlainHeadsResponse, "GET", BEGIN_CASES["nginx"][1])[1] == b"BODY"
    assert calls == [1]
    assert http.client.parse_headers is stdlib_parse_headers
