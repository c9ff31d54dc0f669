"""The admin interface's pure parts: which endpoint a path and method reach, who may use it,
and how an error is written. Served through real gunicorn in integration/test_operations.py."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

import pytest
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)

from wsgi_proxy.flow.admin import error_response, is_allowed, route

# (path after the prefix, method) -> the endpoint, or the error: its status and ``Allow``
ROUTES: list[tuple[str, str, str | tuple[int, str | None]]] = [
    ("/health", "GET", "health"),
    ("/health", "POST", "health"),  # open endpoints take every method
    ("/health", "PURGE", "health"),
    ("/health", "HEAD", "health"),
    ("/ready", "GET", "ready"),
    ("/ready", "DELETE", "ready"),
    ("/metrics", "GET", "metrics"),
    ("/metrics", "HEAD", "metrics"),  # HEAD wherever GET
    ("/purge", "POST", "purge"),
    ("/purge", "PURGE", "purge"),
    ("/cluster", "GET", "cluster"),
    ("/cluster", "HEAD", "cluster"),
    ("/tags", "GET", "tags"),
    ("/", "GET", "status_page"),
    ("/", "HEAD", "status_page"),
    ("/status.json", "GET", "status_json"),
    ("/status.json", "HEAD", "status_json"),
    # A method the endpoint does not take.
    ("/metrics", "POST", (405, "GET, HEAD")),
    ("/metrics", "PURGE", (405, "GET, HEAD")),
    ("/purge", "GET", (405, "POST, PURGE")),
    ("/purge", "HEAD", (405, "POST, PURGE")),
    ("/purge", "DELETE", (405, "POST, PURGE")),
    ("/cluster", "POST", (405, "GET, HEAD")),
    ("/tags", "PURGE", (405, "GET, HEAD")),
    ("/metrics", "get", (405, "GET, HEAD")),  # methods are case-sensitive (RFC 9110 9.1)
    ("/purge", "post", (405, "POST, PURGE")),
    ("/", "POST", (405, "GET, HEAD")),
    ("/status.json", "PURGE", (405, "GET, HEAD")),
    # Paths that are no endpoint's: exact, no slash merged, added or taken off.
    ("", "GET", (404, None)),
    ("//", "GET", (404, None)),
    ("/status.json/", "GET", (404, None)),
    ("/status", "GET", (404, None)),
    ("/nope", "GET", (404, None)),
    ("/nope", "POST", (404, None)),
    ("/health/", "GET", (404, None)),
    ("/metrics/", "GET", (404, None)),
    ("/purge/", "POST", (404, None)),
    ("//metrics", "GET", (404, None)),
    ("/metrics//", "GET", (404, None)),
    ("metrics", "GET", (404, None)),  # {prefix}metrics
    ("purge", "POST", (404, None)),
    ("/Metrics", "GET", (404, None)),
    ("/metrics/x", "GET", (404, None)),
    ("/x/../metrics", "GET", (404, None)),
]


@pytest.mark.parametrize(("action", "method", "expected"), ROUTES)
def test_route(action: str, method: str, expected: str | tuple[int, str | None]) -> None:
    try:
        endpoint: str | tuple[int, str | None] = route(action, method)
    except HTTPException as exc:
        endpoint = (exc.code or 0, dict(exc.get_headers()).get("Allow"))
    assert endpoint == expected


Networks = tuple[IPv4Network | IPv6Network, ...]
LOOPBACK: Networks = (ip_network("127.0.0.1/32"), ip_network("::1/128"))
BEARER = "Bearer s3cret"

# (token, allowed networks, Authorization, hops: the peer, then X-Forwarded-For) -> allowed
ACCESS: list[tuple[str, Networks, str, list[str], bool]] = [
    ("", (), "", ["127.0.0.1"], False),  # closed by default
    ("", (), "", [], False),  # nothing to check is not allowed either
    ("", (), "Bearer ", ["127.0.0.1"], False),  # no token set: an empty one opens nothing
    ("s3cret", (), BEARER, ["203.0.113.9"], True),
    ("s3cret", (), "Bearer s3cre", ["127.0.0.1"], False),
    ("s3cret", (), "bearer s3cret", ["127.0.0.1"], False),
    ("s3cret", (), "s3cret", ["127.0.0.1"], False),
    ("s3cret", LOOPBACK, BEARER, ["203.0.113.9", "198.51.100.1"], True),  # the token alone
    ("", LOOPBACK, "", ["127.0.0.1"], True),
    ("", LOOPBACK, "", ["::1"], True),
    ("", LOOPBACK, "", ["127.0.0.2"], False),
    ("", LOOPBACK, "", ["127.0.0.1", "127.0.0.1"], True),
    # Through a local nginx: the peer is allowed, the client it names is not.
    ("", LOOPBACK, "", ["127.0.0.1", "203.0.113.9"], False),
    ("", LOOPBACK, "", ["127.0.0.1", "127.0.0.1", "203.0.113.9"], False),
    ("", LOOPBACK, "", ["127.0.0.1", "not-an-address"], False),
    ("", LOOPBACK, "", ["", "127.0.0.1"], False),  # no peer address
    ("s3cret", LOOPBACK, "Bearer wrong", ["127.0.0.1"], True),  # a wrong token: the address
    ("", (ip_network("10.0.0.0/8"),), "", ["10.1.2.3", "10.200.0.1"], True),
]


@pytest.mark.parametrize(("token", "allowed", "authorization", "hops", "expected"), ACCESS)
def test_access(
    token: str, allowed: Networks, authorization: str, hops: list[str], expected: bool
) -> None:
    assert is_allowed(token, allowed, authorization, hops) is expected


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (NotFound("admin interface: no such endpoint"), "404 Not Found",
         b"404 Not Found: admin interface: no such endpoint\n"),
        (Forbidden("no"), "403 Forbidden", b"403 Forbidden: no\n"),
        (BadRequest("tags needs tag="), "400 Bad Request", b"400 Bad Request: tags needs tag=\n"),
        (ServiceUnavailable("not ready: full"), "503 Service Unavailable",
         b"503 Service Unavailable: not ready: full\n"),
        (MethodNotAllowed(["GET", "HEAD"], "admin interface: /metrics takes GET, HEAD"),
         "405 Method Not Allowed",
         b"405 Method Not Allowed: admin interface: /metrics takes GET, HEAD\n"),
    ],
)  # fmt: skip
def test_an_error_is_short_plain_text(exc: HTTPException, status: str, body: bytes) -> None:
    response = error_response(exc)
    assert response.status == status
    assert response.get_data() == body
    allow = [("Allow", "GET, HEAD")] if exc.code == 405 else []
    assert sorted(response.headers.items()) == [
        *allow,
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
