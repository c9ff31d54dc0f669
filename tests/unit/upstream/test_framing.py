"""The origin's response framing (RFC 9112 section 6.3): ambiguous framing is refused."""

from __future__ import annotations

import pytest

from wsgi_proxy.core.errors import OriginBroken
from wsgi_proxy.upstream.origin_client import checked_framing

FRAMING_CASES: list[tuple[tuple[tuple[str, str], ...], object]] = [
    ((("Content-Length", "5"),), (("Content-Length", "5"),)),
    ((("Transfer-Encoding", "chunked"),), (("Transfer-Encoding", "chunked"),)),
    ((("Content-Length", "5"), ("Content-Length", "5")), (("Content-Length", "5"),)),
    ((("X", "1"), ("Content-Length", "5, 5")), (("X", "1"), ("Content-Length", "5"))),
    ((("Content-Length", "5"), ("Content-Length", "6")), None),
    ((("Content-Length", "abc"),), None),
    ((("Content-Length", "-1"),), None),
    ((("Transfer-Encoding", "chunked"), ("Content-Length", "3")), None),
    ((("Transfer-Encoding", "gzip"),), None),
    ((), ()),
]


@pytest.mark.parametrize(("fields", "expected"), FRAMING_CASES)
def test_checked_framing(fields: tuple[tuple[str, str], ...], expected: object) -> None:
    if expected is None:
        with pytest.raises(OriginBroken):
            checked_framing(fields)
    else:
        assert checked_framing(fields) == expected
