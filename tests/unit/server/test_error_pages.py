"""server/error_pages.py: gunicorn's HTML error page made short plain text."""

from __future__ import annotations

import textwrap

import pytest

from wsgi_proxy.server.error_pages import plain_error


def _gunicorn_page(status: int, reason: str, mesg: str) -> bytes:
    """What gunicorn's util.write_error (23.0 to 27.0) writes, mesg HTML-escaped."""
    page = textwrap.dedent(f"""\
    <html>
      <head>
        <title>{reason}</title>
      </head>
      <body>
        <h1><p>{reason}</p></h1>
        {mesg}
      </body>
    </html>
    """)
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(page)}\r\n\r\n")  # fmt: skip
    return (head + page).encode("latin-1")


@pytest.mark.parametrize(
    ("status", "reason", "mesg", "body"),
    [
        (400, "Bad Request", "Invalid Request Line &#x27;GARBAGE&#x27;",
         "400 Bad Request: Invalid Request Line 'GARBAGE'\n"),
        (414, "URI Too Long", "", "414 URI Too Long\n"),
        (431, "Request Header Fields Too Large", "Error parsing headers: &#x27;limit&#x27;",
         "431 Request Header Fields Too Large: Error parsing headers: 'limit'\n"),
        (400, "Bad Request", "a\tcontrol &lt;b&gt;", "400 Bad Request: a?control <b>\n"),
        (400, "Bad Request", "x" * 500, "400 Bad Request: " + "x" * 200 + "\n"),
    ],
)  # fmt: skip
def test_plain_error(status: int, reason: str, mesg: str, body: str) -> None:
    answer = plain_error(_gunicorn_page(status, reason, mesg))
    assert answer is not None
    head, _, sent = answer.partition(b"\r\n\r\n")
    assert head.decode().split("\r\n") == [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(sent)}",
    ]
    assert sent.decode() == body


@pytest.mark.parametrize(
    "other",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n400 Bad Request\n",
        b"<html><h1>x</h1></html>",
        b"",
    ],
)
def test_anything_else_is_left_alone(other: bytes) -> None:
    assert plain_error(other) is None
