"""gunicorn's own error answers (a request its parser refused before the app ran: a bad
request line, a URI or a header too long, too many fields) as short ``text/plain``, like
the proxy's own errors (core/errors.py), instead of gunicorn's ``text/html`` page.

The hook is the worker class's ``handle_error``: it is handed a socket that turns the HTML
answer gunicorn writes there into ``<status> <reason>: <detail>`` in plain text, keeping
the status and gunicorn's access-log line. Only an answer shaped like gunicorn's error page
(a status line, ``Content-Type: text/html``, its ``<h1>`` page) is rewritten; anything else
goes out as gunicorn wrote it, so another gunicorn's answer is at worst its own.
"""

from __future__ import annotations

import html
import re
from typing import Any

# gunicorn's util.write_error (23.0 to 27.0): the status line, then its page, whose detail
# follows the <h1> title.
_PAGE = re.compile(
    rb"\AHTTP/1\.1 (\d{3}) ([^\r\n]*)\r\n(?:[^\r\n]+\r\n)*?Content-Type: text/html\r\n"
    rb"(?:[^\r\n]+\r\n)*\r\n.*?</h1>\s*(.*?)\s*</body>",
    re.DOTALL,
)
DETAIL_LIMIT = 200  # characters of gunicorn's message kept (it may quote the request)


def plain_error(answer: bytes) -> bytes | None:
    """gunicorn's HTML error ``answer`` as a short text/plain one, or None where
    ``answer`` is not gunicorn's error page."""
    found = _PAGE.match(answer)
    if found is None:
        return None
    status, reason = found.group(1).decode(), found.group(2).decode("latin-1")
    detail = html.unescape(found.group(3).decode("latin-1"))
    detail = "".join(c if c.isprintable() else "?" for c in detail)[:DETAIL_LIMIT]
    text = f"{status} {reason}: {detail}\n" if detail else f"{status} {reason}\n"
    body = text.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _PlainErrorSocket:
    """The client socket as ``handle_error`` gets it: what it sends whole (gunicorn's
    error page, one ``sendall``) goes out as ``plain_error`` makes it."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def sendall(self, data: bytes, *args: Any) -> None:
        self._sock.sendall(plain_error(bytes(data)) or data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PlainErrorPages:
    """Mixed into the proxy's worker classes, before gunicorn's worker."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, _PlainErrorSocket(client), addr, exc)  # type: ignore[misc]
