"""The origin client's edge (origin_client._converted): what urllib3 and the socket raise
becomes the errors tree, the same whether raised bare (the seam's path below urlopen) or
wrapped by urlopen in ProtocolError("Connection aborted.", error); only a lost connection
stays ProtocolError, which the client retries."""

from __future__ import annotations

import errno
import http.client
import socket

import pytest
from urllib3.connection import HTTPConnection
from urllib3.exceptions import NameResolutionError, NewConnectionError, ProtocolError

from wsgi_proxy.core.errors import BadRequest, OriginBroken, OriginUnreachable
from wsgi_proxy.upstream.origin_client import _converted, _lost_connection

CASES: dict[str, tuple[BaseException, type[BaseException]]] = {
    "lost: remote disconnected": (http.client.RemoteDisconnected("closed"), ProtocolError),
    "lost: reset": (ConnectionResetError(104, "reset"), ProtocolError),
    "an unasked 101": (http.client.HTTPException("switched protocols (101)"), OriginBroken),
    "a bad status line": (http.client.BadStatusLine("HTTP/9 x"), OriginBroken),
    "an invalid target": (http.client.InvalidURL("bad"), BadRequest),
    "another OSError": (OSError("no route"), OriginBroken),
}


def _raising(exc: BaseException) -> object:
    raise exc


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped by urlopen"])
@pytest.mark.parametrize(("raised", "expected"), CASES.values(), ids=CASES.keys())
def test_errors_convert_alike_bare_or_wrapped(
    raised: BaseException, expected: type[BaseException], wrapped: bool
) -> None:
    error = ProtocolError("Connection aborted.", raised) if wrapped else raised
    with pytest.raises(expected):
        _converted(_raising, error)


def test_a_protocol_error_of_urllib3_s_own_stays_one() -> None:
    with pytest.raises(ProtocolError):
        _converted(_raising, ProtocolError("Response ended prematurely"))


def _new_connection_error(cause: OSError) -> NewConnectionError:
    """What urllib3 raises when it cannot connect: the socket's error as its cause."""
    try:
        raise NewConnectionError(HTTPConnection("origin.example"), f"Failed: {cause}") from cause
    except NewConnectionError as exc:
        return exc


def _name_error() -> NameResolutionError:
    cause = socket.gaierror(-2, "Name or service not known")
    try:
        raise NameResolutionError(
            "origin.example", HTTPConnection("origin.example"), cause
        ) from cause
    except NameResolutionError as exc:
        return exc


# What the client is told (the 502's detail), and the socket's words kept for the log.
CONNECT_FAILURES: dict[str, tuple[BaseException, str, str]] = {
    "refused": (_new_connection_error(ConnectionRefusedError(errno.ECONNREFUSED, "Refused")),
                "the origin refused the connection", "[Errno 111] Refused"),
    "unresolved": (_name_error(), "the origin's host name cannot be resolved", "not known"),
    "unreachable": (_new_connection_error(OSError(errno.EHOSTUNREACH, "No route to host")),
                    "the origin's network cannot be reached", "No route to host"),
    "other": (_new_connection_error(OSError(errno.EPERM, "Operation not permitted")),
              "the proxy cannot connect to the origin", "Operation not permitted"),
}  # fmt: skip


@pytest.mark.parametrize(("raised", "told", "logged"), CONNECT_FAILURES.values(),
                         ids=CONNECT_FAILURES.keys())  # fmt: skip
def test_a_failed_connection_is_told_in_the_clients_terms(
    raised: BaseException, told: str, logged: str
) -> None:
    with pytest.raises(OriginUnreachable) as caught:
        _converted(_raising, raised)
    assert caught.value.detail == told
    assert logged in caught.value.cause and logged not in caught.value.body.decode()


LOST: dict[str, tuple[BaseException, str]] = {
    "closed": (http.client.RemoteDisconnected("Remote end closed connection"),
               "the origin closed the connection without answering"),
    "reset": (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
              "the origin reset the connection"),
    "aborted": (ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort"),
                "the connection to the origin failed"),
    "other": (OSError(errno.EIO, "Input/output error"), "the connection to the origin failed"),
}  # fmt: skip


@pytest.mark.parametrize(("raised", "told"), LOST.values(), ids=LOST.keys())
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "in ProtocolError"])
def test_a_lost_connection_is_told_in_the_clients_terms(
    raised: BaseException, told: str, wrapped: bool
) -> None:
    broken = _lost_connection(ProtocolError(str(raised), raised) if wrapped else raised)
    assert (broken.detail, broken.body) == (told, f"502 Bad Gateway: {told}\n".encode())
    assert str(raised) in broken.cause
