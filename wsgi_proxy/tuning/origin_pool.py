"""urllib3's pool used a step below ``urlopen`` (urllib3 2.8): a connection is taken
(``checkout``), the request made on it (``send_on``) and the connection given back
(``give_back``) by the origin client itself. ``urlopen`` re-encodes the request target
(percent-encodings in upper case, bytes outside its set encoded) where a proxy must send
it byte for byte, and hides whether a connection was reused, which the origin client
needs to retry a request its keep-alive connection lost, and to not risk one idle too
long. Where the seam is off, the origin client uses ``urlopen`` (upstream/origin_client.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from urllib3 import HTTPConnectionPool


def checkout(pool: HTTPConnectionPool) -> Any:
    """A connection of ``pool``'s, reused or new (not connected yet)."""
    return pool._get_conn()


def give_back(pool: HTTPConnectionPool, conn: Any) -> None:
    """Return ``conn`` to ``pool`` (a closed one reconnects when next used)."""
    pool._put_conn(conn)


def send_on(
    pool: HTTPConnectionPool,
    conn: Any,
    method: str,
    target: str,
    *,
    body: bytes | Iterable[bytes] | None,
    headers: Mapping[str, str],
    chunked: bool,
) -> Any:
    """Send the request on ``conn`` and read the final response's head; the body is left
    unread and undecoded, the connection with the response."""
    return pool._make_request(
        conn,
        method,
        target,
        body=body,
        headers=headers,
        chunked=chunked,
        response_conn=conn,
        preload_content=False,
        decode_content=False,
        enforce_content_length=True,
    )
