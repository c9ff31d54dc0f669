"""exchange.request_head's target: byte for byte from gunicorn's RAW_URI, in origin form, and
refused (400) when it holds what no request target may, whatever the gunicorn let through
(gunicorn 23 passes a NUL on)."""

from __future__ import annotations

import pytest

from wsgi_proxy.core.errors import BadRequest
from wsgi_proxy.request.exchange import request_head

# RAW_URI -> the target the origin gets
KEPT = {
    "/p%2Fq/a%20b?x=1&y=%zz": "/p%2Fq/a%20b?x=1&y=%zz",
    "/semi;param=1/caf%C3%A9": "/semi;param=1/caf%C3%A9",
    "http://other.example/x?q=1": "/x?q=1",
    "/\\evil.example/x": "/\\evil.example/x",
}

REFUSED = ["/a\x00b", "/a\tb", "/a b", "/a\rb", "/a\nb", "/a\x7fb", "/a?q=\x01"]


@pytest.mark.parametrize(("raw", "target"), KEPT.items())
def test_the_target_is_kept_byte_for_byte(raw: str, target: str) -> None:
    assert request_head({"REQUEST_METHOD": "GET", "RAW_URI": raw}).target == target


@pytest.mark.parametrize("raw", REFUSED, ids=repr)
def test_a_control_character_or_space_in_the_target_is_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        request_head({"REQUEST_METHOD": "GET", "RAW_URI": raw})
