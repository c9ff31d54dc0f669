"""The origin client's edge (origin_client._converted): what urllib3 and the socket raise
becomes the errors tree, the same whether raised bare (the seam's path below urlopen) or
wrapped by urlopen in ProtocolError("Connection aborted.", error); only a lost connection
stays ProtocolError, which the client retries."""

from __future__ import annotations

import http.client

import pytest
from urllib3.exceptions import ProtocolError

from wsgi_proxy.core.errors import BadRequest, OriginBroken
from wsgi_proxy.upstream.origin_client import _converted

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
